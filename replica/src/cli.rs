//! The `replica` command: `replica --node-dir DIR --version V --cup FILE` runs one node of
//! one subnet at one version; `--check` rehearses that start without writing anything;
//! `--describe` prints what this release is; `--write-fixtures DIR` (not in `--help`)
//! writes its golden fixtures ([`crate::compat`]).

use crate::{
    ReplicaError,
    driver::{Driver, MAX_PENDING_REQUESTS, Parts},
    node_dir::{NodeDir, read_cup},
    pool_store::PoolStore,
    start,
};
use clap::{CommandFactory, FromArgMatches, Parser};
use std::{net::SocketAddr, path::PathBuf};
use tokio::sync::{mpsc, oneshot};
use types::ReplicaVersion;

#[derive(Parser, Debug)]
#[command(
    name = "replica",
    about = "Runs one node of a subnet at one version, from a CUP.",
    long_about = "Reads the node's keys and the node-local registry copy from the node \
                  directory, starts from the given CUP (or a higher one this node made), \
                  and serves the HTTP API on the node's registered address.",
    // `--version V` selects the replica version to run; the program's own version is
    // `--program-version`.
    disable_version_flag = true,
    after_help = "--version V is the replica version to run (a registry version id, as \
                  the orchestrator passes it), not a request to print this program's \
                  version: that is --program-version (or -V).\n\
                  Other entry points: --describe prints this release as JSON.\n\
                  Exit codes: 0 ran and stopped cleanly (or --check passed), 1 an error, \
                  2 a start refused by --check or a bad argument."
)]
struct Args {
    /// Print this program's version (crate version, release build, state schema, wire
    /// protocol, and the replica version of the release image it runs from, if any).
    #[arg(short = 'V', long = "program-version", action = clap::ArgAction::Version)]
    program_version: Option<bool>,
    /// The node directory (keys, registry copy, state).
    #[arg(long)]
    node_dir: PathBuf,
    /// The replica version this binary runs as; the registry must assign it to the subnet.
    #[arg(long)]
    version: String,
    /// The CUP to start from.
    #[arg(long)]
    cup: PathBuf,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Rehearse the start: run every check, find the state this release would start from
    /// and whether it can read it, migrate a hard-link copy of this node's checkpoint to
    /// this release's schema (timed, checked, then thrown away), print the plan as JSON,
    /// and write nothing else. Also before the halt, when the registry deploys this
    /// version and the CUP still runs the old one (a preflight). Exits 2 when a start
    /// would be refused.
    #[arg(long)]
    check: bool,
}

/// `replica --describe`: what this release is, as JSON.
#[derive(Debug, serde::Serialize)]
pub struct Description {
    pub release: &'static str,
    /// The state schema it writes; it reads this one and every older one.
    pub state_schema: u32,
    pub wire_protocol: &'static str,
    pub methods: Vec<&'static str>,
}

pub fn describe() -> Description {
    use crate::ingress::Operation;
    let all = [
        Operation::Put {
            key: String::new(),
            value: Vec::new(),
        },
        Operation::Delete { key: String::new() },
        Operation::Append {
            key: String::new(),
            value: Vec::new(),
        },
    ];
    Description {
        release: crate::RELEASE,
        state_schema: crate::state::SCHEMA_VERSION,
        wire_protocol: crate::WIRE_PROTOCOL,
        methods: all
            .iter()
            .filter(|o| crate::ingress::supported(o))
            .map(|o| o.method())
            .collect(),
    }
}

/// The exit code of a refused `--check`.
pub const EXIT_REFUSED: i32 = 2;

/// A release built broken on purpose, for drills (`testnet package --broken MODE`):
/// its package carries this file, naming the fault, beside `bin/replica`. A release
/// built without `--broken` has none, and the file is part of the package's hash.
pub const DRILL_FILE: &str = "etc/drill";

/// The drill faults a release can be built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Drill {
    /// `replica --check` refuses every start (the rehearsal fails).
    FailsCheck,
    /// `replica --check` passes, the start exits at once, before touching any state.
    CrashAtStart,
}

impl Drill {
    pub fn name(self) -> &'static str {
        match self {
            Self::FailsCheck => "fails-check",
            Self::CrashAtStart => "crash-at-start",
        }
    }
}

