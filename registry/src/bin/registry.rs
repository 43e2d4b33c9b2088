//! `registry init --dir DIR --genesis FILE` and `registry serve --dir DIR --listen ADDR
//! [--follow-nns URL... --nns-key HEX]`.
//! Exit codes: [`registry::exit`].

use clap::{Parser, Subcommand};
use crypto::{bls::BlsPublicKey, ed25519::Ed25519KeyPair};
use registry::{
    Registry,
    exit::Failure,
    genesis::{Genesis, NetworkParams, generate_network},
    nns_source::NnsSource,
    server::{self, ServerState},
    store::RocksStore,
};
use std::{path::PathBuf, process::ExitCode};
use types::ReplicaVersion;

#[derive(Parser, Debug)]
#[command(
    name = "registry",
    about = "The registry server and its set-up",
    version,
    after_help = "Exit codes: 0 done (serve: stopped on SIGTERM or Ctrl-C); 1 refused or \
                  failed (an invalid genesis, a directory that already holds a registry, \
                  an uninitialized one to serve, an address in use); 2 a bad argument (a \
                  usage error, an unreadable or malformed --genesis file, --nodes or \
                  --neurons out of range)."
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
    /// Write an example network to DIR: genesis.json (one subnet holding every node),
    /// node secrets under nodes/, neuron keys under neurons/.
    GenerateGenesis {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        neurons: usize,
        #[arg(long, default_value_t = 20)]
        dkg_interval: u64,
        /// Node i listens on base-port + 3i (consensus), + 1 (HTTP), + 2 (CUPs).
        #[arg(long, default_value_t = 31000)]
        base_port: u16,
        /// The first replica version, elected and deployed at genesis.
        #[arg(long, default_value = "0.1.0")]
        version: ReplicaVersion,
        /// The SHA-256 of that version's release package.
        #[arg(
            long,
            default_value = "0000000000000000000000000000000000000000000000000000000000000000"
        )]
        package_sha256: String,
        /// Where that package is served (repeat for mirrors).
        #[arg(
            long = "package-url",
            default_value = "http://127.0.0.1:8081/packages/0.1.0.tar.gz"
        )]
        package_urls: Vec<String>,
        /// Seed for every key (default: fresh randomness).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Serve the registry in DIR over HTTP.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: String,
        /// Follow the NNS subnet through this node (repeat for more, asked in turn): a
        /// read-only copy of the registry and governance it certifies, each page checked
        /// with --nns-key; proposals and votes are refused (403). DIR must hold the same
        /// genesis registry (`registry init` with the network's genesis).
        #[arg(long = "follow-nns", value_name = "URL")]
        follow_nns: Vec<String>,
        /// The NNS subnet's public key (hex), required with --follow-nns.
        #[arg(long, value_name = "HEX")]
        nns_key: Option<String>,
    },
}

