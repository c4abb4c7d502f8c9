#![allow(dead_code)]

/// Installs a test tracing subscriber once (RUST_LOG to see events).
pub(crate) fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
