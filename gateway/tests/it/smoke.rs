//! `scripts/smoke.sh` (the seed's M1 smoke: idempotency, retry, dead letter, cancel, callback
//! allowlist and delivery) run against the real binary, so the script cannot rot.

use std::process::Command;

use crate::harness::Gateway;

fn run_smoke(gw: &Gateway) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smoke.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("RAUSKU_URL", &gw.base)
        .env("RAUSKU_API_KEY", &gw.key)
        .env("RAUSKU_DATA_DIR", gw.data_dir())
        .env("SMOKE_TIMEOUT", "30")
        .output()
        .expect("bash runs scripts/smoke.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn smoke_script_passes_with_loopback_callbacks() {
    let gw = Gateway::builder()
        .env("RAUSKU_CALLBACK_ALLOWLIST", "127.0.0.1")
        .env("RAUSKU_CALLBACK_ALLOW_PRIVATE", "true")
        .start()
        .await;
    let (ok, text) = run_smoke(&gw);
    assert!(ok, "smoke failed:\n{text}");
    assert!(
        text.contains("ok - callback delivery"),
        "delivery was not checked:\n{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[tokio::test]
async fn smoke_script_fails_loudly_with_a_wrong_key() {
    let mut gw = Gateway::start().await;
    gw.key = "not-a-key".to_string();
    let (ok, text) = run_smoke(&gw);
    assert!(!ok, "smoke passed with a wrong key:\n{text}");
    assert!(text.contains("FAIL"), "{text}");
}
