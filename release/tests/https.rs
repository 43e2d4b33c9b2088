//! https package URLs: rustls on ring, against a local https server whose certificate a
//! test CA signed. Trusted only once that CA is given as an extra root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::{DownloadLimits, Downloader};
use std::{sync::Arc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest request head the test server reads.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Standard base64 with padding (the test writes its CA as PEM).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A CA (its PEM) and an https server on 127.0.0.1 serving `body` at any path, with a
/// certificate for 127.0.0.1 that the CA signed.
async fn https_server(body: Vec<u8>) -> (String, u16) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Bounded: the test makes a handful of requests.
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n")
                    && head.len() < MAX_REQUEST_HEAD_BYTES
                {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (pem(ca.der()), port)
}

#[tokio::test]
async fn an_https_url_works_with_its_ca_as_an_extra_root_and_not_without() {
    guard(async {
        let dir = tempfile::tempdir().unwrap();
        let src = FakeRelease::write(&dir.path().join("src"), "2.0.0");
        let (_, body, sha) = src.build(&dir.path().join("out"), "r.tar.gz", "2.0.0");
        let (ca_pem, port) = https_server(body.clone()).await;
        let url = format!("https://127.0.0.1:{port}/r.tar.gz");
        let limits = DownloadLimits::chunked(Duration::from_secs(10), 16 << 20);
        let cache = dir.path().join("cache");

        // Only the compiled-in roots: the test CA is unknown, so the download fails on
        // the certificate, and nothing is kept.
        let plain = Downloader::with_limits(limits).unwrap();
        let err = plain
            .fetch(std::slice::from_ref(&url), 0, &sha, &cache, &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        assert_eq!(list(&cache), Vec::<String>::new());

        // With the CA as an extra root: downloaded and verified over TLS.
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let trusting = Downloader::with_limits(limits)
            .unwrap()
            .with_extra_roots(&ca_file)
            .unwrap();
        let package = trusting
            .fetch(std::slice::from_ref(&url), 0, &sha, &cache, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), body);

        // A file with no certificate in it is refused when it is read, with its name.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = Downloader::with_limits(limits)
            .unwrap()
            .with_extra_roots(&empty)
            .unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
    })
    .await;
}