fn main() -> ExitCode {
    registry::logging::init(false);
    let result = match Cli::parse().command {
        Command::Init { dir, genesis } => init(dir, genesis),
        Command::Serve {
            dir,
            listen,
            follow_nns,
            nns_key,
        } => serve(dir, listen, follow_nns, nns_key),
        Command::GenerateGenesis {
            dir,
            nodes,
            neurons,
            dkg_interval,
            base_port,
            version,
            package_sha256,
            package_urls,
            seed,
        } => {
            let params = NetworkParams {
                nodes,
                neurons,
                dkg_interval_length: dkg_interval,
                unit_delay_ms: 300,
                initial_notary_delay_ms: 100,
                base_port,
                replica_version: version,
                package_sha256,
                package_urls,
                genesis_time_ns: registry::server::now_ns(),
            };
            generate(&dir, &params, seed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// Any other failure of these commands is a refusal (exit 1).
fn refused(e: impl std::fmt::Display) -> Failure {
    Failure::Refused(e.to_string())
}

fn init(dir: PathBuf, genesis_path: PathBuf) -> Result<(), Failure> {
    let genesis = Genesis::read(&genesis_path).map_err(Failure::BadArgument)?;
    if server::store_path(&dir).exists() || server::key_path(&dir).exists() {
        return Err(refused(format!(
            "{} already holds a registry",
            dir.display()
        )));
    }
    // Check the genesis in memory first: a bad genesis leaves nothing on disk.
    let mut dry = Registry::open(registry::store::MemoryStore::new()).map_err(refused)?;
    let voting_period_ns = genesis.voting_period_seconds.saturating_mul(1_000_000_000);
    dry.init(&genesis.mutations(), voting_period_ns)
        .map_err(|e| refused(format!("invalid genesis: {e}")))?;

    std::fs::create_dir_all(&dir).map_err(|e| refused(format!("{}: {e}", dir.display())))?;
    let key = Ed25519KeyPair::generate(&mut rand::rng());
    let store = RocksStore::open(&server::store_path(&dir)).map_err(refused)?;
    let mut reg = Registry::open(store).map_err(refused)?;
    let version = reg
        .init(&genesis.mutations(), voting_period_ns)
        .map_err(refused)?;
    key.write_to_file(&server::key_path(&dir))
        .map_err(refused)?;
    let pk_path = server::public_key_path(&dir);
    std::fs::write(&pk_path, format!("{}\n", key.public_key()))
        .map_err(|e| refused(format!("{}: {e}", pk_path.display())))?;
    println!(
        "registry initialized in {} at version {version}; root public key {} (in {})",
        dir.display(),
        key.public_key(),
        pk_path.display()
    );
    Ok(())
}

fn generate(
    dir: &std::path::Path,
    params: &NetworkParams,
    seed: Option<u64>,
) -> Result<(), Failure> {
    use rand::SeedableRng;
    if params.nodes == 0 || params.nodes > 40 {
        return Err(Failure::BadArgument(format!(
            "--nodes must be between 1 and 40, not {}",
            params.nodes
        )));
    }
    if params.neurons == 0 {
        return Err(Failure::BadArgument("--neurons must be at least 1".into()));
    }
    if dir.join("genesis.json").exists() {
        return Err(refused(format!(
            "{} already holds a genesis.json",
            dir.display()
        )));
    }
    let mut rng = match seed {
        Some(s) => rand_chacha::ChaCha20Rng::seed_from_u64(s),
        None => rand_chacha::ChaCha20Rng::from_rng(&mut rand::rng()),
    };
    let net = generate_network(params, &mut rng).map_err(refused)?;
    // Validate before writing anything.
    let mut dry = Registry::open(registry::store::MemoryStore::new()).map_err(refused)?;
    dry.init(&net.genesis.mutations(), 1)
        .map_err(|e| refused(format!("generated genesis is invalid: {e}")))?;
    net.write(dir).map_err(refused)?;
    println!(
        "wrote {} (subnet {} with {} nodes, {} neurons)",
        dir.join("genesis.json").display(),
        net.genesis.subnets[0].subnet_id,
        params.nodes,
        params.neurons
    );
    Ok(())
}

/// The sources of a copy that follows the NNS subnet (none: the registry decides).
fn nns_sources(urls: &[String], key: Option<&str>) -> Result<Vec<NnsSource>, Failure> {
    if urls.is_empty() {
        return match key {
            None => Ok(Vec::new()),
            Some(_) => Err(Failure::BadArgument(
                "--nns-key goes with --follow-nns".into(),
            )),
        };
    }
    let key = key.ok_or_else(|| {
        Failure::BadArgument("--follow-nns needs --nns-key (the NNS subnet's public key)".into())
    })?;
    let key = hex::decode(key)
        .ok()
        .and_then(|b| BlsPublicKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            Failure::BadArgument("--nns-key is not the hex of a BLS public key".into())
        })?;
    urls.iter()
        .map(|u| NnsSource::new(u, key).map_err(Failure::BadArgument))
        .collect()
}

fn serve(
    dir: PathBuf,
    listen: String,
    follow_nns: Vec<String>,
    nns_key: Option<String>,
) -> Result<(), Failure> {
    let sources = nns_sources(&follow_nns, nns_key.as_deref())?;
    let state = if sources.is_empty() {
        ServerState::open(&dir)
    } else {
        ServerState::open_following(&dir)
    }
    .map_err(refused)?;
    let runtime = tokio::runtime::Runtime::new().map_err(refused)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| refused(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(refused)?;
        // The first line on stdout is the address, for scripts that asked for port 0.
        println!("listening on http://{addr}");
        tracing::info!(%addr, dir = %dir.display(), following = sources.len(), "registry serving");
        if sources.is_empty() {
            server::serve(listener, state).await.map_err(refused)
        } else {
            registry::follow::serve_following(listener, state, sources)
                .await
                .map_err(refused)
        }
    })
}
