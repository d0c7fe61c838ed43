//! `http.request`: one outbound HTTP request to an allowlisted host.
//!
//! Input: `{method? (GET), url, headers? {name: value}, body? (string) | json? (any),
//! timeout_ms?, max_response_bytes?, fail_on_status? (true)}`. Output: `{status, headers, body,
//! truncated}`, where `body` is the parsed JSON when the response says it is JSON (and was read
//! whole), else text.
//!
//! A job type over this handler may fix fields in its `config` (e.g. `{"url": ..., "method":
//! "POST", "headers": {...}}`): those are merged into every input, and an input that sets a fixed
//! field again is refused.
//!
//! Every request goes through the [`NetPolicy`]: the URL is checked when the input is validated
//! (so a bad host is a 400, not a failed job) and again at connect time by the guarded resolver;
//! redirects are not followed; the response body is capped.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{kind, object, opt_u64};
use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};
use crate::net::{NetPolicy, net_error_in, read_capped};

/// The response cap when the input does not set `max_response_bytes`: 1 MiB.
pub const DEFAULT_RESPONSE_BYTES: usize = 1 << 20;
/// The largest response cap anyone may configure: 10 MiB.
pub const MAX_RESPONSE_BYTES_LIMIT: usize = 10 << 20;
/// The longest request timeout an input may ask for: 24 hours.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// How much of an error response's body goes into the failure message.
const ERROR_BODY_SNIPPET: usize = 300;

const FIELDS: &[&str] = &[
    "method",
    "url",
    "headers",
    "body",
    "json",
    "timeout_ms",
    "max_response_bytes",
    "fail_on_status",
];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Headers the client sets itself; letting an input set them would break or confuse requests.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// The `http.request` handler.
#[derive(Clone)]
pub struct HttpRequest {
    inner: Arc<Inner>,
}

struct Inner {
    /// Which hosts may be called.
    policy: NetPolicy,
    /// The largest `max_response_bytes` an input may ask for.
    max_response_bytes: usize,
    /// Built on first use and shared by every attempt (it pools connections). An error here
    /// (the TLS backend could not be set up) fails attempts instead of panicking.
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// A validated request.
#[derive(Debug)]
struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout_ms: Option<u64>,
    max_bytes: usize,
    fail_on_status: bool,
}

impl HttpRequest {
    /// A handler calling hosts allowed by `policy`, letting inputs ask for response bodies of
    /// up to `max_response_bytes` (clamped to [`MAX_RESPONSE_BYTES_LIMIT`]).
    pub fn new(policy: NetPolicy, max_response_bytes: usize) -> Self {
        HttpRequest {
            inner: Arc::new(Inner {
                policy,
                max_response_bytes: max_response_bytes.clamp(1, MAX_RESPONSE_BYTES_LIMIT),
                client: OnceLock::new(),
            }),
        }
    }
}

