//! `registry init --dir DIR --genesis FILE` and `registry serve --dir DIR --listen ADDR`.

use clap::{Parser, Subcommand};
use crypto::ed25519::Ed25519KeyPair;
use registry::{
    Registry,
    genesis::Genesis,
    server::{self, ServerState},
    store::RocksStore,
};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser, Debug)]
#[command(
    name = "registry",
    about = "The registry server and its set-up",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a registry in DIR from a genesis file, with a fresh registry key.
    Init {
        /// The registry directory (created; must not hold a registry yet).
        #[arg(long)]
        dir: PathBuf,
        /// The genesis file (JSON: neurons, versions, nodes, subnets).
        #[arg(long)]
        genesis: PathBuf,
    },
    /// Serve the registry in DIR over HTTP.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Init { dir, genesis } => init(dir, genesis),
        Command::Serve { dir, listen } => serve(dir, listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init(dir: PathBuf, genesis_path: PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(&genesis_path)
        .map_err(|e| format!("{}: {e}", genesis_path.display()))?;
    let genesis =
        Genesis::from_json(&text).map_err(|e| format!("{}: {e}", genesis_path.display()))?;
    if server::store_path(&dir).exists() || server::key_path(&dir).exists() {
        return Err(format!("{} already holds a registry", dir.display()));
    }
    // Check the genesis in memory first: a bad genesis leaves nothing on disk.
    let mut dry = Registry::open(registry::store::MemoryStore::new()).map_err(|e| e.to_string())?;
    let voting_period_ns = genesis.voting_period_seconds.saturating_mul(1_000_000_000);
    dry.init(&genesis.mutations(), voting_period_ns)
        .map_err(|e| format!("invalid genesis: {e}"))?;

    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = Ed25519KeyPair::generate(&mut rand::rng());
    let store = RocksStore::open(&server::store_path(&dir)).map_err(|e| e.to_string())?;
    let mut reg = Registry::open(store).map_err(|e| e.to_string())?;
    let version = reg
        .init(&genesis.mutations(), voting_period_ns)
        .map_err(|e| e.to_string())?;
    key.write_to_file(&server::key_path(&dir))
        .map_err(|e| e.to_string())?;
    let pk_path = server::public_key_path(&dir);
    std::fs::write(&pk_path, format!("{}\n", key.public_key()))
        .map_err(|e| format!("{}: {e}", pk_path.display()))?;
    println!(
        "registry initialized in {} at version {version}; root public key {} (in {})",
        dir.display(),
        key.public_key(),
        pk_path.display()
    );
    Ok(())
}

fn serve(dir: PathBuf, listen: String) -> Result<(), String> {
    let state = ServerState::open(&dir).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        // The first line on stdout is the address, for scripts that asked for port 0.
        println!("listening on http://{addr}");
        tracing::info!(%addr, dir = %dir.display(), "registry serving");
        server::serve(listener, state)
            .await
            .map_err(|e| e.to_string())
    })
}