/// The drill this binary's image was built with, if any (`../etc/drill` from the
/// executable; at most a few bytes are read).
fn drill() -> Option<Drill> {
    use std::io::Read;
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(DRILL_FILE);
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    [Drill::FailsCheck, Drill::CrashAtStart]
        .into_iter()
        .find(|d| d.name() == text.trim())
}

/// `replica --program-version`: this program's crate and version, what release it was
/// built as (its state schema and wire protocol), and, when it runs from an unpacked
/// release image, the replica version that image's manifest names.
pub fn program_version() -> String {
    let mut out = format!(
        "{} (release {}, state schema {}, {})",
        env!("CARGO_PKG_VERSION"),
        crate::RELEASE,
        crate::state::SCHEMA_VERSION,
        crate::WIRE_PROTOCOL
    );
    if let Some(v) = image_version() {
        out.push_str(&format!(", image of replica version {v}"));
    }
    out
}

/// The largest image manifest read (it lists every file's hash: a few KiB).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The `version` of `../manifest.json` from the executable's directory: the replica
/// version of the release image this binary was unpacked into (`images/<sha>/bin/`).
fn image_version() -> Option<String> {
    use std::io::Read;
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("manifest.json");
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(manifest.get("version")?.as_str()?.to_string())
}

pub fn main() {
    // `--describe` needs nothing else.
    if std::env::args().nth(1).as_deref() == Some("--describe") {
        match serde_json::to_string(&describe()) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("replica: error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    // `--write-fixtures DIR` (hidden, for `scripts/write-fixtures.sh`): this release's
    // golden fixtures (`crate::compat`).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--write-fixtures") {
        let Some(dir) = argv.get(2).filter(|_| argv.len() == 3) else {
            eprintln!("replica: usage: replica --write-fixtures DIR");
            std::process::exit(1);
        };
        match crate::compat::write_fixtures(std::path::Path::new(dir)) {
            Ok(files) => println!(
                "release {}: {} fixtures in {dir}",
                crate::compat::RELEASE_NUMBER,
                files.len()
            ),
            Err(e) => {
                eprintln!("replica: error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let version: &'static str = Box::leak(program_version().into_boxed_str());
    let args = Args::command()
        .version(version)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    registry::logging::init(args.log_json);
    match (drill(), args.check) {
        (Some(Drill::FailsCheck), true) => {
            eprintln!("replica: refused: drill: this release was built to fail its rehearsal");
            std::process::exit(EXIT_REFUSED);
        }
        (Some(Drill::CrashAtStart), false) => {
            eprintln!("replica: error: drill: this release was built to crash at start");
            std::process::exit(1);
        }
        _ => {}
    }
    if args.check {
        match check(&args) {
            Ok(plan) => println!("{plan}"),
            Err(e) => {
                eprintln!("replica: refused: {e}");
                std::process::exit(EXIT_REFUSED);
            }
        }
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replica: error: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("replica: error: {e}");
        std::process::exit(1);
    }
}

fn addr(s: &str, what: &str) -> Result<SocketAddr, ReplicaError> {
    s.parse()
        .map_err(|e| ReplicaError::Registry(format!("this node's {what} {s:?}: {e}")))
}

async fn run(args: Args) -> Result<(), ReplicaError> {
    let version = ReplicaVersion::new(&args.version)
        .map_err(|e| ReplicaError::Refused(format!("--version: {e}")))?;
    let dir = NodeDir::new(&args.node_dir);
    let keys = dir.keys()?;
    let node_id = keys.ed25519.node_id();
    let network = dir.network_id()?;
    let registry = start::open_registry(&dir)?;
    let given = read_cup(&args.cup)?;
    let cup = start::choose_cup(&dir, given, &registry)?;
    let (subnet, me) = start::check(&cup, &version, &node_id, &registry)?;
    let c = cup.content().clone();
    tracing::info!(node = %node_id, subnet = %c.subnet_id, cup_height = %c.height, %version, "starting");
    let (state, _) = start::state_at(&dir, &subnet, &node_id, c.height, c.state_hash).await?;
    let pool = PoolStore::open(&dir.pool())?;
    let core = start::build_core(
        &cup,
        &version,
        &subnet,
        me,
        keys,
        &registry,
        &pool,
        crate::clocks(),
    )?;
    if c.committee.is_some() {
        dir.retire_genesis_shares()?;
    }

    let mine = &subnet.members[me as usize];
    let members: Vec<transport::Member> = subnet
        .members
        .iter()
        .map(|m| {
            Ok(transport::Member {
                node_id: m.node_id,
                public_key: m.ed25519_public_key,
                address: addr(&m.consensus_address, "consensus address")?,
            })
        })
        .collect::<Result<_, ReplicaError>>()?;
    let tcfg = transport::TransportConfig::new(
        addr(&mine.consensus_address, "consensus address")?,
        crate::WIRE_PROTOCOL,
    );
    let (transport, inbox) = transport::Transport::start(tcfg, dir.keys()?.ed25519, members)
        .await
        .map_err(|e| ReplicaError::Transport(e.to_string()))?;

    let http_addr = addr(&mine.http_address, "HTTP address")?;
    let (mut driver, shared) = Driver::new(Parts {
        dir,
        version,
        node_id,
        network,
        registry,
        subnet,
        cup,
        core,
        state,
        pool,
        transport: transport.clone(),
        metrics: crate::metrics::Metrics::new()
            .map_err(|e| ReplicaError::Io(format!("metrics: {e}")))?,
    });
    driver.take_carryover();
    let (req_tx, req_rx) = mpsc::channel(MAX_PENDING_REQUESTS);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| ReplicaError::Io(format!("HTTP {http_addr}: {e}")))?;
    println!("listening on http://{http_addr}");
    let app = crate::http::router(shared, req_tx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = registry::shutdown::requested() => {}
            _ = registry::shutdown::parent_exited() => {
                tracing::warn!("the process that started this replica exited: stopping");
            }
        }
        let _ = stop_tx.send(());
    });
    let r = driver.run(inbox, req_rx, stop_rx).await;
    transport.shutdown().await;
    r
}

/// The rehearsal: every check a start makes, and the state plan, with nothing written
/// (the registry copy is read through a follower directory of its own, removed after).
fn check(args: &Args) -> Result<String, ReplicaError> {
    let version = ReplicaVersion::new(&args.version)
        .map_err(|e| ReplicaError::Refused(format!("--version: {e}")))?;
    let dir = NodeDir::new(&args.node_dir);
    let node_id = dir.keys()?.ed25519.node_id();
    // The start needs it: a node directory without it is refused here too.
    dir.network_id()?;
    let follower = std::env::temp_dir().join(format!("replica-check-{}", std::process::id()));
    let result = start::open_registry_following(&dir, &follower).and_then(|registry| {
        let given = read_cup(&args.cup)?;
        let cup = start::choose_cup(&dir, given, &registry)?;
        let c = cup.content();
        // Before the halt (a preflight) the CUP still runs the old release, and the
        // registry's latest version deploys this one; at the switch the CUP runs it.
        let at_cup = registry::local::subnet_at(&registry, &c.subnet_id, c.registry_version)
            .map_err(|e| ReplicaError::Registry(e.to_string()))?;
        let runs = c.version_to_run(&at_cup.record.replica_version).clone();
        let stage = if runs == version {
            "switch"
        } else {
            let latest = registry::local::subnet_at(&registry, &c.subnet_id, registry::store::RegistryStore::latest_version(&registry))
                .map_err(|e| ReplicaError::Registry(e.to_string()))?;
            if latest.record.replica_version != version {
                return Err(ReplicaError::Refused(format!(
                    "this is replica version {version}: subnet {} runs {runs} from its CUP and the registry deploys {}",
                    c.subnet_id, latest.record.replica_version
                )));
            }
            "preflight"
        };
        start::check(&cup, &runs, &node_id, &registry)?;
        let plan = start::plan_state_at(&dir, c.height, c.state_hash)?;
        let migration = crate::preflight::rehearse(&dir, c.height)?;
        Ok(serde_json::json!({
            "release": crate::RELEASE,
            "replica_version": version.as_str(),
            "stage": stage,
            "cup_height": c.height.get(),
            "state": plan,
            "migration": migration,
        })
        .to_string())
    });
    let _ = std::fs::remove_dir_all(&follower);
    result
}