impl Inner {
    fn client(&self) -> Result<reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                self.policy.client(Duration::from_secs(30)).map_err(|e| {
                    tracing::error!(error = %e, "could not build the http.request client");
                    e.to_string()
                })
            })
            .clone()
    }

    fn parse(&self, config: &Value, input: &Value) -> Result<Request, InputError> {
        let merged = super::merge_config(config, input, "headers", true)?;
        let obj = object(&merged, FIELDS)?;

        let method = match obj.get("method") {
            None | Some(Value::Null) => Method::GET,
            Some(Value::String(m)) if METHODS.contains(&m.to_ascii_uppercase().as_str()) => {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|e| InputError::new("input.method", e.to_string()))?
            }
            Some(other) => {
                return Err(InputError::new(
                    "input.method",
                    format!("expected one of {}, got {other}", METHODS.join(", ")),
                ));
            }
        };

        let url = match obj.get("url") {
            Some(Value::String(url)) => self
                .policy
                .check_url(url)
                .map_err(|e| InputError::new("input.url", e.to_string()))?,
            None | Some(Value::Null) => {
                return Err(InputError::new(
                    "input.url",
                    "required; give an http(s) URL",
                ));
            }
            Some(other) => {
                return Err(InputError::new(
                    "input.url",
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        };

        let mut headers = HeaderMap::new();
        match obj.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let field = format!("input.headers.{name}");
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| InputError::new(&field, "not a valid header name"))?;
                    if RESERVED_HEADERS.contains(&name.as_str()) {
                        return Err(InputError::new(&field, "set by the client; leave it out"));
                    }
                    let value = value
                        .as_str()
                        .ok_or_else(|| {
                            InputError::new(
                                &field,
                                format!("expected a string, got {}", kind(value)),
                            )
                        })
                        .and_then(|v| {
                            HeaderValue::from_str(v)
                                .map_err(|_| InputError::new(&field, "not a valid header value"))
                        })?;
                    headers.append(name, value);
                }
            }
            Some(other) => {
                return Err(InputError::new(
                    "input.headers",
                    format!("expected an object of strings, got {}", kind(other)),
                ));
            }
        }

        let body = match (obj.get("body"), obj.get("json")) {
            (Some(b), Some(j)) if !b.is_null() && !j.is_null() => {
                return Err(InputError::new(
                    "input.json",
                    "give either `body` or `json`, not both",
                ));
            }
            (Some(Value::String(text)), _) => Some(text.clone().into_bytes()),
            (Some(other), _) if !other.is_null() => {
                return Err(InputError::new(
                    "input.body",
                    format!(
                        "expected a string, got {}; use `json` to send JSON",
                        kind(other)
                    ),
                ));
            }
            (_, Some(value)) if !value.is_null() => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(value.to_string().into_bytes())
            }
            _ => None,
        };

        let timeout_ms = opt_u64(obj, "timeout_ms", MAX_TIMEOUT_MS)?;
        if timeout_ms == Some(0) {
            return Err(InputError::new("input.timeout_ms", "must be at least 1"));
        }
        let max_bytes = match opt_u64(obj, "max_response_bytes", self.max_response_bytes as u64)? {
            Some(0) => {
                return Err(InputError::new(
                    "input.max_response_bytes",
                    "must be at least 1",
                ));
            }
            Some(n) => usize::try_from(n).unwrap_or(self.max_response_bytes),
            None => DEFAULT_RESPONSE_BYTES.min(self.max_response_bytes),
        };
        let fail_on_status = match obj.get("fail_on_status") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(InputError::new(
                    "input.fail_on_status",
                    format!("expected a boolean, got {}", kind(other)),
                ));
            }
        };

        Ok(Request {
            method,
            url,
            headers,
            body,
            timeout_ms,
            max_bytes,
            fail_on_status,
        })
    }

    async fn run(&self, ctx: JobContext, input: Value) -> AttemptOutcome {
        let req = match self.parse(&ctx.config, &input) {
            Ok(req) => req,
            Err(e) => return AttemptOutcome::fatal(e.to_string()),
        };
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => return AttemptOutcome::fatal(e),
        };
        let line = format!("{} {}", req.method, redacted(&req.url));
        let timeout_ms = req.timeout_ms.unwrap_or(ctx.timeout_ms).max(1);
        ctx.info(line.clone());

        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers)
            .timeout(Duration::from_millis(timeout_ms));
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let resp = match builder.send().await {
            Ok(resp) => resp,
            Err(e) => return send_failure(&line, &e, timeout_ms),
        };

        let status = resp.status();
        let headers = headers_json(resp.headers());
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let (body, truncated) = match read_capped(resp, req.max_bytes).await {
            Ok(read) => read,
            Err(e) => {
                return AttemptOutcome::failed(format!(
                    "{line}: reading the response body failed: {}",
                    error_chain(&e)
                ));
            }
        };
        ctx.info(format!(
            "{line} -> {status}, {} bytes{}",
            body.len(),
            if truncated { " (truncated)" } else { "" }
        ));

        if !status.is_success() && req.fail_on_status {
            return status_failure(&line, status, location.as_deref(), &body);
        }
        let body = match (is_json && !truncated).then(|| serde_json::from_slice::<Value>(&body)) {
            Some(Ok(value)) => value,
            _ => Value::String(String::from_utf8_lossy(&body).into_owned()),
        };
        AttemptOutcome::Succeeded(json!({
            "status": status.as_u16(),
            "headers": headers,
            "body": body,
            "truncated": truncated,
        }))
    }
}

