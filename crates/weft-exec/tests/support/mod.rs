#![allow(dead_code)]
//! Shared test helpers.

/// Installs a tracing subscriber once (output captured by the test harness).
pub(crate) fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A multi-thread runtime with two workers (time and I/O enabled), for the
/// tests that need real threads.
pub(crate) fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a multi-thread runtime")
}

/// A current-thread runtime with paused time (for tests that build their
/// own runtime: property tests, scoped subscribers and recorders).
pub(crate) fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("build a paused current-thread runtime")
}
