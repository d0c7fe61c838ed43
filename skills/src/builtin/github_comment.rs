//! `github.comment`: posts a comment on an issue or pull request, at most once per `reply_id`.
//!
//! Input: `{repo: "owner/name", number, body, reply_id}`. The posted body ends with the marker
//! `<!-- rausku:reply:<reply_id> -->`. Before posting, every attempt lists the issue's comments
//! (`GET /repos/{owner}/{repo}/issues/{number}/comments?per_page=100`, following
//! `Link: rel="next"`) and, if one already carries the marker, succeeds without posting: an
//! attempt whose POST reached GitHub but whose answer was lost (a timeout, a 502) is not posted
//! twice by the retry. Output: `{comment_id, url, already_posted}`.
//!
//! The marker also tells the GitHub channel that a comment is the bot's own, so a reply is never
//! read as a command (the loop guard).
//!
//! The API URL and token are trusted operator configuration (`RAUSKU_GITHUB_API_URL`,
//! `RAUSKU_GITHUB_TOKEN`): calls do not go through the `http.request` allowlist, the URL may be
//! loopback (tests, GitHub Enterprise on a private network). The token is only ever sent to that
//! origin: pagination links pointing elsewhere are refused, and redirects are not followed.
//!
//! Failures: 5xx, 429, 408, GitHub's rate limits (a 403 that says so) and network errors are
//! retryable; any other 4xx fails the job at once with GitHub's message.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LINK};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};
use store::JobDefaults;

use super::{kind, merge_config, object, req_u64};
use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};
use crate::net::{USER_AGENT, read_capped};

/// The longest comment GitHub accepts, in characters (the marker included).
pub const MAX_BODY_CHARS: usize = 65_536;
/// The longest `reply_id`.
pub const MAX_REPLY_ID_LEN: usize = 128;
/// How many pages of 100 comments are searched for the marker before posting anyway.
pub const MAX_PAGES: usize = 100;
/// The timeout of one API request (the job's own timeout bounds the whole attempt).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest API response read.
const MAX_RESPONSE_BYTES: usize = 8 << 20;
/// How much of an error body goes into a failure message when it is not GitHub's JSON.
const ERROR_BODY_SNIPPET: usize = 300;
const FIELDS: &[&str] = &["repo", "number", "body", "reply_id"];

/// Where the GitHub API is and how to authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub struct GithubApi {
    /// `RAUSKU_GITHUB_API_URL`, e.g. `https://api.github.com` (no trailing slash needed).
    pub api_url: String,
    /// `RAUSKU_GITHUB_TOKEN`: a token that may write issue comments.
    pub token: String,
}

impl std::fmt::Debug for GithubApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApi")
            .field("api_url", &self.api_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The marker a reply with this id carries.
pub fn reply_marker(reply_id: &str) -> String {
    format!("<!-- rausku:reply:{reply_id} -->")
}

/// The `github.comment` handler.
#[derive(Clone)]
pub struct GithubComment {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: no token is configured; the job type is seeded disabled and attempts fail.
    api: Option<GithubApi>,
    /// Built on first use and shared by every attempt (it pools connections).
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// A validated input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comment {
    owner: String,
    repo: String,
    number: u64,
    body: String,
    reply_id: String,
}

impl GithubComment {
    pub fn new(api: Option<GithubApi>) -> Self {
        GithubComment {
            inner: Arc::new(Inner {
                api,
                client: OnceLock::new(),
            }),
        }
    }
}

fn parse(config: &Value, input: &Value) -> Result<Comment, InputError> {
    let merged = merge_config(config, input, "", false)?;
    let obj = object(&merged, FIELDS)?;
    let text = |key: &str| -> Result<&str, InputError> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(InputError::new(
                format!("input.{key}"),
                "required; give a string",
            )),
            Some(other) => Err(InputError::new(
                format!("input.{key}"),
                format!("expected a string, got {}", kind(other)),
            )),
        }
    };
    let full = text("repo")?;
    let (owner, repo) = full
        .split_once('/')
        .filter(|(o, r)| valid_name(o, 39) && valid_name(r, 100))
        .ok_or_else(|| {
            InputError::new(
                "input.repo",
                format!(
                    "{full:?} is not `owner/name` (letters, digits, `-`, `_` and `.`), e.g. \
                     rauskuclaw/rauskuclaw"
                ),
            )
        })?;
    let number = req_u64(obj, "number", u64::from(u32::MAX))?;
    if number == 0 {
        return Err(InputError::new(
            "input.number",
            "issue and pull request numbers start at 1",
        ));
    }
    let reply_id = text("reply_id")?;
    let id_ok = !reply_id.is_empty()
        && reply_id.len() <= MAX_REPLY_ID_LEN
        && reply_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !id_ok {
        return Err(InputError::new(
            "input.reply_id",
            format!(
                "use 1 to {MAX_REPLY_ID_LEN} characters of letters, digits, `-`, `_`, `.` and \
                 `:` (e.g. the job or run id); it marks the comment so a retry never posts it \
                 twice"
            ),
        ));
    }
    let body = text("body")?;
    if body.trim().is_empty() {
        return Err(InputError::new("input.body", "must not be empty"));
    }
    let room = MAX_BODY_CHARS - reply_marker(reply_id).chars().count() - 2;
    if body.chars().count() > room {
        return Err(InputError::new(
            "input.body",
            format!("is longer than {room} characters, the most GitHub accepts with the marker"),
        ));
    }
    Ok(Comment {
        owner: owner.to_string(),
        repo: repo.to_string(),
        number,
        body: body.to_string(),
        reply_id: reply_id.to_string(),
    })
}

