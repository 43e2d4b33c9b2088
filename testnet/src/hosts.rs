//! Nodes as hosts (`--hosts netns`): every node (its orchestrator and replica) and the
//! infrastructure host (registry and package server) in a Linux network namespace of
//! its own, each with one Ethernet interface and its own address in `10.213.K.0/24`.
//!
//! The interfaces are veth pairs whose outer ends meet in the testnet's link emulator
//! (`wire.rs`), a process that forwards every frame between hosts after the link's
//! latency and jitter, drops the link's share of loss, holds its rate, and drops what
//! crosses a partition. `tc netem` would do the shaping in the kernel, but this
//! machine's kernel has neither `sch_netem` nor `sch_prio` nor `act_gact` (`tc qdisc add
//! … netem` answers "Specified qdisc kind is unknown") and no modules to load; the
//! namespaces, interfaces and kernel network stacks are real, only the wire is ours.
//!
//! Layout, for testnet index K (0..=255, one per running testnet on the machine):
//! operator (this machine's root namespace, for `testnet`, `nns`, the dashboard)
//! `10.213.K.1`, infrastructure `10.213.K.2`, node i `10.213.K.(10+i)`. Names:
//! namespaces `icupK-infra`, `icupK-node-I`; outer veth ends `icupKi`, `icupKnI`,
//! `icupKo` (the operator's, whose peer `icupKop` holds `10.213.K.1`). A claim file
//! `/run/icup-testnet/K` (the testnet directory inside) reserves K from `prep` to `down`.

use super::*;
use std::net::Ipv4Addr;

/// Every address a netns testnet uses lies in this range.
pub const RANGE: &str = "10.213.0.0/16";
const CLAIMS: &str = "/run/icup-testnet";
/// Where the ports of every host start (the same on each: they are separate hosts).
pub const HOST_BASE_PORT: u16 = 4100;

/// How each host's outgoing link behaves (what `tc netem` would be given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[group(id = "link-shape")]
pub struct Shape {
    /// One-way delay added to every frame a host sends (a round trip pays it twice).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u32,
    /// Uniform jitter around the latency, at most the latency (frames keep their order).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u32,
    /// The share of frames a host sends that is lost, in percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss_pct: f64,
    /// The rate of a host's outgoing link in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_mbit: u32,
}

impl Shape {
    pub fn validate(&self) -> Result<(), String> {
        if self.latency_ms > 10_000 {
            return Err("--latency-ms must be at most 10000".into());
        }
        if self.jitter_ms > self.latency_ms {
            return Err("--jitter-ms must be at most --latency-ms".into());
        }
        if !(0.0..=100.0).contains(&self.loss_pct) {
            return Err("--loss-pct must be between 0 and 100".into());
        }
        Ok(())
    }
}

/// What `prep --hosts netns` decided, in `testnet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Netns {
    pub index: u8,
    pub nodes: usize,
}

/// Holds the lock of the claims directory while a claim is read, judged and written.
/// Without it two `prep`s could share an index: one reads the other's claim between
/// its creation and its first byte (an empty claim names no directory, so it looks
/// stale) and replaces it, and the second testnet's `create` tears down the first's
/// interfaces. The lock is the kernel's, so a crashed holder leaves none behind.
fn claims_lock() -> Result<std::fs::File, String> {
    std::fs::create_dir_all(CLAIMS).map_err(io(Path::new(CLAIMS)))?;
    let path = Path::new(CLAIMS).join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.lock().map_err(io(&path))?;
    Ok(f)
}

/// One host of the testnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Operator,
    Infra,
    Node(usize),
}

impl Netns {
    pub fn prefix(&self) -> String {
        format!("icup{}", self.index)
    }
    pub fn address(&self, host: Host) -> Ipv4Addr {
        let last = match host {
            Host::Operator => 1,
            Host::Infra => 2,
            Host::Node(i) => 10 + i as u8,
        };
        Ipv4Addr::new(10, 213, self.index, last)
    }
    /// The namespace a host runs in (the operator runs in the root namespace).
    pub fn namespace(&self, host: Host) -> Option<String> {
        match host {
            Host::Operator => None,
            Host::Infra => Some(format!("{}-infra", self.prefix())),
            Host::Node(i) => Some(format!("{}-node-{i}", self.prefix())),
        }
    }
    /// The veth end the link emulator forwards frames from and to.
    pub fn wire_end(&self, host: Host) -> String {
        match host {
            Host::Operator => format!("{}o", self.prefix()),
            Host::Infra => format!("{}i", self.prefix()),
            Host::Node(i) => format!("{}n{i}", self.prefix()),
        }
    }
    /// Every host, in the link emulator's port order.
    pub fn hosts(&self) -> Vec<Host> {
        let mut h = vec![Host::Operator, Host::Infra];
        h.extend((0..self.nodes).map(Host::Node));
        h
    }

