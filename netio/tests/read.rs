//! `read_body` against a real HTTP server that misbehaves: an endless body, a lying
//! length, a trickle, and an honest body.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{Router, body::Body, http::header, response::Response, routing::get};
use futures_util::stream;
use netio::{Limits, ReadError, read_body};
use std::{convert::Infallible, time::Duration};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn endless() -> Response {
    let s = stream::unfold((), |()| async {
        Some((Ok::<_, Infallible>(vec![7u8; 64 * 1024]), ()))
    });
    Response::new(Body::from_stream(s))
}

fn trickle() -> Response {
    let s = stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((Ok::<_, Infallible>(vec![1u8]), ()))
    });
    Response::new(Body::from_stream(s))
}

#[tokio::test]
async fn misbehaving_bodies_stop_at_their_limit() {
    let app = Router::new()
        .route("/endless", get(|| async { endless() }))
        .route("/trickle", get(|| async { trickle() }))
        .route(
            "/declared",
            get(|| async {
                Response::builder()
                    .header(header::CONTENT_LENGTH, "1000000")
                    .body(Body::from(vec![0u8; 1_000_000]))
                    .unwrap()
            }),
        )
        .route("/ok", get(|| async { "hello" }));
    let base = serve(app).await;
    let client = reqwest::Client::new();
    let get = |p: &str| client.get(format!("{base}{p}")).send();

    let limits = Limits::small(1 << 20, Duration::from_secs(10));
    let r = read_body(get("/endless").await.unwrap(), &limits).await;
    assert_eq!(r, Err(ReadError::TooLarge { limit: 1 << 20 }));

    let r = read_body(
        get("/declared").await.unwrap(),
        &Limits::small(1000, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(
        r,
        Err(ReadError::DeclaredTooLarge {
            declared: 1_000_000,
            limit: 1000
        })
    );

    let r = read_body(
        get("/trickle").await.unwrap(),
        &Limits::small(1 << 20, Duration::from_millis(1500)),
    )
    .await;
    assert!(
        matches!(
            r,
            Err(ReadError::Deadline {
                deadline_ms: 1500,
                ..
            })
        ),
        "{r:?}"
    );

    let slow = Limits {
        max_bytes: 1 << 20,
        deadline: Duration::from_secs(60),
        min_bytes_per_s: 100,
        grace: Duration::from_millis(1200),
    };
    let r = read_body(get("/trickle").await.unwrap(), &slow).await;
    assert!(matches!(r, Err(ReadError::TooSlow { .. })), "{r:?}");

    let r = read_body(get("/ok").await.unwrap(), &limits).await;
    assert_eq!(r, Ok(b"hello".to_vec()));
}
