//! Runs the showcase on a small count and checks the accounting and the files.

use std::path::PathBuf;
use std::time::Duration;

use weft_examples::showcase::{Config, Summary, run};

fn out_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("weft-showcase-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lines(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path).unwrap().lines().count() as u64
}

fn check_files(s: &Summary) {
    assert!(s.is_balanced(), "{s}");
    assert_eq!(
        lines(&s.files.output),
        s.written,
        "one output line per written event"
    );
    assert_eq!(lines(&s.files.dead_letters), s.dead_lettered);
    assert_eq!(lines(&s.files.failed), s.failed);
    assert!(s.shutdown.is_clean(), "{}", s.shutdown);
}

#[tokio::test(start_paused = true)]
async fn a_full_run_accounts_for_every_event_and_the_breaker_recovers() {
    let cfg = Config {
        events: 20_000,
        // Paced, so that paused time advances with the input (1 s of it).
        rate: Some(20_000),
        out_dir: out_dir("full"),
        progress: false,
        signals: false,
        ..Config::default()
    };
    let s = run(cfg).await.unwrap();
    check_files(&s);
    // `progress: false` (`--no-progress`) runs no progress task (and prints
    // no progress lines): the one tracked task is the end-of-input watcher.
    assert_eq!(s.shutdown.tasks.spawned, 1, "{}", s.shutdown);
    assert_eq!(s.accepted, 20_000, "a run to the end takes every event");
    assert!(
        s.dead_lettered > 100 && s.dead_lettered < 400,
        "about 1% malformed: {}",
        s.dead_lettered
    );
    assert!(s.failed > 0, "the failing phase fails some events");
    assert!(s.written > 10_000);
    assert!(!s.transitions.is_empty());
    assert!(
        s.transitions.first().unwrap().contains("closed -> open"),
        "{:?}",
        s.transitions
    );
    assert!(
        s.transitions.last().unwrap().contains("-> closed"),
        "{:?}",
        s.transitions
    );
    // Every output line is a parsed, enriched event.
    let out = std::fs::read_to_string(&s.files.output).unwrap();
    assert!(out.lines().all(|l| l.split(',').count() == 4));
}

#[tokio::test(start_paused = true)]
async fn stop_after_stops_the_source_and_drains_what_was_accepted() {
    let cfg = Config {
        events: 10_000_000,
        rate: Some(20_000),
        out_dir: out_dir("stop"),
        stop_after: Some(Duration::from_millis(300)),
        inject_failures: false,
        progress: false,
        signals: false,
        ..Config::default()
    };
    let s = run(cfg).await.unwrap();
    check_files(&s);
    // The end-of-input watcher and the `stop_after` timer; no progress task.
    assert_eq!(s.shutdown.tasks.spawned, 2, "{}", s.shutdown);
    assert!(
        s.accepted > 0 && s.accepted < 100_000,
        "stopped early: {}",
        s.accepted
    );
    assert_eq!(s.failed, 0);
    assert!(
        s.transitions.is_empty(),
        "a healthy dependency never trips the breaker"
    );
}
