//! Issue 19's upgrade through the NNS subnet: on a testnet of a 4-node NNS subnet and a
//! 4-node application subnet, `nns` sent to NNS nodes elects the next release and deploys
//! it to the application subnet, which switches at a CUP with its state intact, while an
//! NNS node that lies is the only one every node's `node.toml` names: it answers each
//! registry page with one forgery or another (a delta changed, the certificate's
//! signature changed, a witness changed), and every orchestrator refuses it and
//! replicates from the NNS nodes its own registry copy names (learned from the genesis
//! registry). The registry server and one NNS node are killed first (kill -9): no node
//! depends on the first, and the NNS subnet goes on without the second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{Router, extract::Query, http::StatusCode, routing::get};
use registry::page::RegistryPage;
use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};
use tests::testnet::{Net, elect_args, nodes};
use types::codec;

const BAD_GATEWAY: StatusCode = StatusCode::BAD_GATEWAY;

/// Changes `page` the way forgery `n` (of three) does; false when it has nothing to
/// change (a page without deltas for the first).
fn forge(page: &mut RegistryPage, n: u64) -> bool {
    match n % 3 {
        // A delta the subnet did not certify: a value of its last change altered.
        0 => {
            let Some(change) = page.deltas.last_mut().and_then(|d| d.changes.last_mut()) else {
                return false;
            };
            match &mut change.value {
                Some(v) if !v.is_empty() => v[0] ^= 1,
                v => *v = Some(b"forged".to_vec()),
            }
            true
        }
        // A signature that is not the subnet's: one hex digit changed.
        1 => {
            let s = &mut page.certificate.signature;
            let flipped = if s.starts_with('0') { "1" } else { "0" };
            s.replace_range(0..1, flipped);
            true
        }
        // A witness that leads elsewhere: a byte of the witness of `r/latest` changed.
        _ => {
            let Some(last) = page.latest_witness.last_mut() else {
                return false;
            };
            *last ^= 1;
            true
        }
    }
}

/// Serves `/api/v1/registry/changes` at `listener` as the NNS node at `upstream` answers
/// it, each page forged ([`forge`]); the count of forged pages served.
fn lying_nns_node(listener: TcpListener, upstream: String) -> Arc<AtomicU64> {
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let http = reqwest::Client::new();
            let app = Router::new().route(
                "/api/v1/registry/changes",
                get(move |Query(q): Query<HashMap<String, String>>| {
                    let (http, upstream, count) = (http.clone(), upstream.clone(), count.clone());
                    async move {
                        let since = q.get("since").cloned().unwrap_or_default();
                        let url = format!("{upstream}/api/v1/registry/changes?since={since}");
                        // The upstream down or not serving pages yet: so is the liar
                        // (a 502 is not a forgery: only forgeries are counted).
                        let r = http.get(url).send().await.map_err(|_| BAD_GATEWAY)?;
                        let body = r.bytes().await.map_err(|_| BAD_GATEWAY)?;
                        let mut page = codec::decode::<RegistryPage>(&body, 1 << 26)
                            .map_err(|_| BAD_GATEWAY)?;
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        if !forge(&mut page, n) {
                            forge(&mut page, n + 1);
                        }
                        Ok::<_, StatusCode>(codec::encode(&page))
                    }
                }),
            );
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    served
}

