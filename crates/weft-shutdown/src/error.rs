use std::time::Duration;

/// The coordinator could not be built as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two phases have the same name.
    #[error("phase `{0}` is declared twice: give every phase a distinct name")]
    DuplicatePhase(String),
    /// A phase has a zero timeout.
    #[error("phase `{0}` has a zero timeout: give it the time its components need to drain")]
    ZeroTimeout(String),
    /// Signal handling was asked for outside a tokio runtime.
    #[error(
        "signal handling needs a tokio runtime with the IO driver: call build() inside the \
         runtime (e.g. in #[tokio::main]), or turn signals off with .signals(false)"
    )]
    NoRuntime,
    /// Installing a signal handler failed.
    #[error("could not install the {signal} handler: {reason}")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// What the OS said.
        reason: String,
    },
}

/// A component or task could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// No phase has this name.
    #[error("no phase named `{phase}`: register into one of {known:?}")]
    UnknownPhase {
        /// The name asked for.
        phase: String,
        /// The coordinator's phases, in order.
        known: Vec<String>,
    },
    /// The phase has already run (or is running); registering now would
    /// never be drained.
    #[error("phase `{0}` has already started: register components before shutdown begins")]
    PhaseStarted(String),
}

/// A tracked task could not be spawned through
/// [`Coordinator::spawn`](crate::Coordinator::spawn). Nothing was started,
/// and the report does not count it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The shutdown has already cancelled and aborted the tracked tasks.
    #[error("shutdown has finished its tracked tasks; nothing more can be spawned through it")]
    Finished,
    /// `spawn` was called outside a tokio runtime (the closure was not
    /// called).
    #[error(
        "no tokio runtime to spawn the task on: call spawn inside a tokio runtime \
         (e.g. in #[tokio::main], a task, or Runtime::enter)"
    )]
    NoRuntime,
}

/// The default timeout of each default phase, used in docs.
pub(crate) const DEFAULT_PHASE_TIMEOUT: Duration = Duration::from_secs(10);
