//! API keys: presence, validity, scopes, revocation, the bootstrap admin key and the `keys`
//! subcommands.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, cli, send, with_json};

#[tokio::test]
async fn missing_or_wrong_key_is_401_and_both_headers_work() {
    let gw = Gateway::start().await;

    let r = send(gw.raw(Method::GET, "/v1/jobs")).await;
    let details = r.assert_error(401, "unauthorized");
    assert!(details.is_object());
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization"),
        "{}",
        r.text
    );

    let r = send(gw.req_as("not-a-key", Method::GET, "/v1/jobs")).await;
    r.assert_error(401, "unauthorized");
    // A key that differs in one character is as wrong as any other.
    let mut almost = gw.key.clone();
    almost.pop();
    almost.push('x');
    send(gw.req_as(&almost, Method::GET, "/v1/jobs"))
        .await
        .assert_error(401, "unauthorized");
    // An empty bearer token is not a key.
    send(
        gw.raw(Method::GET, "/v1/jobs")
            .header("authorization", "Bearer "),
    )
    .await
    .assert_error(401, "unauthorized");

    let r = send(gw.raw(Method::GET, "/v1/jobs").header("x-api-key", &gw.key)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        gw.raw(Method::GET, "/v1/jobs")
            .header("authorization", format!("Bearer {}", gw.key)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Every /v1 route needs the key, including the ones that stream or change things.
    for (method, path) in [
        (Method::POST, "/v1/jobs"),
        (Method::GET, "/v1/job-types"),
        (Method::GET, "/v1/events/stream"),
        (Method::GET, "/v1/runtime"),
        (Method::GET, "/v1/openapi.json"),
        (Method::DELETE, "/v1/keys/x"),
    ] {
        let r = send(gw.raw(method.clone(), path)).await;
        r.assert_error(401, "unauthorized");
    }

    // /health needs no key.
    let r = send(gw.raw(Method::GET, "/health")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "ok");
}

/// Regression: the scope check ran inside the `/v1` nest and saw `/keys`, `/job-types` without
/// the prefix, so a read key could list keys and an operator key could create job types.
#[tokio::test]
async fn scopes_are_enforced_and_revoked_keys_stop_working() {
    let gw = Gateway::start().await;
    let (read_id, read) = gw.create_key("reader", "read").await;
    let (_, operator) = gw.create_key("ops", "operator").await;

    // read: GET works, creating a job does not.
    let r = send(gw.req_as(&read, Method::GET, "/v1/jobs")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = json!({"type": "echo", "input": {"hi": 1}});
    let r = send(with_json(gw.req_as(&read, Method::POST, "/v1/jobs"), &job)).await;
    let details = r.assert_error(403, "forbidden");
    assert_eq!(details["required"], "operator", "{}", r.text);
    assert_eq!(details["scope"], "read", "{}", r.text);
    // Keys are admin-only, even to read.
    send(gw.req_as(&read, Method::GET, "/v1/keys"))
        .await
        .assert_error(403, "forbidden");

    // operator: creates and cancels jobs, but cannot change job types or keys.
    let r = send(with_json(
        gw.req_as(&operator, Method::POST, "/v1/jobs"),
        &job,
    ))
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let spec = json!({"name": "mine", "handler": "echo"});
    let r = send(with_json(
        gw.req_as(&operator, Method::POST, "/v1/job-types"),
        &spec,
    ))
    .await;
    let details = r.assert_error(403, "forbidden");
    assert_eq!(details["required"], "admin", "{}", r.text);
    let r = send(with_json(
        gw.req_as(&operator, Method::POST, "/v1/keys"),
        &json!({"name": "x", "scope": "admin"}),
    ))
    .await;
    r.assert_error(403, "forbidden");
    let r = send(gw.req_as(&operator, Method::GET, "/v1/job-types")).await;
    assert_eq!(r.status, 200, "reading job types is a read: {}", r.text);

    // The key list never shows secrets or their hashes.
    let r = gw.get("/v1/keys").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains(&read) && !r.text.contains(&operator),
        "secrets leaked: {}",
        r.text
    );
    let names: Vec<&str> = r.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&"reader") && names.contains(&"ops"),
        "{names:?}"
    );
    for k in r.json["keys"].as_array().unwrap() {
        assert!(
            k["secret_hash"].as_str().is_none_or(str::is_empty),
            "hash shown: {k}"
        );
    }

    // Revoked: 401 from then on.
    let r = gw.delete(&format!("/v1/keys/{read_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["revoked_at"].is_string(), "{}", r.text);
    send(gw.req_as(&read, Method::GET, "/v1/jobs"))
        .await
        .assert_error(401, "unauthorized");
    gw.delete("/v1/keys/no-such-key")
        .await
        .assert_error(404, "not_found");
    // The operator key is untouched.
    let r = send(gw.req_as(&operator, Method::GET, "/v1/jobs")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn first_start_without_a_key_writes_a_private_admin_key() {
    let mut gw = Gateway::builder().no_api_key().start().await;
    let path = gw.data_dir().join("admin.key");
    let key = std::fs::read_to_string(&path)
        .expect("admin.key written")
        .trim()
        .to_string();
    assert!(!key.is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key mode {mode:o}");
    }
    // Printed once on stdout too.
    assert!(
        gw.output().iter().any(|l| l.contains(&key)),
        "the key is shown at first start"
    );

    gw.key = key.clone();
    let (_, _) = gw.create_key("made-by-bootstrap", "read").await;
    let r = gw.get("/v1/keys").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A second start keeps the key and does not make another one.
    gw.restart().await;
    let again = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(again, key, "admin.key is not rewritten");
    let r = gw.get("/v1/keys").await;
    assert_eq!(
        r.status, 200,
        "the bootstrap key survives a restart: {}",
        r.text
    );
    let admins = r.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["scope"] == "admin")
        .count();
    assert_eq!(admins, 1, "{}", r.text);
}

#[tokio::test]
async fn keys_subcommands_create_list_and_revoke_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    let out = cli(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "read",
            "--data-dir",
            data_arg,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "keys create: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let id = stdout
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {stdout:?}"))
        .to_string();

    // A stored key exists, so the first start makes no admin key; the read key works.
    let mut gw = Gateway::builder().no_api_key().dir(dir).start().await;
    assert!(
        !gw.data_dir().join("admin.key").exists(),
        "no bootstrap key when a key exists"
    );
    gw.key = secret.clone();
    let r = gw.get("/v1/jobs").await;
    assert_eq!(r.status, 200, "{}", r.text);
    gw.post("/v1/jobs", json!({"type": "echo"}))
        .await
        .assert_error(403, "forbidden");

    let status = gw.sigterm(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");

    let out = cli(gw.root(), &["keys", "list", "--data-dir", data_arg]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "keys list: {listing}");
    let line = listing
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{id} not in {listing}"));
    assert!(
        line.contains("read") && line.trim_end().ends_with(" x"),
        "{line}"
    );
    assert!(!listing.contains(&secret), "keys list shows no secrets");

    let out = cli(gw.root(), &["keys", "revoke", &id, "--data-dir", data_arg]);
    assert!(
        out.status.success(),
        "keys revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let out = cli(
        gw.root(),
        &["keys", "revoke", "nope", "--data-dir", data_arg],
    );
    assert!(!out.status.success(), "revoking an unknown key fails");

    gw.restart().await;
    gw.get("/v1/jobs").await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn keys_subcommands_refuse_while_the_gateway_runs() {
    let gw = Gateway::start().await;
    let data = gw.data_dir();
    let root = gw.root().to_path_buf();
    // Run it off the async runtime, with a deadline: it must fail, not wait for the lock.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            cli(
                &root,
                &["keys", "list", "--data-dir", data.to_str().unwrap()],
            )
        }),
    )
    .await
    .expect("`keys list` does not hang on a store in use")
    .unwrap();
    assert!(!out.status.success(), "the store is in use");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rauskuclaw:"), "a one-line error: {stderr}");
    // The running gateway is unaffected.
    assert_eq!(gw.get("/v1/jobs").await.status, 200);
}
