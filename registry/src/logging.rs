//! The log setup every node-side binary shares (`registry`, `replica`, `orchestrator`):
//! tracing to stderr, filtered by `RUST_LOG` (default `info`), colors only on a terminal,
//! JSON lines on request.

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
