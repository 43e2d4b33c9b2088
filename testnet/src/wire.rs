//! The link emulator of a `--hosts netns` testnet (`testnet serve-links`, started by
//! `up`): the wire between the hosts' interfaces, doing what `tc netem` would (this
//! machine's kernel has no netem; see `hosts.rs`).
//!
//! One thread per host reads the Ethernet frames its interface sends (an `AF_PACKET`
//! socket on the veth's outer end), learns which host owns each MAC address, and
//! schedules each frame for the host it is addressed to (every other host for a
//! broadcast or an unknown address): dropped with the sender's loss, or when a
//! partition separates the two; otherwise due after the sender's rate allows it out,
//! plus its latency and a uniform jitter, never before the frame it sent to the same
//! host before (a link keeps its order). One thread sends the due frames. The shape and
//! the partition come from `DIR/links.json`, re-read when it changes; counters go to
//! `DIR/links-stats.json` once a second.

use super::*;
use hosts::{Host, LINKS_FILE, Links};
use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender};
use rand::Rng;
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc, Condvar, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

/// The most frames one host may have in flight on the wire (netem's default limit is
/// 1,000 packets; a 100 ms link at a few thousand frames a second needs more).
const BACKLOG: usize = 50_000;
/// The largest frame read (the interfaces' MTU is 1500; offloads are off).
const FRAME: usize = 2048;

struct Due {
    at: Instant,
    seq: u64,
    to: usize,
    frame: Vec<u8>,
    from: usize,
}
impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default, Serialize)]
struct Stats {
    forwarded: AtomicU64,
    lost: AtomicU64,
    cut: AtomicU64,
    overflow: AtomicU64,
}

struct Wire {
    hosts: Vec<Host>,
    /// Swapped whole on a change; a reader takes the `Arc`, not a copy, per frame.
    links: RwLock<Arc<Links>>,
    macs: Mutex<HashMap<[u8; 6], usize>>,
    queue: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
    wake: Condvar,
    backlog: Vec<AtomicUsize>,
    stats: Stats,
}

