//! `github.comment` against a mock GitHub API (axum on 127.0.0.1): posted once, retries never
//! post twice, the marker is searched on every page, 4xx is final.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use skills::builtin::github_comment::reply_marker;
use skills::builtin::{GithubApi, GithubComment};
use skills::{AttemptOutcome, Handler, JobContext, JobLog};
use store::{JobId, LogLevel};

const TOKEN: &str = "ghp_test_token";

/// What the mock GitHub holds and saw.
#[derive(Default)]
struct Mock {
    /// `http://127.0.0.1:PORT`, for `Link` headers.
    base: Mutex<String>,
    /// Comments of the one issue the mock serves.
    comments: Mutex<Vec<Value>>,
    /// Answers for the next POSTs: `(status, store the comment anyway)`.
    post_failures: Mutex<VecDeque<(u16, bool)>>,
    /// POST requests received (failed ones included).
    posts: Mutex<usize>,
    /// GET requests received.
    lists: Mutex<usize>,
    /// The headers of every request.
    headers: Mutex<Vec<HeaderMap>>,
    /// Comments per page, whatever `per_page` says (to exercise pagination).
    page_size: Mutex<usize>,
    /// Send a `Link: rel="next"` to another origin.
    foreign_link: Mutex<bool>,
}

type Shared = Arc<Mock>;

async fn list(
    State(m): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    m.headers.lock().unwrap().push(headers);
    *m.lists.lock().unwrap() += 1;
    if repo == "missing" {
        return not_found();
    }
    assert_eq!(q.get("per_page").map(String::as_str), Some("100"));
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let size = (*m.page_size.lock().unwrap()).max(1);
    let all = m.comments.lock().unwrap().clone();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    let mut resp = Json(items).into_response();
    let more = page * size < all.len();
    if *m.foreign_link.lock().unwrap() {
        let link = "<http://127.0.0.2:9/evil?page=2>; rel=\"next\"".to_string();
        resp.headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    } else if more {
        let base = m.base.lock().unwrap().clone();
        let link = format!(
            "<{base}/repos/{owner}/{repo}/issues/{number}/comments?per_page=100&page={}>; rel=\"next\", <{base}/x?page=99>; rel=\"last\"",
            page + 1
        );
        resp.headers_mut()
            .insert(header::LINK, link.parse().unwrap());
    }
    resp
}

async fn create(
    State(m): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    m.headers.lock().unwrap().push(headers);
    *m.posts.lock().unwrap() += 1;
    if repo == "missing" {
        return not_found();
    }
    let failure = m.post_failures.lock().unwrap().pop_front();
    let store = |m: &Mock| {
        let mut comments = m.comments.lock().unwrap();
        let id = 1000 + comments.len() as u64;
        let comment = json!({
            "id": id,
            "body": body["body"],
            "html_url": format!("https://github.com/{owner}/{repo}/issues/{number}#issuecomment-{id}"),
            "user": {"login": "rausku-bot"},
        });
        comments.push(comment.clone());
        comment
    };
    match failure {
        Some((status, store_anyway)) => {
            if store_anyway {
                store(&m);
            }
            (
                StatusCode::from_u16(status).unwrap(),
                "<html>Bad Gateway</html>",
            )
                .into_response()
        }
        None => (StatusCode::CREATED, Json(store(&m))).into_response(),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

async fn serve() -> (SocketAddr, Shared) {
    let mock: Shared = Arc::default();
    *mock.page_size.lock().unwrap() = 100;
    let app = Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            get(list).post(create),
        )
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    *mock.base.lock().unwrap() = format!("http://{addr}");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, mock)
}

