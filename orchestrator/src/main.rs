//! `orchestrator --node-dir DIR`: the only process an operator starts on a node.

use clap::{CommandFactory, FromArgMatches, Parser};
use orchestrator::{config::NodeConfig, node::Orchestrator};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "orchestrator",
    about = "Runs the right replica version for this node, and upgrades it.",
    long_about = "Replicates the registry into the node directory, collects CUPs, decides \
                  which version to run from which CUP, downloads and verifies release \
                  packages, and re-executes itself into a new version's orchestrator.",
    after_help = "--version prints this program's version and, when it runs from an \
                  unpacked release image, the replica version of that image.\n\
                  Exit codes: 0 stopped on SIGTERM or Ctrl-C, 1 could not start (a bad \
                  node directory or node.toml, a port in use), 2 a bad argument."
)]
struct Args {
    /// The node directory: keys, node.toml, the registry copy, images, state.
    #[arg(long)]
    node_dir: PathBuf,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// `orchestrator --version`: the crate version and, when this binary runs from an
/// unpacked release image (`images/<sha256>/bin/orchestrator`), the replica version and
/// build its manifest names.
fn program_version() -> String {
    let mut out = env!("CARGO_PKG_VERSION").to_string();
    let image = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.parent()?;
        let sha = dir.file_name()?.to_str()?;
        release::inspect_image(dir.parent()?, sha).ok()
    });
    if let Some(i) = image {
        out.push_str(&format!(
            " (image of replica version {}, build {:?})",
            i.version, i.build
        ));
    }
    out
}

fn main() {
    let version: &'static str = Box::leak(program_version().into_boxed_str());
    let args = Args::command()
        .version(version)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
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