pub fn serve(dir: &Path) -> Result<(), String> {
    let l = layout(dir)?;
    let net = l
        .netns
        .ok_or("serve-links: this testnet runs on loopback (prep --hosts netns)")?;
    let hosts = net.hosts();
    let interfaces = pnet_datalink::interfaces();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for h in &hosts {
        let name = net.wire_end(*h);
        let iface = interfaces
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| format!("interface {name} does not exist (testnet up makes it)"))?;
        let config = pnet_datalink::Config {
            read_buffer_size: FRAME,
            write_buffer_size: FRAME,
            read_timeout: Some(Duration::from_millis(200)),
            promiscuous: true,
            ..Default::default()
        };
        match pnet_datalink::channel(iface, config) {
            Ok(Channel::Ethernet(tx, rx)) => {
                senders.push(tx);
                receivers.push(rx);
            }
            Ok(_) => return Err(format!("{name}: not an Ethernet channel")),
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    let wire = Arc::new(Wire {
        links: RwLock::new(Arc::new(Links::load(dir)?)),
        macs: Mutex::new(HashMap::new()),
        queue: Mutex::new((BinaryHeap::new(), 0)),
        wake: Condvar::new(),
        backlog: hosts.iter().map(|_| AtomicUsize::new(0)).collect(),
        stats: Stats::default(),
        hosts,
    });
    for (from, rx) in receivers.into_iter().enumerate() {
        let w = wire.clone();
        std::thread::spawn(move || w.read(from, rx));
    }
    let w = wire.clone();
    let d = dir.to_path_buf();
    std::thread::spawn(move || w.follow(&d));
    eprintln!("links: forwarding between {} hosts", wire.hosts.len());
    wire.send(senders);
    Ok(())
}

impl Wire {
    /// Schedules every frame host `from` sends.
    fn read(&self, from: usize, mut rx: Box<dyn DataLinkReceiver>) {
        let mut rng = rand::rng();
        let mut next_free = Instant::now();
        let mut last_due: Vec<Instant> = vec![Instant::now(); self.hosts.len()];
        loop {
            let frame = match rx.next() {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => {
                    eprintln!("links: reading host {from}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if frame.len() < 14 {
                continue;
            }
            let (dst, src) = (mac(&frame[0..6]), mac(&frame[6..12]));
            let to: Vec<usize> = {
                let mut macs = self.macs.lock().unwrap_or_else(|p| p.into_inner());
                macs.insert(src, from);
                match macs.get(&dst) {
                    Some(&to) if dst[0] & 1 == 0 => vec![to],
                    _ => (0..self.hosts.len()).collect(),
                }
            };
            let links = self.links.read().unwrap_or_else(|p| p.into_inner()).clone();
            let shape = links.shape_of(self.hosts[from]);
            if shape.loss_pct > 0.0 && rng.random::<f64>() * 100.0 < shape.loss_pct {
                self.stats.lost.fetch_add(1, Relaxed);
                continue;
            }
            let now = Instant::now();
            // The sender's rate: the frame leaves once the ones before it have.
            let departure = if shape.rate_mbit > 0 {
                let bits = frame.len() as u64 * 8;
                let on_wire = Duration::from_micros(bits / u64::from(shape.rate_mbit));
                next_free = next_free.max(now) + on_wire;
                next_free
            } else {
                now
            };
            let jitter = if shape.jitter_ms > 0 {
                rng.random_range(-(shape.jitter_ms as i64 * 1000)..=(shape.jitter_ms as i64 * 1000))
            } else {
                0
            };
            let delay_us = (i64::from(shape.latency_ms) * 1000 + jitter).max(0) as u64;
            let due = departure + Duration::from_micros(delay_us);
            for t in to {
                if t == from {
                    continue;
                }
                if links.cut(self.hosts[from], self.hosts[t]) {
                    self.stats.cut.fetch_add(1, Relaxed);
                    continue;
                }
                if self.backlog[from].fetch_add(1, Relaxed) >= BACKLOG {
                    self.backlog[from].fetch_sub(1, Relaxed);
                    self.stats.overflow.fetch_add(1, Relaxed);
                    continue;
                }
                let at = due.max(last_due[t]);
                last_due[t] = at;
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.1 += 1;
                let seq = q.1;
                q.0.push(Reverse(Due {
                    at,
                    seq,
                    to: t,
                    frame: frame.to_vec(),
                    from,
                }));
                drop(q);
                self.wake.notify_one();
            }
        }
    }

    /// Sends the frames that are due.
    fn send(&self, mut senders: Vec<Box<dyn DataLinkSender>>) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let mut ready = Vec::new();
            while q.0.peek().is_some_and(|Reverse(d)| d.at <= now) {
                if let Some(Reverse(d)) = q.0.pop() {
                    ready.push(d);
                }
            }
            if !ready.is_empty() {
                drop(q);
                for d in ready {
                    self.backlog[d.from].fetch_sub(1, Relaxed);
                    if let Some(Err(e)) = senders[d.to].send_to(&d.frame, None) {
                        eprintln!("links: sending to host {}: {e}", d.to);
                    } else {
                        self.stats.forwarded.fetch_add(1, Relaxed);
                    }
                }
                q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q = match q.0.peek().map(|Reverse(d)| d.at) {
                Some(at) => {
                    self.wake
                        .wait_timeout(q, at.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Re-reads `links.json` when it changes; writes the counters.
    fn follow(&self, dir: &Path) {
        let path = dir.join(LINKS_FILE);
        let modified = || std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut seen = modified();
        let mut last_stats = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = modified();
            if now != seen {
                seen = now;
                match Links::load(dir) {
                    Ok(l) => {
                        eprintln!(
                            "links: now {}",
                            serde_json::to_string(&l).unwrap_or_default()
                        );
                        *self.links.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(l);
                    }
                    Err(e) => eprintln!("links: keeping the old links: {e}"),
                }
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                let text = serde_json::to_string(&self.stats).unwrap_or_default();
                if let Err(e) = durable::write(&dir.join("links-stats.json"), text.as_bytes()) {
                    eprintln!("links: counters: {e}");
                }
            }
        }
    }
}

fn mac(b: &[u8]) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(b);
    m
}