/// A GitHub account or repository name: 1 to `max` of `[A-Za-z0-9._-]`, not `.` or `..`.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Inner {
    fn client(&self) -> Result<reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(REQUEST_TIMEOUT)
                    .connect_timeout(Duration::from_secs(10))
                    .user_agent(USER_AGENT)
                    .build()
                    .map_err(|e| {
                        tracing::error!(error = %e, "could not build the github.comment client");
                        format!("could not build the HTTP client: {e}")
                    })
            })
            .clone()
    }

    async fn run(&self, ctx: JobContext, input: Value) -> AttemptOutcome {
        let comment = match parse(&ctx.config, &input) {
            Ok(c) => c,
            Err(e) => return AttemptOutcome::fatal(e.to_string()),
        };
        let Some(api) = &self.api else {
            return AttemptOutcome::fatal(
                "github.comment needs a GitHub token: set RAUSKU_GITHUB_TOKEN (and \
                 RAUSKU_GITHUB_API_URL for GitHub Enterprise) and restart the gateway",
            );
        };
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return AttemptOutcome::fatal(e),
        };
        let base = api.api_url.trim_end_matches('/');
        let comments_url = format!(
            "{base}/repos/{}/{}/issues/{}/comments",
            comment.owner, comment.repo, comment.number
        );
        let origin = match Url::parse(&comments_url) {
            Ok(u) => u.origin(),
            Err(e) => {
                return AttemptOutcome::fatal(format!(
                    "RAUSKU_GITHUB_API_URL {base:?} does not make a valid URL ({e}); use e.g. \
                     https://api.github.com"
                ));
            }
        };
        let call = Call {
            client: &client,
            token: &api.token,
        };
        let marker = reply_marker(&comment.reply_id);
        let target = format!("{}/{}#{}", comment.owner, comment.repo, comment.number);

        // Already posted by an earlier attempt?
        let mut next = Some(format!("{comments_url}?per_page=100"));
        let mut pages = 0;
        while let Some(url) = next.take() {
            if pages == MAX_PAGES {
                ctx.warn(format!(
                    "{target} has more than {} comments; stopped looking for an earlier post \
                     of reply {} and posting",
                    MAX_PAGES * 100,
                    comment.reply_id
                ));
                break;
            }
            pages += 1;
            let (headers, page) = match call.send(reqwest::Method::GET, &url, None).await {
                Ok(ok) => ok,
                Err(failure) => return failure.into_outcome("listing the comments of", &target),
            };
            let Some(items) = page.as_array() else {
                return AttemptOutcome::failed(format!(
                    "listing the comments of {target}: expected a JSON array, got {}",
                    kind(&page)
                ));
            };
            if let Some(found) = items.iter().find(|c| {
                c.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.contains(&marker))
            }) {
                ctx.info(format!(
                    "reply {} is already on {target}; not posting it again",
                    comment.reply_id
                ));
                return AttemptOutcome::Succeeded(output(found, true));
            }
            next = match next_link(&headers) {
                Some(link) => match Url::parse(&link) {
                    Ok(u) if u.origin() == origin => Some(link),
                    _ => {
                        return AttemptOutcome::fatal(format!(
                            "listing the comments of {target}: the next page is at {link:?}, \
                             outside RAUSKU_GITHUB_API_URL; the token is not sent there"
                        ));
                    }
                },
                None => None,
            };
        }

        let body = json!({ "body": format!("{}\n\n{marker}", comment.body) });
        match call
            .send(reqwest::Method::POST, &comments_url, Some(&body))
            .await
        {
            Ok((_, created)) => {
                ctx.info(format!("posted reply {} on {target}", comment.reply_id));
                AttemptOutcome::Succeeded(output(&created, false))
            }
            Err(failure) => failure.into_outcome("posting a comment on", &target),
        }
    }
}

