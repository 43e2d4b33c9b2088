//! The measurements, and the table they make.

use crypto::{bls::BlsSecretKey, ed25519::Ed25519KeyPair, threshold::deal};
use cup::{Cup, CupContent, RandomBeacon, SignedCup};
use rand::SeedableRng;
use registry::store::{MemoryStore, Mutation, RegistryStore, RocksStore};
use replica::{
    ingress::{Ingress, Operation, SignedIngress},
    state::ReplicatedState,
};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};
use transport::{Member, Transport, TransportConfig};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId, domain};

/// How much of each thing a run measures.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub ed25519: usize,
    pub bls: usize,
    pub cup: usize,
    pub rtt: usize,
    pub spawn: usize,
    pub state_values: usize,
    pub state_opens: usize,
    pub memory_registry_versions: u64,
    pub rocks_registry_versions: u64,
    pub registry_gets: usize,
}

impl Sizes {
    pub const FULL: Self = Self {
        ed25519: 5_000,
        bls: 300,
        cup: 100,
        rtt: 500,
        spawn: 50,
        state_values: 100_000,
        state_opens: 20,
        memory_registry_versions: 1_000_000,
        // Every RocksDB registry commit is synced, so a million takes most of an hour.
        rocks_registry_versions: 10_000,
        registry_gets: 20_000,
    };
    pub const TINY: Self = Self {
        ed25519: 50,
        bls: 5,
        cup: 3,
        rtt: 10,
        spawn: 3,
        state_values: 100,
        state_opens: 2,
        memory_registry_versions: 1_000,
        rocks_registry_versions: 100,
        registry_gets: 100,
    };
}

/// One figure, and the limit it stands against (same unit), if any.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub limit: Option<String>,
    pub limit_value: Option<f64>,
    /// `value / limit_value`.
    pub ratio: Option<f64>,
}

impl Row {
    fn limit(figure: String, value: f64, unit: &'static str) -> Self {
        Self {
            figure,
            value,
            unit,
            limit: None,
            limit_value: None,
            ratio: None,
        }
    }

    fn against(mut self, limit: &Row) -> Self {
        self.limit = Some(limit.figure.clone());
        self.limit_value = Some(limit.value);
        self.ratio = Some(self.value / limit.value);
        self
    }
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(f64::NAN)
}

