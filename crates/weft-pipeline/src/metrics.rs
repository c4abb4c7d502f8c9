//! Emission to the `metrics` facade (the `metrics` feature).

use std::collections::HashMap;
use std::sync::Arc;

use crate::report::{StageReport, StageStats};

/// What was already emitted, so each tick adds only the difference.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    last: HashMap<usize, StageReport>,
}

impl Emitted {
    pub(crate) fn emit(&mut self, pipeline: &str, stages: &[Arc<StageStats>]) {
        for (i, s) in stages.iter().enumerate() {
            let now = s.snapshot();
            let before = self.last.get(&i);
            let delta = |f: fn(&StageReport) -> u64| f(&now) - before.map(f).unwrap_or(0);
            let labels = |outcome: &'static str| {
                [
                    ("name", pipeline.to_owned()),
                    ("stage", now.name.clone()),
                    ("outcome", outcome.to_owned()),
                ]
            };
            for (outcome, f) in [
                (
                    "completed",
                    (|r: &StageReport| r.completed) as fn(&StageReport) -> u64,
                ),
                ("failed", |r| r.failed),
                ("dead_lettered", |r| r.dead_lettered),
                ("dropped", |r| r.dropped),
                ("cancelled", |r| r.cancelled),
            ] {
                metrics::counter!("weft_pipeline_items_total", &labels(outcome))
                    .increment(delta(f));
            }
            let stage_labels = [("name", pipeline.to_owned()), ("stage", now.name.clone())];
            metrics::counter!("weft_pipeline_retries_total", &stage_labels)
                .increment(delta(|r| r.retried));
            metrics::counter!("weft_pipeline_emitted_total", &stage_labels)
                .increment(delta(|r| r.emitted));
            for (state, d) in [
                ("busy", now.busy),
                ("idle", now.idle),
                ("blocked", now.blocked),
            ] {
                let prev = before
                    .map(|b| match state {
                        "busy" => b.busy,
                        "idle" => b.idle,
                        _ => b.blocked,
                    })
                    .unwrap_or_default();
                metrics::histogram!(
                    "weft_pipeline_stage_seconds",
                    "name" => pipeline.to_owned(),
                    "stage" => now.name.clone(),
                    "state" => state
                )
                .record(d.saturating_sub(prev).as_secs_f64());
            }
            self.last.insert(i, now);
        }
    }
}
