//! `orchestrator --node-dir DIR`: the only process an operator starts on a node.

use clap::Parser;
use orchestrator::{config::NodeConfig, node::Orchestrator};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "orchestrator",
    about = "Runs the right replica version for this node, and upgrades it.",
    long_about = "Replicates the registry into the node directory, collects CUPs, decides \
                  which version to run from which CUP, downloads and verifies release \
                  packages, and re-executes itself into a new version's orchestrator."
)]
struct Args {
    /// The node directory: keys, node.toml, the registry copy, images, state.
    #[arg(long)]
    node_dir: PathBuf,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() {
    let args = Args::parse();
    registry::logging::init(args.log_json);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("orchestrator: error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let cfg = NodeConfig::load(&args.node_dir).map_err(|e| e.to_string())?;
    let images = args.node_dir.join(&cfg.images_dir);
    let image = release::current(&images).ok_or_else(|| {
        format!(
            "no release installed: {} does not point at an image (images/<package sha256>)",
            images.join("current").display()
        )
    })?;
    let version = image.version.clone();
    let listen = cfg.listen;
    let (orchestrator, shared) = Orchestrator::new(&args.node_dir, cfg, image)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    tracing::info!(%version, %listen, "orchestrator started");
    let app = orchestrator::server::router(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        registry::shutdown::requested().await;
        let _ = stop_tx.send(());
    });
    orchestrator.run(stop_rx).await;
    Ok(())
}
