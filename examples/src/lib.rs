//! Helpers shared by weft's examples. The examples themselves are in this
//! folder (`cargo run --example NAME` from the workspace root).
#![forbid(unsafe_code)]

/// Installs a `tracing` subscriber that prints to stderr, filtered by
/// `RUST_LOG` (default `info`). Examples call it first.
pub fn init_tracing() {
    init_tracing_with("info");
}

/// Like [`init_tracing`], with another default filter.
pub fn init_tracing_with(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub mod showcase;