/// Makes the lying node the only NNS node every `node.toml` names; the URL that was
/// first.
fn name_only(dir: &std::path::Path, liar: &str) -> String {
    let mut upstream = None;
    for entry in std::fs::read_dir(dir.join("nodes")).unwrap() {
        let path = entry.unwrap().path().join("node.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, tail) = text.split_once("nns_urls = [").unwrap();
        let first = tail.split('"').nth(1).unwrap().to_string();
        upstream.get_or_insert(first);
        let (_, rest) = tail.split_once(']').unwrap();
        let text = format!("{head}nns_urls = [\"{liar}\"]{rest}");
        std::fs::write(&path, text).unwrap();
    }
    upstream.unwrap()
}

#[test]
fn the_application_subnet_upgrades_through_the_nns_past_a_lying_nns_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = Net::new(&tests::binaries(), &dir);
    net.prep_with(4, &["--nns-nodes", "4"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let liar = format!("http://{}", listener.local_addr().unwrap());
    let upstream = name_only(&dir, &liar);
    let forged = lying_nns_node(listener, upstream);
    net.run(&["up", "--dir", &net.d]);
    // No node depends on the registry server (a copy for tools that follows the NNS
    // subnet), and one NNS node down changes nothing: the whole upgrade runs with both
    // killed (kill -9).
    let pid = std::fs::read_to_string(dir.join("pids/registry.pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{}", pid.trim())])
        .status()
        .unwrap();
    assert!(killed.success());
    net.kill_node(7);

    let s = net.status();
    let all = nodes(&s).clone();
    assert_eq!(all.len(), 8, "{s}");
    let url = |i: usize| all[i]["replica_url"].as_str().unwrap().to_string();
    let app_subnet = all[0]["subnet_id"].as_str().unwrap().to_string();
    assert!(all[4..].iter().all(|n| n["nns"] == true), "{s}");

    // A value written on 1.0.0, to read back on 2.0.0.
    let user = crypto::ed25519::Ed25519KeyPair::from_seed(&[7; 32]);
    let network = net.replica_status(&url(0)).unwrap().network_id;
    let put = replica::ingress::SignedIngress::sign(
        replica::ingress::Ingress {
            network,
            sender: user.public_key(),
            nonce: 1,
            expiry_ns: replica::now_ns() + 120 * 1_000_000_000,
            operation: replica::ingress::Operation::Put {
                key: "kept".into(),
                value: b"written on 1.0.0".to_vec(),
            },
        },
        &user,
    );
    let code = net.rt.block_on(async {
        net.http
            .post(format!("{}/api/v1/update", url(1)))
            .body(put.encode())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(code.as_u16(), 202);

    // Governance through two NNS nodes, as neurons 0 (proposes) and 1 (adopts).
    let sha = net.package("2.0.0", &dir.join("packages/2.0.0.tar.zst"), true);
    let package_url = format!("{}/2.0.0.tar.zst", s["package_url_base"].as_str().unwrap());
    let adopt = |args: &[&str]| net.adopt_through(&url(5), &url(6), args);
    adopt(&elect_args("2.0.0", &sha, &package_url));
    adopt(&[
        "propose",
        "deploy-version",
        "--subnet",
        &app_subnet,
        "--version",
        "2.0.0",
    ]);
    let s = net.wait("the application subnet on 2.0.0, finalizing", |s| {
        nodes(s)[..4].iter().all(|n| {
            n["running_version"] == "2.0.0"
                && n["finalized_height"].as_u64() > n["cup_height"].as_u64().map(|c| c + 1)
        })
    });
    assert!(
        nodes(&s)[4..7]
            .iter()
            .all(|n| n["running_version"] == "1.0.0"),
        "the NNS subnet stays on 1.0.0: {s}"
    );
    assert_eq!(nodes(&s)[7]["alive"], false, "{s}");
    assert!(
        s["registry_version"].is_null(),
        "the registry server is down: {s}"
    );
    let answer = net.query(&url(2), "kept").unwrap();
    assert_eq!(answer.value.as_deref(), Some("written on 1.0.0"));

    // Every orchestrator asked the liar first, refused what it said, and went on with the
    // NNS nodes its copy names.
    assert!(forged.load(Ordering::SeqCst) >= 8, "forged pages served");
    // The count is the orchestrator process's own: a node that just switched runs a new
    // one, which refuses the liar at its next registry poll; wait for that (bounded).
    for (i, n) in nodes(&s)[..7].iter().enumerate() {
        let url = format!("{}/metrics", n["orchestrator_url"].as_str().unwrap());
        let refused = || -> f64 {
            let metrics = net.rt.block_on(async {
                match net.http.get(&url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            });
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("orchestrator_registry_pages_refused_total "))
                .unwrap_or("0")
                .trim()
                .parse()
                .unwrap_or(0.0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while refused() == 0.0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(refused() > 0.0, "node {i} refused no forged page");
    }
}