/// Runs every measurement once, in order, on this thread (and a small runtime for QUIC).
pub fn all(s: &Sizes) -> Result<Vec<Row>, String> {
    let ed = Row::limit(
        "ed25519 verifications per second (one core)".into(),
        ed25519_per_s(s.ed25519)?,
        "1/s",
    );
    let bls_rate = bls_per_s(s.bls)?;
    let bls = Row::limit(
        "BLS verifications per second (one core)".into(),
        bls_rate,
        "1/s",
    );
    let one_bls = Row::limit("one BLS verification".into(), 1e3 / bls_rate, "ms");
    let rtt = Row::limit(
        "QUIC round trip on loopback (median)".into(),
        quic_rtt_ms(s.rtt)?,
        "ms",
    );
    let spawn = Row::limit(
        "spawning a process (median)".into(),
        spawn_ms(s.spawn)?,
        "ms",
    );
    let open = Row::limit(
        format!("opening a state of {} values (median)", s.state_values),
        state_open_ms(s.state_values, s.state_opens)?,
        "ms",
    );
    let cup = Row::limit(
        "CUP decode and verification (n = 4, median)".into(),
        cup_verify_ms(s.cup)?,
        "ms",
    )
    .against(&one_bls);
    let mem = Row::limit(
        format!(
            "registry get at {} versions, in memory (median)",
            s.memory_registry_versions
        ),
        registry_get_us(
            &mut MemoryStore::new(),
            s.memory_registry_versions,
            s.registry_gets,
        )?,
        "µs",
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rocks = RocksStore::open(dir.path()).map_err(|e| e.to_string())?;
    let rocks = Row::limit(
        format!(
            "registry get at {} versions, RocksDB (median)",
            s.rocks_registry_versions
        ),
        registry_get_us(&mut rocks, s.rocks_registry_versions, s.registry_gets)?,
        "µs",
    );
    Ok(vec![ed, bls, one_bls, rtt, spawn, open, cup, mem, rocks])
}

fn ed25519_per_s(n: usize) -> Result<f64, String> {
    let key = Ed25519KeyPair::from_seed(&[7; 32]);
    let public = key.public_key();
    let messages: Vec<[u8; 32]> = (0..n as u64)
        .map(|i| {
            let mut m = [0u8; 32];
            m[..8].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let signatures: Vec<_> = messages
        .iter()
        .map(|m| key.sign(domain::INGRESS, m))
        .collect();
    let start = Instant::now();
    for (m, sig) in messages.iter().zip(&signatures) {
        public
            .verify(domain::INGRESS, m, sig)
            .map_err(|e| format!("ed25519: {e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn bls_per_s(n: usize) -> Result<f64, String> {
    let sk = BlsSecretKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(7));
    let pk = sk.public_key();
    let messages: Vec<[u8; 8]> = (0..n as u64).map(|i| i.to_be_bytes()).collect();
    let signatures: Vec<_> = messages
        .iter()
        .map(|m| sk.sign(domain::NOTARIZATION, m))
        .collect();
    let start = Instant::now();
    for (m, sig) in messages.iter().zip(&signatures) {
        pk.verify(domain::NOTARIZATION, m, sig)
            .map_err(|e| format!("BLS: {e}"))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn cup_verify_ms(n: usize) -> Result<f64, String> {
    let d =
        deal(4, 3, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7)).map_err(|e| e.to_string())?;
    let content = CupContent {
        subnet_id: SubnetId::from_threshold_public_key(&d.public.group_key.to_bytes()),
        height: Height::new(100),
        block_hash: CryptoHash::of(domain::BLOCK_HASH, b"bench summary block"),
        block_time_ns: 1_795_000_000_000_000_000,
        registry_version: RegistryVersion::new(7),
        replica_version: ReplicaVersion::new("1.0.0").map_err(|e| e.to_string())?,
        random_beacon: RandomBeacon(vec![0xab; 96]),
        state_hash: CryptoHash::of(domain::STATE_HASH, b"bench state"),
        oldest_registry_version_in_use: RegistryVersion::new(5),
        extensions: BTreeMap::new(),
    };
    let shares: Vec<_> = d.shares[..3]
        .iter()
        .map(|s| SignedCup::sign_share(&content, s))
        .collect();
    let signed = SignedCup::combine(content, &d.public, &shares).map_err(|e| e.to_string())?;
    let bytes = Cup::Signed(signed).encode();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        match Cup::decode(&bytes).map_err(|e| e.to_string())? {
            Cup::Signed(c) => c.verify(&d.public.group_key).map_err(|e| e.to_string())?,
            Cup::Registry(_) => return Err("the CUP decoded as a registry CUP".into()),
        }
        samples.push(start.elapsed());
    }
    Ok(median_ms(samples))
}

fn spawn_ms(n: usize) -> Result<f64, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = std::process::Command::new("true")
            .status()
            .map_err(|e| format!("spawning `true`: {e}"))?;
        if !status.success() {
            return Err(format!("`true` exited with {status}"));
        }
        samples.push(start.elapsed());
    }
    Ok(median_ms(samples))
}

/// Builds a state of `values` values (as blocks of signed puts), then times opening it.
fn state_open_ms(values: usize, opens: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("state");
    build_state(&path, values)?;
    let mut samples = Vec::with_capacity(opens);
    for _ in 0..opens {
        let start = Instant::now();
        let s = ReplicatedState::open(&path).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        drop(s);
    }
    Ok(median_ms(samples))
}

fn build_state(path: &Path, values: usize) -> Result<(), String> {
    let mut state = ReplicatedState::open(path).map_err(|e| e.to_string())?;
    let user = Ed25519KeyPair::from_seed(&[9; 32]);
    let now = replica::now_ns();
    let per_block = 1_000;
    let mut height = state.height();
    for first in (0..values).step_by(per_block) {
        let block: Vec<SignedIngress> = (first..(first + per_block).min(values))
            .map(|i| {
                SignedIngress::sign(
                    Ingress {
                        sender: user.public_key(),
                        nonce: i as u64,
                        expiry_ns: now + 60_000_000_000,
                        operation: Operation::Put {
                            key: format!("k{i:08}"),
                            value: vec![(i % 251) as u8; 100],
                        },
                    },
                    &user,
                )
            })
            .collect();
        height = height.increment();
        let r = state
            .execute(height, now, &block)
            .map_err(|e| e.to_string())?;
        if r.executed.len() != block.len() {
            return Err(format!(
                "building the state: {} of {} puts executed",
                r.executed.len(),
                block.len()
            ));
        }
    }
    Ok(())
}

/// Commits `versions` versions (each updates one of 100 keys, so every key has a long
/// history), then times `get` of random keys at random versions.
fn registry_get_us(
    store: &mut impl RegistryStore,
    versions: u64,
    gets: usize,
) -> Result<f64, String> {
    const KEYS: u64 = 100;
    for v in 1..=versions {
        let key = format!("bench_key_{}", v % KEYS);
        let value = v.to_be_bytes().to_vec();
        let m = if v <= KEYS {
            Mutation::Insert { key, value }
        } else {
            Mutation::Update { key, value }
        };
        let delta = store.prepare(&[m]).map_err(|e| e.to_string())?;
        store.commit(Some(&delta), &[]).map_err(|e| e.to_string())?;
    }
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    let mut samples = Vec::with_capacity(gets);
    for _ in 0..gets {
        let key = format!("bench_key_{}", rand::Rng::random_range(&mut rng, 0..KEYS));
        let at = RegistryVersion::new(rand::Rng::random_range(&mut rng, KEYS..=versions.max(KEYS)));
        let start = Instant::now();
        let got = store.get(&key, at).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        if got.is_none() {
            return Err(format!("{key} missing at version {at}"));
        }
    }
    Ok(median_ms(samples) * 1e3)
}

/// Median round trip of a small message between two transports on loopback.
fn quic_rtt_ms(n: usize) -> Result<f64, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let key = |seed: u8| Ed25519KeyPair::from_seed(&[seed; 32]);
        let cfg = || {
            TransportConfig::new(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                replica::WIRE_PROTOCOL,
            )
        };
        let (a, mut a_rx) = Transport::start(cfg(), key(1), vec![])
            .await
            .map_err(|e| e.to_string())?;
        let (b, mut b_rx) = Transport::start(cfg(), key(2), vec![])
            .await
            .map_err(|e| e.to_string())?;
        let member = |t: &Transport, seed: u8| Member {
            node_id: key(seed).node_id(),
            public_key: key(seed).public_key(),
            address: t.local_addr(),
        };
        let members = vec![member(&a, 1), member(&b, 2)];
        a.set_members(members.clone()).map_err(|e| e.to_string())?;
        b.set_members(members).map_err(|e| e.to_string())?;
        let a_id = key(1).node_id();
        let b_id = key(2).node_id();
        // B echoes what it gets.
        let echo = b.clone();
        let echoer = tokio::spawn(async move {
            while let Some((from, bytes)) = b_rx.recv().await {
                echo.send(from, bytes);
            }
        });
        // The first exchange waits for the connection; it is not a sample.
        let connect_by = Instant::now() + Duration::from_secs(30);
        loop {
            a.send(b_id, b"ping".to_vec());
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), a_rx.recv()).await
            {
                break;
            }
            if Instant::now() > connect_by {
                return Err("the two transports did not connect within 30 s".to_string());
            }
        }
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let start = Instant::now();
            a.send(b_id, i.to_be_bytes().to_vec());
            loop {
                match tokio::time::timeout(Duration::from_secs(5), a_rx.recv()).await {
                    Ok(Some((from, bytes))) if from == b_id && bytes == i.to_be_bytes() => break,
                    Ok(Some(_)) => continue, // a late echo of the connection probes
                    _ => return Err(format!("no echo of message {i} within 5 s")),
                }
            }
            samples.push(start.elapsed());
        }
        echoer.abort();
        let _ = a_id;
        a.shutdown().await;
        b.shutdown().await;
        Ok(median_ms(samples))
    })
}