/// `{comment_id, url, already_posted}` from a GitHub comment object.
fn output(comment: &Value, already_posted: bool) -> Value {
    let mut out = Map::new();
    out.insert(
        "comment_id".into(),
        comment.get("id").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "url".into(),
        comment.get("html_url").cloned().unwrap_or(Value::Null),
    );
    out.insert("already_posted".into(), Value::Bool(already_posted));
    Value::Object(out)
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let mut pieces = part.split(';');
            let url = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            });
            let url = url.strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| url.to_string())
        })
}

/// Authenticated requests to the API.
struct Call<'a> {
    client: &'a reqwest::Client,
    token: &'a str,
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// No response (connect error, timeout, body cut off).
    Network(String),
    /// A response that is not 2xx.
    Status {
        status: StatusCode,
        message: String,
        rate_limited: bool,
    },
    /// A 2xx whose body is not JSON.
    Undecodable(String),
}

impl Failure {
    fn into_outcome(self, doing: &str, target: &str) -> AttemptOutcome {
        match self {
            Failure::Network(e) => AttemptOutcome::failed(format!("{doing} {target}: {e}")),
            Failure::Undecodable(e) => {
                AttemptOutcome::failed(format!("{doing} {target}: the response is not JSON ({e})"))
            }
            Failure::Status {
                status,
                message,
                rate_limited,
            } => {
                let hint = match status.as_u16() {
                    _ if rate_limited => "; GitHub's rate limit, will retry",
                    401 => "; check RAUSKU_GITHUB_TOKEN (missing, expired or revoked)",
                    403 => "; the token may not write issue comments on this repository",
                    404 => "; the repository or issue does not exist, or the token cannot see it",
                    _ => "",
                };
                let error = format!("{doing} {target}: GitHub answered {status}: {message}{hint}");
                let retryable = rate_limited
                    || status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                AttemptOutcome::Failed { error, retryable }
            }
        }
    }
}

impl Call<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        json: Option<&Value>,
    ) -> Result<(HeaderMap, Value), Failure> {
        let mut rb = self
            .client
            .request(method, url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(
                ACCEPT,
                HeaderValue::from_static("application/vnd.github+json"),
            )
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(body) = json {
            rb = rb
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.to_string());
        }
        let resp = rb.send().await.map_err(|e| Failure::Network(chain(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let (bytes, _) = read_capped(resp, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| Failure::Network(format!("reading the response failed: {}", chain(&e))))?;
        if !status.is_success() {
            let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
            let message = parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let snippet =
                        String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_SNIPPET)]);
                    if snippet.trim().is_empty() {
                        "(no message)".to_string()
                    } else {
                        snippet.trim().to_string()
                    }
                });
            let exhausted = headers
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes() == b"0");
            let rate_limited = (status == StatusCode::FORBIDDEN
                || status == StatusCode::TOO_MANY_REQUESTS)
                && (exhausted
                    || headers.contains_key("retry-after")
                    || message.to_ascii_lowercase().contains("rate limit"));
            return Err(Failure::Status {
                status,
                message,
                rate_limited,
            });
        }
        let value =
            serde_json::from_slice(&bytes).map_err(|e| Failure::Undecodable(e.to_string()))?;
        Ok((headers, value))
    }
}

/// `err` and its sources, joined by `: `.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
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

