//! What each kind of process of a testnet costs under load: CPU time (from
//! `/proc/PID/stat`) and resident memory (`/proc/PID/status`), so the figures carry over
//! to machines where each node has its own cores. A testnet's processes are found by
//! their command line naming its directory; the bench's own load generator is counted
//! apart as `load`.

use std::{collections::BTreeMap, path::Path};

/// One process, once.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    kind: String,
    cpu_seconds: f64,
    rss_bytes: u64,
}

/// Every process of the testnet in `dir` (and the bench itself), by pid.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    procs: BTreeMap<u32, Sample>,
}

/// Per kind of process over a window.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KindCost {
    pub kind: String,
    pub processes: usize,
    /// CPU time (user and system) spent by all of them in the window.
    pub cpu_seconds: f64,
    /// Resident memory at the window's end: the largest process, and the sum.
    pub max_rss_bytes: u64,
    pub total_rss_bytes: u64,
}

impl Snapshot {
    pub(super) fn take(dir: &Path) -> Self {
        let needle = dir.display().to_string();
        let mut procs = BTreeMap::new();
        let ticks = ticks_per_second();
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Self { procs };
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let kind = if pid == me {
                "load".to_string()
            } else {
                match kind_of(pid, &needle) {
                    Some(k) => k,
                    None => continue,
                }
            };
            if let Some(s) = sample(pid, kind, ticks) {
                procs.insert(pid, s);
            }
        }
        Self { procs }
    }

    /// Per kind: the CPU time from `before` to `self` (processes in both), and the
    /// memory now.
    pub(super) fn since(&self, before: &Snapshot) -> Vec<KindCost> {
        let mut out: BTreeMap<&str, KindCost> = BTreeMap::new();
        for (pid, now) in &self.procs {
            let c = out.entry(&now.kind).or_insert_with(|| KindCost {
                kind: now.kind.clone(),
                ..KindCost::default()
            });
            c.processes += 1;
            if let Some(then) = before.procs.get(pid).filter(|t| t.kind == now.kind) {
                c.cpu_seconds += (now.cpu_seconds - then.cpu_seconds).max(0.0);
            }
            c.max_rss_bytes = c.max_rss_bytes.max(now.rss_bytes);
            c.total_rss_bytes += now.rss_bytes;
        }
        out.into_values().collect()
    }
}

/// The largest `/proc/PID/*` file read: a few KiB each (a process's command line is the
/// only one another user sets, and it is refused past this, not held).
const MAX_PROC_FILE_BYTES: u64 = 64 << 10;

/// `/proc/PID/FILE` (`pid` may be `self`), at most [`MAX_PROC_FILE_BYTES`].
pub(crate) fn read_proc(pid: impl std::fmt::Display, file: &str) -> Option<Vec<u8>> {
    durable::read_bounded(
        Path::new(&format!("/proc/{pid}/{file}")),
        MAX_PROC_FILE_BYTES,
    )
    .ok()
}

/// The program name of `pid` if its command line names the testnet directory.
fn kind_of(pid: u32, needle: &str) -> Option<String> {
    // Command lines are short; a bound keeps a strange one from costing much.
    let raw = read_proc(pid, "cmdline")?;
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).take(64).collect();
    if !args
        .iter()
        .any(|a| String::from_utf8_lossy(a).contains(needle))
    {
        return None;
    }
    let argv0 = String::from_utf8_lossy(args.first()?).to_string();
    Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
}

fn sample(pid: u32, kind: String, ticks: f64) -> Option<Sample> {
    let stat = String::from_utf8(read_proc(pid, "stat")?).ok()?;
    let cpu_seconds = cpu_seconds_of_stat(&stat, ticks)?;
    let status = String::from_utf8(read_proc(pid, "status")?).ok()?;
    let rss_bytes = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Some(Sample {
        kind,
        cpu_seconds,
        rss_bytes,
    })
}

/// User plus system time in `/proc/PID/stat` (fields 14 and 15; the command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`).
fn cpu_seconds_of_stat(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux when unsure).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 1000 10";
        assert_eq!(cpu_seconds_of_stat(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_of_stat("42 (x) S 1", 100.0), None);
    }

    #[test]
    fn this_process_is_counted_as_load_and_spends_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let before = Snapshot::take(dir.path());
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let costs = Snapshot::take(dir.path()).since(&before);
        let load = costs.iter().find(|c| c.kind == "load").unwrap();
        assert_eq!(load.processes, 1);
        assert!(load.cpu_seconds > 0.0, "{costs:?}");
        assert!(load.max_rss_bytes > 0);
        assert_eq!(
            costs.len(),
            1,
            "nothing else names a fresh directory: {costs:?}"
        );
    }
}