/// The machine, for the table's header.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {kernel}")
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The Markdown table, with the machine and the command.
pub fn table(rows: &[Row], sizes: &Sizes) -> String {
    let mut out = format!(
        "Machine: {}. Command: `scripts/bench.sh`{}.\n\n| figure | value | stands against | limit | ratio |\n|---|---|---|---|---|\n",
        machine(),
        if sizes.ed25519 == Sizes::TINY.ed25519 {
            " (tiny sizes: not figures to quote)"
        } else {
            ""
        }
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} {} | {} | {} | {} |\n",
            r.figure,
            number(r.value),
            r.unit,
            r.limit.as_deref().unwrap_or("(a limit)"),
            r.limit_value
                .map(|l| format!("{} {}", number(l), r.unit))
                .unwrap_or_default(),
            r.ratio.map(number).unwrap_or_default()
        ));
    }
    out
}

const START: &str = "<!-- bench:start -->";
const END: &str = "<!-- bench:end -->";

/// Puts `table` between the markers in `path` (appending a marked section if there is
/// none); the rest of the file is kept as it was.
pub fn write_between_markers(path: &Path, table: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let marked = format!("{START}\n{table}{END}");
    let new = match (text.find(START), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{marked}{}", &text[..a], &text[b + END.len()..]),
        (None, None) => format!("{}\n{marked}\n", text.trim_end()),
        _ => {
            return Err(format!(
                "{}: the markers {START} and {END} are not in order",
                path.display()
            ));
        }
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