impl Handler for HttpRequest {
    fn name(&self) -> &'static str {
        "http.request"
    }

    fn description(&self) -> &'static str {
        "Makes an HTTP request to an allowlisted host (RAUSKU_HTTP_ALLOWLIST) and returns \
         {status, headers, body, truncated}."
    }

    fn validate(&self, config: &Value, input: &Value) -> Result<(), InputError> {
        self.inner.parse(config, input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(ctx, input).await })
    }
}

/// The failure for a response whose status is not 2xx: 5xx, 429 and 408 may pass if retried;
/// anything else (4xx, a redirect) will not.
fn status_failure(
    line: &str,
    status: StatusCode,
    location: Option<&str>,
    body: &[u8],
) -> AttemptOutcome {
    let mut error = format!("{line} returned {status}");
    if status.is_redirection() {
        error.push_str(&format!(
            "; redirects are not followed, call the final URL directly (Location: {})",
            location.unwrap_or("none")
        ));
    }
    let snippet = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SNIPPET)]);
    if !snippet.trim().is_empty() {
        error.push_str(&format!("; body: {}", snippet.trim()));
    }
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    AttemptOutcome::Failed { error, retryable }
}

/// The failure for a request that got no response. A refusal by the network policy is final;
/// timeouts and connection problems may pass if retried.
fn send_failure(line: &str, err: &reqwest::Error, timeout_ms: u64) -> AttemptOutcome {
    if let Some(net) = net_error_in(err) {
        return AttemptOutcome::fatal(format!("{line}: {net}"));
    }
    if err.is_builder() {
        return AttemptOutcome::fatal(format!("{line}: {}", error_chain(err)));
    }
    if err.is_timeout() {
        return AttemptOutcome::failed(format!("{line}: timed out after {timeout_ms} ms"));
    }
    AttemptOutcome::failed(format!("{line}: {}", error_chain(err)))
}

/// `err` and its sources, joined by `: ` (reqwest's own message alone says little).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = e.source();
    }
    out
}

