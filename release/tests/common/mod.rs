//! Helpers shared by the integration tests: fake releases, hand-made archives, and a
//! local HTTP server whose routes can misbehave on purpose.
#![allow(dead_code)]

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::Response,
};
use release::Manifest;
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    io::Write,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use types::ReplicaVersion;

/// Hang guard for every async test: generous, never a speed assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

pub async fn guard<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, test)
        .await
        .expect("test hung")
}

pub fn version(text: &str) -> ReplicaVersion {
    ReplicaVersion::new(text).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Incompressible bytes (xorshift), so a package is large enough to cut in the middle.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sources of a fake release in `dir`: two shell-script "binaries" that print their
/// name and version, and a 64 KiB data file.
pub struct FakeRelease {
    pub replica: PathBuf,
    pub orchestrator: PathBuf,
    pub blob: PathBuf,
}

impl FakeRelease {
    pub fn write(dir: &Path, v: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let script = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\necho {name} {v}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let blob = dir.join("blob");
        std::fs::write(&blob, noise(64 * 1024, v.len() as u64 + 7)).unwrap();
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
        Self {
            replica: script("replica"),
            orchestrator: script("orchestrator"),
            blob,
        }
    }

    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("bin/replica", self.replica.as_path()),
            ("bin/orchestrator", self.orchestrator.as_path()),
            ("share/blob", self.blob.as_path()),
        ]
    }

    /// Builds `<dir>/<name>` for version `v`; returns its path, bytes and SHA-256.
    pub fn build(&self, dir: &Path, name: &str, v: &str) -> (PathBuf, Vec<u8>, String) {
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join(name);
        let sha = release::build_package(&out, &version(v), "test build", &self.files()).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            sha,
            "build_package returned another hash"
        );
        (out, bytes, sha)
    }
}

/// One entry of a hand-made archive; the name is written into the header as raw bytes,
/// so `..` and absolute paths get through (the tar crate's builder refuses them).
pub struct RawEntry {
    pub name: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            mode: 0o755,
        }
    }

    pub fn link(name: &str, kind: tar::EntryType, target: &str) -> Self {
        Self {
            name: name.into(),
            kind,
            data: Vec::new(),
            link: Some(target.into()),
            mode: 0o777,
        }
    }

    pub fn manifest(v: &str, files: &[(&str, &[u8])]) -> Self {
        let manifest = Manifest {
            version: version(v),
            build: "hand-made".into(),
            files: files
                .iter()
                .map(|(n, d)| (n.to_string(), sha256_hex(d)))
                .collect::<BTreeMap<_, _>>(),
        };
        Self::file("manifest.json", &manifest.to_json())
    }
}

pub const REPLICA_BYTES: &[u8] = b"#!/bin/sh\necho replica\n";
pub const ORCHESTRATOR_BYTES: &[u8] = b"#!/bin/sh\necho orchestrator\n";

/// A well-formed package's entries for version `v`, to which a test adds one defect.
pub fn good_entries(v: &str) -> Vec<RawEntry> {
    vec![
        RawEntry::manifest(
            v,
            &[
                ("bin/replica", REPLICA_BYTES),
                ("bin/orchestrator", ORCHESTRATOR_BYTES),
            ],
        ),
        RawEntry::file("bin/replica", REPLICA_BYTES),
        RawEntry::file("bin/orchestrator", ORCHESTRATOR_BYTES),
    ]
}

pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let name = e.name.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(link) = &e.link {
            let link = link.as_bytes();
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_mtime(0);
        h.set_cksum();
        builder.append(&h, &e.data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes a hand-made `.tar.gz` to `path` and returns it as verified (its hash is
/// computed here: these tests are about what unpack does after verification).
pub fn write_raw_package(path: &Path, entries: &[RawEntry]) -> release::VerifiedPackage {
    let bytes = gzip(&raw_tar(entries));
    std::fs::write(path, &bytes).unwrap();
    release::VerifiedPackage::verify(path, &sha256_hex(&bytes)).unwrap()
}

/// Names in a directory (empty if it does not exist), sorted.
/// Runs a fake release's script and returns what it printed.
pub fn run(path: &Path) -> String {
    let out = std::process::Command::new(path).output().unwrap();
    assert!(out.status.success(), "{} failed", path.display());
    String::from_utf8(out.stdout).unwrap()
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// The test server.

/// What a route does.
#[derive(Clone)]
pub enum Route {
    /// 200 with the body, or 206 for `Range: bytes=N-` if `ranges` (416 past the end).
    Serve { body: Vec<u8>, ranges: bool },
    /// 404.
    NotFound,
    /// First request: the full Content-Length, half the body, then the connection
    /// drops. Later requests: as `Serve`.
    CutFirst { body: Vec<u8>, ranges: bool },
    /// The head and half the body, then nothing, forever.
    Stall { body: Vec<u8> },
    /// The head, then one byte of the body every `every`: never silent for long, never
    /// done.
    Trickle { body: Vec<u8>, every: Duration },
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    /// Whether the server's `probe` path existed when the request arrived.
    pub probe_existed: bool,
}

struct ServerState {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
    probe: Option<PathBuf>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(routes: Vec<(&str, Route)>) -> Self {
        let state = Arc::new(Mutex::new(ServerState {
            routes: routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
            seen: Vec::new(),
            probe: None,
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Record, for each later request, whether `path` exists at that moment.
    pub fn set_probe(&self, path: &Path) {
        self.state.lock().unwrap().probe = Some(path.to_path_buf());
    }
}

/// A URL on which nothing listens (connection refused).
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/refused.tar.gz")
}

fn requested_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    value
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

fn full(body: Vec<u8>) -> Response {
    let len = body.len();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from(body))
        .unwrap()
}

fn serve(body: Vec<u8>, ranges: bool, headers: &HeaderMap) -> Response {
    let len = body.len() as u64;
    match requested_start(headers).filter(|_| ranges) {
        Some(start) if start >= len => Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty())
            .unwrap(),
        Some(start) => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{len}", len - 1),
            )
            .header(header::CONTENT_LENGTH, len - start)
            .body(Body::from(body[start as usize..].to_vec()))
            .unwrap(),
        None => full(body),
    }
}

/// How long a misbehaving response waits after its first half before it fails, so the
/// half reaches the client (the tests assert on what arrived, not on this delay).
const CUT_DELAY: Duration = Duration::from_millis(200);

/// A response that announces `body.len()` bytes, sends the first half, and then either
/// fails (the connection drops) or stalls forever.
fn half_then(body: Vec<u8>, stall: bool) -> Response {
    let len = body.len();
    let half = Bytes::from(body[..len / 2].to_vec());
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(half), 1)),
                _ => {
                    // Let the first half reach the socket before the end comes.
                    tokio::time::sleep(CUT_DELAY).await;
                    if stall {
                        std::future::pending::<()>().await;
                    }
                    Some((Err(std::io::Error::other("cut on purpose")), 2))
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn handle(
    State(state): State<Arc<Mutex<ServerState>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let route = {
        let mut s = state.lock().unwrap();
        let probe_existed = s.probe.as_ref().is_some_and(|p| p.exists());
        let first_time = !s.seen.iter().any(|seen| seen.path == path);
        s.seen.push(Seen {
            path: path.clone(),
            range: headers
                .get(header::RANGE)
                .map(|v| v.to_str().unwrap().to_string()),
            probe_existed,
        });
        s.routes.get(&path).cloned().map(|r| (r, first_time))
    };
    match route {
        None | Some((Route::NotFound, _)) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("no such package"))
            .unwrap(),
        Some((Route::Serve { body, ranges }, _)) => serve(body, ranges, &headers),
        Some((Route::CutFirst { body, .. }, true)) => half_then(body, false),
        Some((Route::CutFirst { body, ranges }, false)) => serve(body, ranges, &headers),
        Some((Route::Stall { body }, _)) => half_then(body, true),
        Some((Route::Trickle { body, every }, _)) => trickle(body, every),
    }
}

fn trickle(body: Vec<u8>, every: Duration) -> Response {
    let len = body.len();
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let byte = body.get(i).copied();
        async move {
            tokio::time::sleep(every).await;
            byte.map(|b| (Ok::<_, std::io::Error>(Bytes::from(vec![b])), i + 1))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap()
}
