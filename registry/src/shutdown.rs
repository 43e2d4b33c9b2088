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

/// Resolves once the process that started this one has exited (the kernel re-parents
/// an orphan to init or a subreaper, so the parent pid changes), checked once a second.
/// A replica watches its orchestrator this way: nothing outlives its owner, even after
/// a `kill -9` that gave the orchestrator no chance to stop it. Never resolves for a
/// process started by init itself (a service manager's direct child has nothing to
/// outlive).
pub async fn parent_exited() {
    let parent = std::os::unix::process::parent_id();
    if parent == 1 {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
