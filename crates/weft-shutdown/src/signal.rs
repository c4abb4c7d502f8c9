//! Signal listening: the first signal requests the shutdown, a second forces it.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::coordinator::TriggerState;
use crate::error::BuildError;
use crate::report::Trigger;

#[cfg(unix)]
pub(crate) fn listen(
    handle: &Handle,
    trigger: Arc<TriggerState>,
) -> Result<AbortHandle, BuildError> {
    use tokio::signal::unix::{SignalKind, signal};
    let _guard = handle.enter();
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|e| BuildError::Signal {
            signal: name,
            reason: e.to_string(),
        })
    };
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(handle
        .spawn(async move {
            loop {
                let which = tokio::select! {
                    Some(()) = int.recv() => "SIGINT",
                    Some(()) = term.recv() => "SIGTERM",
                    else => return,
                };
                trigger.fire(Trigger::Signal(which));
            }
        })
        .abort_handle())
}

#[cfg(not(unix))]
pub(crate) fn listen(
    handle: &Handle,
    trigger: Arc<TriggerState>,
) -> Result<AbortHandle, BuildError> {
    Ok(handle
        .spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                trigger.fire(Trigger::Signal("Ctrl-C"));
            }
        })
        .abort_handle())
}