fn handler(addr: SocketAddr) -> GithubComment {
    GithubComment::new(Some(GithubApi {
        api_url: format!("http://{addr}/"),
        token: TOKEN.into(),
    }))
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl JobLog for Lines {
    fn log(&self, _level: LogLevel, message: String) {
        self.0.lock().unwrap().push(message);
    }
}

async fn attempt(h: &GithubComment, attempt: u32, input: &Value) -> AttemptOutcome {
    h.validate(&Value::Null, input).unwrap();
    let ctx = JobContext {
        job_id: JobId::new(),
        job_type: "github.comment".into(),
        attempt,
        max_attempts: 5,
        timeout_ms: 30_000,
        config: Value::Null,
        log: Arc::new(Lines::default()),
    };
    h.run(ctx, input.clone()).await
}

fn input(repo: &str, reply_id: &str) -> Value {
    json!({"repo": repo, "number": 7, "body": "Deployed to staging.", "reply_id": reply_id})
}

fn succeeded(out: AttemptOutcome) -> Value {
    match out {
        AttemptOutcome::Succeeded(v) => v,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failed(out: AttemptOutcome) -> (String, bool) {
    match out {
        AttemptOutcome::Failed { error, retryable } => (error, retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn posts_once_with_the_marker_and_githubs_headers() {
    let (addr, mock) = serve().await;
    let h = handler(addr);
    let out = succeeded(attempt(&h, 1, &input("octo/hello", "run-1")).await);
    assert_eq!(out["already_posted"], false);
    assert_eq!(out["comment_id"], 1000);
    assert_eq!(
        out["url"],
        "https://github.com/octo/hello/issues/7#issuecomment-1000"
    );
    let comments = mock.comments.lock().unwrap().clone();
    assert_eq!(comments.len(), 1);
    assert_eq!(
        comments[0]["body"],
        format!("Deployed to staging.\n\n{}", reply_marker("run-1"))
    );
    assert_eq!(
        comments[0]["body"]
            .as_str()
            .unwrap()
            .matches("<!-- rausku:reply:run-1 -->")
            .count(),
        1
    );
    for h in mock.headers.lock().unwrap().iter() {
        assert_eq!(h["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(h["accept"], "application/vnd.github+json");
        assert_eq!(h["x-github-api-version"], "2022-11-28");
        assert!(
            h["user-agent"].to_str().unwrap().starts_with("rauskuclaw"),
            "{h:?}"
        );
    }
    // The same reply again (a re-run of the job): found, not posted.
    let again = succeeded(attempt(&h, 1, &input("octo/hello", "run-1")).await);
    assert_eq!(again["already_posted"], true);
    assert_eq!(again["comment_id"], 1000);
    assert_eq!(*mock.posts.lock().unwrap(), 1);
    // Another reply id is another comment.
    succeeded(attempt(&h, 1, &input("octo/hello", "run-2")).await);
    assert_eq!(mock.comments.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_502_then_a_retry_leaves_exactly_one_comment() {
    // The 502 came before GitHub stored anything: the retry posts.
    let (addr, mock) = serve().await;
    mock.post_failures.lock().unwrap().push_back((502, false));
    let h = handler(addr);
    let i = input("octo/hello", "run-1");
    let (error, retryable) = failed(attempt(&h, 1, &i).await);
    assert!(retryable, "{error}");
    assert!(error.contains("502"), "{error}");
    let out = succeeded(attempt(&h, 2, &i).await);
    assert_eq!(out["already_posted"], false);
    assert_eq!(mock.comments.lock().unwrap().len(), 1);
    assert_eq!(*mock.posts.lock().unwrap(), 2);

    // The 502 came after GitHub stored the comment: the retry finds it and does not post.
    let (addr, mock) = serve().await;
    mock.post_failures.lock().unwrap().push_back((502, true));
    let h = handler(addr);
    let (_, retryable) = failed(attempt(&h, 1, &i).await);
    assert!(retryable);
    let out = succeeded(attempt(&h, 2, &i).await);
    assert_eq!(out["already_posted"], true);
    assert_eq!(out["comment_id"], 1000);
    assert_eq!(mock.comments.lock().unwrap().len(), 1);
    assert_eq!(*mock.posts.lock().unwrap(), 1);
}

#[tokio::test]
async fn the_marker_is_found_on_a_later_page() {
    let (addr, mock) = serve().await;
    *mock.page_size.lock().unwrap() = 2;
    {
        let mut comments = mock.comments.lock().unwrap();
        for n in 0..5 {
            comments.push(json!({"id": n, "body": format!("comment {n}"), "html_url": "x"}));
        }
        comments.push(json!({
            "id": 77,
            "body": format!("earlier post\n\n{}", reply_marker("run-9")),
            "html_url": "https://github.com/octo/hello/issues/7#issuecomment-77",
        }));
    }
    let h = handler(addr);
    let out = succeeded(attempt(&h, 1, &input("octo/hello", "run-9")).await);
    assert_eq!(out["already_posted"], true);
    assert_eq!(out["comment_id"], 77);
    assert_eq!(*mock.posts.lock().unwrap(), 0);
    assert_eq!(*mock.lists.lock().unwrap(), 3);

    // A marker of another reply id does not count (`run-9` is a prefix of `run-90`).
    let out = succeeded(attempt(&h, 1, &input("octo/hello", "run-90")).await);
    assert_eq!(out["already_posted"], false);
    assert_eq!(*mock.posts.lock().unwrap(), 1);
}

#[tokio::test]
async fn not_found_is_final_with_githubs_message() {
    let (addr, mock) = serve().await;
    let h = handler(addr);
    let (error, retryable) = failed(attempt(&h, 1, &input("octo/missing", "r")).await);
    assert!(!retryable, "{error}");
    assert!(
        error.contains("404") && error.contains("Not Found"),
        "{error}"
    );
    assert!(error.contains("octo/missing#7"), "{error}");
    assert_eq!(*mock.posts.lock().unwrap(), 0);
}

#[tokio::test]
async fn the_token_never_leaves_the_api_origin() {
    let (addr, mock) = serve().await;
    *mock.foreign_link.lock().unwrap() = true;
    let h = handler(addr);
    let (error, retryable) = failed(attempt(&h, 1, &input("octo/hello", "r")).await);
    assert!(!retryable);
    assert!(error.contains("outside RAUSKU_GITHUB_API_URL"), "{error}");
    assert_eq!(*mock.posts.lock().unwrap(), 0);
}

#[tokio::test]
async fn network_errors_are_retryable_and_no_token_is_final() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (error, retryable) = failed(attempt(&handler(addr), 1, &input("o/r", "r")).await);
    assert!(retryable, "{error}");

    let h = GithubComment::new(None);
    assert!(!h.enabled_by_default());
    let (error, retryable) = failed(attempt(&h, 1, &input("o/r", "r")).await);
    assert!(!retryable);
    assert!(error.contains("RAUSKU_GITHUB_TOKEN"), "{error}");
}
