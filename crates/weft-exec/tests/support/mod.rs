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