    /// Reserves a free index: one whose claim file does not exist, or names a directory
    /// that no longer holds this testnet, and whose names are not in use.
    pub fn claim(dir: &Path, nodes: usize) -> Result<Netns, String> {
        if nodes > 200 {
            return Err("--hosts netns: at most 200 nodes".into());
        }
        let _lock = claims_lock()?;
        let me = std::fs::canonicalize(dir).map_err(io(dir))?;
        for index in 0..=255u8 {
            let claim = Path::new(CLAIMS).join(index.to_string());
            if let Ok(holder) = std::fs::read_to_string(&claim) {
                let holder = Path::new(holder.trim());
                // A prep that is writing its directory has no testnet.json yet: its
                // claim stands for ten minutes.
                let young = std::fs::metadata(&claim)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|a| a < Duration::from_secs(600)));
                let stale = match layout(holder) {
                    Ok(l) => l.netns.is_none_or(|n| n.index != index),
                    Err(_) => !holder.exists() || !young,
                };
                if !stale {
                    continue;
                }
                let _ = std::fs::remove_file(&claim);
            }
            let n = Netns { index, nodes };
            if n.in_use() {
                continue;
            }
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim);
            if let Ok(mut f) = created {
                use std::io::Write;
                writeln!(f, "{}", me.display()).map_err(io(&claim))?;
                return Ok(n);
            }
        }
        Err(format!(
            "no free testnet index in {RANGE}: see {CLAIMS} and `ip netns list`"
        ))
    }

    /// Takes this testnet's index again at `up` (`down` gave it back), unless another
    /// testnet holds it now.
    pub fn reclaim(&self, dir: &Path) -> Result<(), String> {
        let _lock = claims_lock()?;
        let me = std::fs::canonicalize(dir).map_err(io(dir))?;
        let claim = Path::new(CLAIMS).join(self.index.to_string());
        match std::fs::read_to_string(&claim) {
            Ok(holder) if Path::new(holder.trim()) == me => Ok(()),
            Ok(holder) => Err(format!(
                "testnet index {} (10.213.{}.0/24) is held by {} now: bring that one down, or prep this one again",
                self.index,
                self.index,
                holder.trim()
            )),
            Err(_) => {
                use std::io::Write;
                // create_new: of two `up`s racing for a free index, one gets it.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&claim)
                    .map_err(io(&claim))?;
                writeln!(f, "{}", me.display()).map_err(io(&claim))
            }
        }
    }

    fn in_use(&self) -> bool {
        self.hosts().iter().any(|h| {
            self.namespace(*h)
                .is_some_and(|ns| Path::new("/run/netns").join(ns).exists())
                || Path::new("/sys/class/net").join(self.wire_end(*h)).exists()
        })
    }

    /// Makes the namespaces and their interfaces (what a crashed `up` left is removed
    /// first, so this can always run again).
    pub fn create(&self) -> Result<(), String> {
        self.remove_links()?;
        for host in self.hosts() {
            let end = self.wire_end(host);
            let inner = format!("{end}p");
            let addr = format!("{}/24", self.address(host));
            match self.namespace(host) {
                Some(ns) => {
                    run("ip", &["netns", "add", &ns])?;
                    // Quiet hosts: no IPv6 chatter on the wire.
                    let _ = in_ns(&ns, "sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
                    let _ = in_ns(
                        &ns,
                        "sysctl",
                        &["-qw", "net.ipv6.conf.default.disable_ipv6=1"],
                    );
                    run(
                        "ip",
                        &[
                            "link", "add", &end, "type", "veth", "peer", "name", "eth0", "netns",
                            &ns,
                        ],
                    )?;
                    in_ns(&ns, "ip", &["addr", "add", &addr, "dev", "eth0"])?;
                    in_ns(&ns, "ip", &["link", "set", "eth0", "up"])?;
                    in_ns(&ns, "ip", &["link", "set", "lo", "up"])?;
                    no_offloads(Some(&ns), "eth0")?;
                }
                None => {
                    run(
                        "ip",
                        &["link", "add", &end, "type", "veth", "peer", "name", &inner],
                    )?;
                    let _ = run(
                        "sysctl",
                        &["-qw", &format!("net.ipv6.conf.{inner}.disable_ipv6=1")],
                    );
                    run("ip", &["addr", "add", &addr, "dev", &inner])?;
                    run("ip", &["link", "set", &inner, "up"])?;
                    no_offloads(None, &inner)?;
                }
            }
            let _ = run(
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{end}.disable_ipv6=1")],
            );
            // The wire's ends are in this (the operator's) namespace, which owns the
            // operator's address: by default it would answer a host's ARP request for
            // that address straight from the wire end the request came in on, and that
            // host would then send the operator its frames past the emulator, unshaped
            // (seen as a 0.1 ms round trip across a 50 ms link). No ARP on the ends.
            run("ip", &["link", "set", &end, "arp", "off"])?;
            let _ = run(
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{end}.arp_ignore=8")],
            );
            run("ip", &["link", "set", &end, "up"])?;
            no_offloads(None, &end)?;
        }
        Ok(())
    }

    /// Removes every namespace and interface this testnet made, killing what still
    /// runs inside its namespaces; quiet about what is already gone.
    pub fn remove_links(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for host in self.hosts() {
            if let Some(ns) = self.namespace(host)
                && Path::new("/run/netns").join(&ns).exists()
            {
                if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                if let Err(e) = run("ip", &["netns", "del", &ns]) {
                    errors.push(e);
                }
            }
            // Deleting a namespace deletes its veth pair, a moment later.
            let end = self.wire_end(host);
            if Path::new("/sys/class/net").join(&end).exists()
                && let Err(e) = run("ip", &["link", "del", &end])
                && !e.contains("Cannot find device")
            {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Removes everything and gives the index back.
    pub fn destroy(&self) -> Result<(), String> {
        self.remove_links()?;
        let _ = std::fs::remove_file(Path::new(CLAIMS).join(self.index.to_string()));
        Ok(())
    }

    /// `program` run on `host` (`ip netns exec` keeps the pid: it executes the program).
    pub fn command(&self, host: Host, program: &Path) -> Command {
        match self.namespace(host) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// Checksums, segmentation and coalescing done in software: the link emulator copies
/// whole frames between interfaces, which a checksum left to the hardware or a 64 KiB
/// segment would not survive.
fn no_offloads(ns: Option<&str>, dev: &str) -> Result<(), String> {
    let args = [
        "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
    ];
    let r = match ns {
        Some(ns) => in_ns(ns, "ethtool", &args),
        None => run("ethtool", &args),
    };
    // ethtool exits non-zero when one of several features cannot change (say gro on a
    // device without it) although the others did; only its absence is an error.
    match r {
        Err(e) if e.contains("No such file") || e.contains("not found") => Err(format!(
            "ethtool is missing (scripts/install-deps.sh installs it): {e}"
        )),
        _ => Ok(()),
    }
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs a network command; its stderr is the error.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The links' state the emulator follows: `DIR/links.json`, written whole (a rename)
/// by `prep`, `shape`, `partition` and `heal`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// Every host's outgoing link but the operator's.
    pub shape: Shape,
    /// Per node, a shape that replaces `shape` (from `shape --node I`).
    #[serde(default)]
    pub node_shapes: std::collections::BTreeMap<usize, Shape>,
    /// Groups of nodes cut from each other (nodes in no group reach everyone).
    #[serde(default)]
    pub partition: Vec<Vec<usize>>,
}

pub const LINKS_FILE: &str = "links.json";

impl Links {
    pub fn load(dir: &Path) -> Result<Links, String> {
        let path = dir.join(LINKS_FILE);
        let bytes = durable::read_bounded(&path, 1 << 20).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
    pub fn store(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(LINKS_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        // Whole or not at all: the emulator may read it at any moment.
        durable::write(&path, (text + "\n").as_bytes()).map_err(|e| e.to_string())
    }
    pub fn shape_of(&self, host: Host) -> Shape {
        match host {
            Host::Operator => Shape::default(),
            Host::Infra => self.shape,
            Host::Node(i) => self.node_shapes.get(&i).copied().unwrap_or(self.shape),
        }
    }
    /// Whether frames from `a` to `b` cross the partition.
    pub fn cut(&self, a: Host, b: Host) -> bool {
        let group = |h: Host| match h {
            Host::Node(i) => self.partition.iter().position(|g| g.contains(&i)),
            _ => None,
        };
        matches!((group(a), group(b)), (Some(x), Some(y)) if x != y)
    }
}

/// `--groups 0,1/2,3`: node indices, each in at most one group, at least two groups.
pub fn parse_groups(text: &str, nodes: usize) -> Result<Vec<Vec<usize>>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut groups = Vec::new();
    for g in text.split('/') {
        let mut group = Vec::new();
        for i in g.split(',') {
            let i: usize = i
                .trim()
                .parse()
                .map_err(|_| format!("--groups {text:?}: {i:?} is not a node index"))?;
            if i >= nodes {
                return Err(format!(
                    "--groups {text:?}: node {i} does not exist (nodes 0 to {})",
                    nodes - 1
                ));
            }
            if !seen.insert(i) {
                return Err(format!("--groups {text:?}: node {i} is in two groups"));
            }
            group.push(i);
        }
        groups.push(group);
    }
    if groups.len() < 2 {
        return Err(format!(
            "--groups {text:?}: name at least two groups, separated by '/'"
        ));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims made at the same instant get different indices (they once shared one: a
    /// claim read before its first byte was written looked stale).
    #[test]
    fn concurrent_claims_get_distinct_indices() {
        if std::fs::create_dir_all(CLAIMS).is_err() {
            eprintln!("skipped: {CLAIMS} is not writable (not root)");
            return;
        }
        // The race is narrow: several rounds of eight (without the lock, one round in
        // about six shared an index).
        let threads = 8;
        for round in 0..20 {
            let start = std::sync::Arc::new(std::sync::Barrier::new(threads));
            let dirs: Vec<_> = (0..threads).map(|_| tempfile::tempdir().unwrap()).collect();
            let claimed: Vec<u8> = std::thread::scope(|s| {
                let handles: Vec<_> = dirs
                    .iter()
                    .map(|d| {
                        let start = start.clone();
                        s.spawn(move || {
                            start.wait();
                            Netns::claim(d.path(), 4).map(|n| n.index)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Result<_, _>>()
            })
            .unwrap();
            for k in &claimed {
                let _ = std::fs::remove_file(Path::new(CLAIMS).join(k.to_string()));
            }
            let mut distinct = claimed.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                threads,
                "round {round}: shared indices: {claimed:?}"
            );
        }
    }

    #[test]
    fn groups_are_checked() {
        assert_eq!(
            parse_groups("0,1/2,3", 4).unwrap(),
            vec![vec![0, 1], vec![2, 3]]
        );
        assert_eq!(parse_groups("3/0", 4).unwrap(), vec![vec![3], vec![0]]);
        for (bad, why) in [
            ("0,1", "two groups"),
            ("0/4", "does not exist"),
            ("0,1/1", "two groups"),
            ("0/x", "not a node index"),
            ("0//1", "not a node index"),
        ] {
            let e = parse_groups(bad, 4).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_partition_cuts_listed_groups_only() {
        let l = Links {
            partition: vec![vec![0, 1], vec![2]],
            ..Links::default()
        };
        assert!(l.cut(Host::Node(0), Host::Node(2)));
        assert!(l.cut(Host::Node(2), Host::Node(1)));
        assert!(!l.cut(Host::Node(0), Host::Node(1)));
        assert!(
            !l.cut(Host::Node(3), Host::Node(2)),
            "node 3 is in no group"
        );
        assert!(!l.cut(Host::Infra, Host::Node(2)));
        assert!(!l.cut(Host::Operator, Host::Node(0)));
    }

    #[test]
    fn names_fit_the_kernels_limit_and_addresses_the_range() {
        let n = Netns {
            index: 255,
            nodes: 200,
        };
        for h in n.hosts() {
            assert!(n.wire_end(h).len() < 15, "{}p is too long", n.wire_end(h));
            assert_eq!(n.address(h).octets()[..2], [10, 213]);
        }
        assert_eq!(n.address(Host::Node(3)), Ipv4Addr::new(10, 213, 255, 13));
    }

    #[test]
    fn shapes_are_checked() {
        let ok = Shape {
            latency_ms: 25,
            jitter_ms: 5,
            loss_pct: 1.0,
            rate_mbit: 100,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            Shape {
                jitter_ms: 30,
                ..ok
            },
            Shape {
                loss_pct: 101.0,
                ..ok
            },
            Shape {
                latency_ms: 20_000,
                jitter_ms: 0,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
