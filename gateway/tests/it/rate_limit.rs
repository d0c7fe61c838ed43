//! Per-key rate limits: over the burst → 429 `rate_limited` with `Retry-After`.

use reqwest::Method;

use crate::harness::{Gateway, send};

#[tokio::test]
async fn over_the_burst_is_429_with_retry_after_per_key() {
    let gw = Gateway::builder()
        .env("RAUSKU_RATE_LIMIT_PER_SEC", "1")
        .env("RAUSKU_RATE_LIMIT_BURST", "2")
        .start()
        .await;
    assert_eq!(gw.get("/v1/jobs").await.status, 200);
    assert_eq!(gw.get("/v1/jobs").await.status, 200);
    let r = gw.get("/v1/jobs").await;
    r.assert_error(429, "rate_limited");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");

    // /health is not limited; bad keys are refused before the limiter sees them.
    assert_eq!(send(gw.raw(Method::GET, "/health")).await.status, 200);
    send(gw.req_as("wrong", Method::GET, "/v1/jobs"))
        .await
        .assert_error(401, "unauthorized");

    // After Retry-After the key may call again.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = gw.get("/v1/jobs").await;
    assert_eq!(r.status, 200, "{}", r.text);
}
