//! `dashboard --registry URL --listen ADDR [--registry-key HEX]`: serves a live page of
//! the network the registry describes (see the library's docs).

use clap::Parser;
use crypto::ed25519::Ed25519PublicKey;
use dashboard::{
    MIN_INTERVAL, overview::Watcher, run, server::Published, server::router, sources::HttpSources,
};
use registry::client::RegistryClient;
use std::{process::ExitCode, sync::Arc, time::Duration};

#[derive(Parser, Debug)]
#[command(
    name = "dashboard",
    version,
    about = "A live web page of a network: subnets, versions, proposals, every node's state and the rollout of a release.",
    long_about = "A live web page of a network: subnets with their members and releases; elected, \
deployed and recalled versions; open and recent proposals with their votes; each node's running \
version, upgrade state, heights, readiness and health; and a timeline of the current rollout. \
It finds the nodes through the registry's node records, as any outside observer would, and polls \
each replica's /api/v1/status and each orchestrator's /status once a second.\n\n\
Exit codes: 0 after SIGTERM or Ctrl-C, 1 when it cannot listen, 2 for a bad argument."
)]
struct Cli {
    /// The registry server, e.g. http://127.0.0.1:31000
    #[arg(long, env = "DASHBOARD_REGISTRY")]
    registry: String,
    /// Where to serve the page, e.g. 127.0.0.1:31002
    #[arg(long, env = "DASHBOARD_LISTEN")]
    listen: String,
    /// The registry's root public key (hex, the content of `registry_public_key.hex`).
    /// When given, every registry answer must carry a valid signature by it, and an
    /// answer that does not is shown as the registry's error; without it the answers are
    /// believed as they come.
    #[arg(long, env = "DASHBOARD_REGISTRY_KEY")]
    registry_key: Option<Ed25519PublicKey>,
    /// How often to read the registry and poll the nodes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

fn main() -> ExitCode {
    let Cli {
        registry: registry_url,
        listen,
        registry_key,
        interval_ms,
    } = Cli::parse();
    registry::logging::init(false);
    let interval = Duration::from_millis(interval_ms);
    if interval < MIN_INTERVAL {
        eprintln!(
            "dashboard: error: --interval-ms must be at least {}",
            MIN_INTERVAL.as_millis()
        );
        return ExitCode::from(2);
    }
    let verified = registry_key.is_some();
    let sources = match RegistryClient::new(&registry_url, registry_key)
        .map_err(|e| e.to_string())
        .and_then(HttpSources::new)
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("dashboard: error: --registry: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dashboard: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("listening on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let published = Arc::new(Published::new().map_err(|e| e.to_string())?);
        let watcher = Watcher::new(&registry_url, verified);
        tokio::spawn(run(sources, watcher, interval, published.clone()));
        println!("listening on http://{addr}");
        tracing::info!(%addr, registry = %registry_url, verified, "dashboard serving");
        axum::serve(listener, router(published))
            .with_graceful_shutdown(registry::shutdown::requested())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dashboard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