impl Handler for GithubComment {
    fn name(&self) -> &'static str {
        "github.comment"
    }

    fn description(&self) -> &'static str {
        "Posts a comment on a GitHub issue or pull request, at most once per reply_id \
         (RAUSKU_GITHUB_TOKEN); returns {comment_id, url, already_posted}."
    }

    fn defaults(&self) -> JobDefaults {
        JobDefaults {
            max_attempts: 5,
            timeout_ms: 120_000,
            // GitHub asks integrations to create content serially.
            concurrency: Some(1),
        }
    }

    fn enabled_by_default(&self) -> bool {
        self.inner.api.is_some()
    }

    fn validate(&self, config: &Value, input: &Value) -> Result<(), InputError> {
        parse(config, input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.run(ctx, input).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Value {
        json!({"repo": "octo-org/hello.world", "number": 12, "body": "Done.", "reply_id": "run-1:step.2"})
    }

    #[test]
    fn parses_a_valid_input() {
        let c = parse(&Value::Null, &input()).unwrap();
        assert_eq!(
            c,
            Comment {
                owner: "octo-org".into(),
                repo: "hello.world".into(),
                number: 12,
                body: "Done.".into(),
                reply_id: "run-1:step.2".into(),
            }
        );
    }

    #[test]
    fn validation_names_the_field() {
        let with = |key: &str, value: Value| {
            let mut i = input();
            i[key] = value;
            i
        };
        let cases = [
            (with("repo", json!("no-slash")), "input.repo"),
            (with("repo", json!("a/b/c")), "input.repo"),
            (with("repo", json!("a/..")), "input.repo"),
            (with("repo", json!("/b")), "input.repo"),
            (with("repo", json!("a b/c")), "input.repo"),
            (with("repo", json!(5)), "input.repo"),
            (with("number", json!(0)), "input.number"),
            (with("number", json!(-1)), "input.number"),
            (with("number", json!("12")), "input.number"),
            (with("body", json!("  ")), "input.body"),
            (
                with("body", json!("x".repeat(MAX_BODY_CHARS))),
                "input.body",
            ),
            (with("reply_id", json!("")), "input.reply_id"),
            (with("reply_id", json!("a -->")), "input.reply_id"),
            (with("reply_id", json!("x".repeat(129))), "input.reply_id"),
            (with("extra", json!(1)), "input.extra"),
            (
                json!({"number": 1, "body": "x", "reply_id": "r"}),
                "input.repo",
            ),
        ];
        for (input, field) in cases {
            let err = parse(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[test]
    fn config_can_pin_the_repository() {
        let config = json!({"repo": "o/r"});
        let c = parse(&config, &json!({"number": 1, "body": "x", "reply_id": "r"})).unwrap();
        assert_eq!((c.owner.as_str(), c.repo.as_str()), ("o", "r"));
        let err = parse(&config, &input()).unwrap_err();
        assert_eq!(err.field, "input.repo");
    }

    #[test]
    fn next_link_is_found() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        h.insert(
            LINK,
            HeaderValue::from_static("<https://api.github.com/x?page=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn status_classification() {
        let status = |code: u16, rate_limited: bool| Failure::Status {
            status: StatusCode::from_u16(code).unwrap(),
            message: "Not Found".into(),
            rate_limited,
        };
        let cases = [
            (status(500, false), true),
            (status(502, false), true),
            (status(429, false), true),
            (status(408, false), true),
            (status(403, true), true),
            (status(403, false), false),
            (status(404, false), false),
            (status(422, false), false),
            (status(401, false), false),
        ];
        for (failure, want) in cases {
            let shown = format!("{failure:?}");
            match failure.into_outcome("posting a comment on", "o/r#1") {
                AttemptOutcome::Failed { error, retryable } => {
                    assert_eq!(retryable, want, "{shown}: {error}");
                    assert!(
                        error.contains("Not Found") && error.contains("o/r#1"),
                        "{error}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        match Failure::Network("connection refused".into()).into_outcome("posting", "o/r#1") {
            AttemptOutcome::Failed { retryable, .. } => assert!(retryable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let api = GithubApi {
            api_url: "https://api.github.com".into(),
            token: "ghp_secret".into(),
        };
        assert!(!format!("{api:?}").contains("ghp_secret"));
    }
}
