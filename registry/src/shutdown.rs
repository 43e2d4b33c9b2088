//! How the long-running binaries (`replica`, `orchestrator`, `testnet load`) learn to stop:
//! SIGTERM is how a supervisor asks, Ctrl-C how a person does.

/// Resolves at the first SIGTERM or Ctrl-C (if SIGTERM cannot be watched, Ctrl-C only).
pub async fn requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}