/// The URL without user name and password, for logs and messages.
fn redacted(url: &Url) -> Url {
    let mut url = url.clone();
    // Both only fail for URLs that cannot have credentials, which then have none to remove.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// Response headers as `{name: value}`; repeated headers are joined with `, `.
fn headers_json(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> HttpRequest {
        let policy = NetPolicy {
            allowlist: vec!["api.example.com".into()],
            allow_private: false,
        };
        HttpRequest::new(policy, 2 << 20)
    }

    #[test]
    fn validation_names_the_field() {
        let h = handler();
        let cases = [
            (json!({}), "input.url"),
            (json!({"url": 5}), "input.url"),
            (json!({"url": "ftp://api.example.com/"}), "input.url"),
            (json!({"url": "https://evil.com/"}), "input.url"),
            (json!({"url": "http://127.0.0.1/"}), "input.url"),
            (
                json!({"url": "https://api.example.com", "method": "BREW"}),
                "input.method",
            ),
            (
                json!({"url": "https://api.example.com", "headers": []}),
                "input.headers",
            ),
            (
                json!({"url": "https://api.example.com", "headers": {"x-a": 1}}),
                "input.headers.x-a",
            ),
            (
                json!({"url": "https://api.example.com", "headers": {"bad name": "v"}}),
                "input.headers.bad name",
            ),
            (
                json!({"url": "https://api.example.com", "headers": {"Host": "x"}}),
                "input.headers.Host",
            ),
            (
                json!({"url": "https://api.example.com", "body": "a", "json": {}}),
                "input.json",
            ),
            (
                json!({"url": "https://api.example.com", "body": {"a": 1}}),
                "input.body",
            ),
            (
                json!({"url": "https://api.example.com", "timeout_ms": 0}),
                "input.timeout_ms",
            ),
            (
                json!({"url": "https://api.example.com", "max_response_bytes": 3 << 20}),
                "input.max_response_bytes",
            ),
            (
                json!({"url": "https://api.example.com", "fail_on_status": "no"}),
                "input.fail_on_status",
            ),
            (
                json!({"url": "https://api.example.com", "uri": "x"}),
                "input.uri",
            ),
        ];
        for (input, field) in cases {
            let err = h.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[test]
    fn refused_host_names_the_allowlist() {
        let err = handler()
            .validate(&Value::Null, &json!({"url": "https://evil.com/"}))
            .unwrap_err();
        assert!(
            err.message
                .contains("host `evil.com` is not on the allowlist"),
            "{err}"
        );
    }

    #[test]
    fn parses_a_full_request() {
        let input = json!({
            "method": "post",
            "url": "https://API.example.com/hook?x=1",
            "headers": {"X-Token": "t"},
            "json": {"a": 1},
            "timeout_ms": 5000,
            "max_response_bytes": 2048,
            "fail_on_status": false,
        });
        let req = handler().inner.parse(&Value::Null, &input).unwrap();
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.url.as_str(), "https://api.example.com/hook?x=1");
        assert_eq!(req.headers["x-token"], "t");
        assert_eq!(req.headers[CONTENT_TYPE], "application/json");
        assert_eq!(req.body.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(req.timeout_ms, Some(5000));
        assert_eq!(req.max_bytes, 2048);
        assert!(!req.fail_on_status);

        let req = handler()
            .inner
            .parse(&Value::Null, &json!({"url": "https://api.example.com"}))
            .unwrap();
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.max_bytes, DEFAULT_RESPONSE_BYTES);
        assert!(req.fail_on_status);
    }

    #[test]
    fn config_fixes_fields() {
        let config = json!({"url": "https://api.example.com/deploy", "method": "POST", "headers": {"x-fixed": "1"}});
        let req = handler()
            .inner
            .parse(
                &config,
                &json!({"json": {"ref": "main"}, "headers": {"x-extra": "2"}}),
            )
            .unwrap();
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.url.path(), "/deploy");
        assert_eq!(req.headers["x-fixed"], "1");
        assert_eq!(req.headers["x-extra"], "2");

        let h = handler();
        let err = h
            .validate(&config, &json!({"url": "https://api.example.com/other"}))
            .unwrap_err();
        assert_eq!(err.field, "input.url");
        let err = h
            .validate(&config, &json!({"headers": {"X-Fixed": "2"}}))
            .unwrap_err();
        assert_eq!(err.field, "input.headers.x-fixed");
        let err = h.validate(&json!("nope"), &json!({})).unwrap_err();
        assert_eq!(err.field, "config");
    }

    #[test]
    fn status_classification() {
        let cases: &[(u16, bool)] = &[
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (404, false),
            (400, false),
            (302, false),
        ];
        for &(code, retryable) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            match status_failure("GET http://x/", status, Some("http://y/"), b"oops") {
                AttemptOutcome::Failed {
                    retryable: r,
                    error,
                } => {
                    assert_eq!(r, retryable, "{code}: {error}");
                    assert!(
                        error.contains(&code.to_string()) && error.contains("oops"),
                        "{error}"
                    );
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_not_logged() {
        let url = Url::parse("https://user:secret@api.example.com/a?b=c").unwrap();
        assert_eq!(redacted(&url).as_str(), "https://api.example.com/a?b=c");
    }
}
