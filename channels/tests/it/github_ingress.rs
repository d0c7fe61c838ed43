//! `GithubIngress` on a real store: signature first, dedupe, one atomic durable write per
//! delivery, retention purge, and following the `github` stream.

use std::time::Duration;

use bytes::Bytes;
use channels::github::{
    Accepted, CommandRules, DeliveryHeaders, GITHUB_STREAM, GithubIngress, IngressConfig,
    IngressError, RECEIVED_KIND, SignatureError, StoredDelivery, follow, purge_deliveries, sign,
};
use serde_json::{Value, json};
use store::{Store, StoreConfig, StreamFilter, Timestamp};
use tempfile::TempDir;

use crate::fixtures;

const SECRET: &[u8] = b"it-webhook-secret";

fn open(dir: &TempDir) -> (Store, GithubIngress) {
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let config = IngressConfig {
        commands: CommandRules {
            bot_login: Some("rausku-bot".into()),
            ..CommandRules::default()
        },
        ..IngressConfig::new(SECRET)
    };
    (store.clone(), GithubIngress::new(store, config))
}

fn signed(event: &str, delivery: &str, body: &[u8]) -> DeliveryHeaders {
    DeliveryHeaders {
        event: Some(event.into()),
        delivery: Some(delivery.into()),
        signature: Some(sign(SECRET, body)),
    }
}

fn stream_events(store: &Store) -> Vec<store::Event> {
    store
        .events_after(&StreamFilter::Stream(GITHUB_STREAM.into()), 0, 10_000)
        .unwrap()
}

fn comment_body(text: &str) -> Vec<u8> {
    let mut payload: Value =
        serde_json::from_slice(&fixtures::one("issue_comment/created.payload.json")).unwrap();
    payload["comment"]["body"] = json!(text);
    serde_json::to_vec(&payload).unwrap()
}

#[tokio::test]
async fn every_real_payload_is_stored_once_with_its_mapping() {
    let dir = TempDir::new().unwrap();
    let (store, ingress) = open(&dir);
    let all = fixtures::all();
    for (i, f) in all.iter().enumerate() {
        let delivery = format!("fixture-{i}");
        let got = ingress
            .accept(
                signed(&f.event, &delivery, &f.body),
                Bytes::from(f.body.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("{}/{}: {e}", f.event, f.file));
        match (&got, f.event.as_str()) {
            (Accepted::Ping { .. }, "ping") => {}
            (Accepted::Stored { .. }, e) if e != "ping" => {}
            other => panic!("{}/{}: {other:?}", f.event, f.file),
        }
        assert_eq!(got.seq(), i as u64 + 1);
        let record = ingress.delivery(&delivery).unwrap().expect("dedupe record");
        assert_eq!(
            (record.seq, record.event.as_str()),
            (got.seq(), f.event.as_str())
        );
    }
    // Durable on return: visible to readers, which only see flushed events.
    let events = stream_events(&store);
    assert_eq!(events.len(), fixtures::COUNT);
    for (i, (e, f)) in events.iter().zip(&all).enumerate() {
        assert_eq!(e.kind, RECEIVED_KIND);
        let d = StoredDelivery::from_event(e).unwrap().unwrap();
        assert_eq!(d.delivery, format!("fixture-{i}"));
        assert_eq!(d.event, f.event);
        assert!(d.session_key.starts_with("github:"), "{}", d.session_key);
        assert_eq!(d.context["event"], f.event.as_str());
        // The full payload is kept.
        let original: Value = serde_json::from_slice(&f.body).unwrap();
        assert_eq!(d.payload, original, "{}/{}", f.event, f.file);
    }
}

#[tokio::test]
async fn a_delivery_id_is_stored_once_even_when_sent_concurrently() {
    let dir = TempDir::new().unwrap();
    let (store, ingress) = open(&dir);
    let body = fixtures::one("issues/opened.payload.json");
    let first = ingress
        .accept(signed("issues", "d-1", &body), Bytes::from(body.clone()))
        .await
        .unwrap();
    let Accepted::Stored { seq, .. } = first else {
        panic!("{first:?}")
    };
    // Again: a duplicate pointing at the original, nothing new.
    let again = ingress
        .accept(signed("issues", "d-1", &body), Bytes::from(body.clone()))
        .await
        .unwrap();
    assert!(
        matches!(again, Accepted::Duplicate { seq: s, .. } if s == seq),
        "{again:?}"
    );
    assert_eq!(stream_events(&store).len(), 1);

    // Twenty at once with a new id: exactly one is stored.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let ingress = ingress.clone();
            let body = body.clone();
            tokio::spawn(async move {
                ingress
                    .accept(signed("issues", "d-2", &body), Bytes::from(body))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Accepted::Stored { seq, .. } => {
                stored += 1;
                assert_eq!(seq, 2);
            }
            Accepted::Duplicate { seq, .. } => assert_eq!(seq, 2),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(stream_events(&store).len(), 2);
}

#[tokio::test]
async fn a_bad_signature_stores_nothing_and_is_checked_before_anything_else() {
    let dir = TempDir::new().unwrap();
    let (store, ingress) = open(&dir);
    let body = fixtures::one("push/payload.json");
    let good = sign(SECRET, &body);

    let mut flipped_body = body.clone();
    flipped_body[10] ^= 0x01;
    let mut flipped_sig = good.clone().into_bytes();
    let last = flipped_sig.len() - 1;
    flipped_sig[last] = if flipped_sig[last] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let flipped_sig = String::from_utf8(flipped_sig).unwrap();
    let cases: Vec<(Option<String>, Vec<u8>, SignatureError)> = vec![
        (Some(good.clone()), flipped_body, SignatureError::Mismatch),
        (Some(flipped_sig), body.clone(), SignatureError::Mismatch),
        (None, body.clone(), SignatureError::Missing),
        (
            Some("sha1=0123456789abcdef0123456789abcdef01234567".into()),
            body.clone(),
            SignatureError::Sha1Only,
        ),
        (
            Some(good[..good.len() - 4].to_string()),
            body.clone(),
            SignatureError::WrongLength { len: 60 },
        ),
        // Not JSON and no delivery id: the signature is still what is reported.
        (
            Some(good.clone()),
            b"not json".to_vec(),
            SignatureError::Mismatch,
        ),
    ];
    for (signature, body, want) in cases {
        let headers = DeliveryHeaders {
            event: Some("push".into()),
            delivery: Some("d-bad".into()),
            signature,
        };
        match ingress.accept(headers, Bytes::from(body)).await {
            Err(IngressError::Signature(e)) => assert_eq!(e, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    let no_id = DeliveryHeaders {
        delivery: None,
        ..signed("push", "", b"[")
    };
    assert!(matches!(
        ingress
            .accept(no_id.clone(), Bytes::from_static(b"x"))
            .await,
        Err(IngressError::Signature(SignatureError::Mismatch))
    ));
    assert!(stream_events(&store).is_empty());
    assert_eq!(ingress.delivery("d-bad").unwrap(), None);

    // With a good signature, the headers and then the JSON are checked.
    assert!(matches!(
        ingress.accept(no_id, Bytes::from_static(b"[")).await,
        Err(IngressError::MissingDelivery)
    ));
    let mut no_event = signed("push", "d-x", &body);
    no_event.event = None;
    assert!(matches!(
        ingress.accept(no_event, Bytes::from(body.clone())).await,
        Err(IngressError::MissingEvent)
    ));
    let err = ingress
        .accept(
            signed("push", "d-x", b"{nope"),
            Bytes::from_static(b"{nope"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, IngressError::InvalidJson(_)), "{err:?}");
    assert!(err.to_string().contains("application/json"), "{err}");
    assert!(matches!(
        ingress
            .accept(signed("push", "d-x", b"[1]"), Bytes::from_static(b"[1]"))
            .await,
        Err(IngressError::NotAnObject(_))
    ));
    assert!(stream_events(&store).is_empty());

    // The refused id was not remembered: the genuine delivery is stored.
    let ok = ingress
        .accept(signed("push", "d-bad", &body), Bytes::from(body.clone()))
        .await
        .unwrap();
    assert!(matches!(ok, Accepted::Stored { seq: 1, .. }), "{ok:?}");
}

#[tokio::test]
async fn commands_and_the_loop_guard_reach_the_stored_event() {
    let dir = TempDir::new().unwrap();
    let (store, ingress) = open(&dir);
    let ask = comment_body("/rausku deploy staging");
    ingress
        .accept(signed("issue_comment", "c-1", &ask), Bytes::from(ask))
        .await
        .unwrap();
    let reply = comment_body("Deploying.\n\n<!-- rausku:reply:job-1 -->");
    ingress
        .accept(signed("issue_comment", "c-2", &reply), Bytes::from(reply))
        .await
        .unwrap();
    let events = stream_events(&store);
    let decoded: Vec<StoredDelivery> = events
        .iter()
        .map(|e| StoredDelivery::from_event(e).unwrap().unwrap())
        .collect();
    assert_eq!(decoded[0].command.as_deref(), Some("deploy staging"));
    assert_eq!(decoded[0].session_key, "github:Codertocat/Hello-World#1");
    assert_eq!(decoded[0].kind, "issue_comment.created");
    assert_eq!(decoded[1].command, None);
    // The raw event data has exactly the documented fields.
    let mut keys: Vec<_> = events[0]
        .data
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "command",
            "context",
            "delivery",
            "event",
            "kind",
            "payload",
            "session_key"
        ]
    );
}

#[tokio::test]
async fn deliveries_and_dedupe_survive_a_reopen_and_are_purged_after_retention() {
    let dir = TempDir::new().unwrap();
    let body = fixtures::one("star/created.payload.json");
    {
        let (store, ingress) = open(&dir);
        ingress
            .accept(signed("star", "s-1", &body), Bytes::from(body.clone()))
            .await
            .unwrap();
        store.close().unwrap();
    }
    let (store, ingress) = open(&dir);
    assert_eq!(stream_events(&store).len(), 1);
    let again = ingress
        .accept(signed("star", "s-1", &body), Bytes::from(body.clone()))
        .await
        .unwrap();
    assert!(
        matches!(again, Accepted::Duplicate { seq: 1, .. }),
        "{again:?}"
    );

    // Within the retention nothing is purged.
    assert_eq!(ingress.purge_expired().unwrap(), 0);
    let past = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
    assert_eq!(purge_deliveries(&store, past).unwrap(), 0);
    // Past it, the id is forgotten, and the same id is a new delivery again.
    let future = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(purge_deliveries(&store, future).unwrap(), 1);
    assert_eq!(ingress.delivery("s-1").unwrap(), None);
    let later = ingress
        .accept(signed("star", "s-1", &body), Bytes::from(body))
        .await
        .unwrap();
    assert!(
        matches!(later, Accepted::Stored { seq: 2, .. }),
        "{later:?}"
    );
}

/// The follower's next event, failing after 10 s.
async fn next(f: &mut store::Follower) -> std::sync::Arc<store::Event> {
    tokio::time::timeout(Duration::from_secs(10), f.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
}

#[tokio::test]
async fn a_consumer_follows_the_stream_from_where_it_left_off() {
    let dir = TempDir::new().unwrap();
    let (store, ingress) = open(&dir);
    let body = fixtures::one("issues/opened.payload.json");
    for id in ["f-1", "f-2"] {
        ingress
            .accept(signed("issues", id, &body), Bytes::from(body.clone()))
            .await
            .unwrap();
    }
    // A consumer that handled seq 1 resumes after it: stored, then live, in order.
    let mut follower = follow(&store, 1);
    let e = next(&mut follower).await;
    assert_eq!((e.seq, e.stream.as_str()), (2, GITHUB_STREAM));
    let live = {
        let ingress = ingress.clone();
        let body = body.clone();
        tokio::spawn(async move {
            ingress
                .accept(signed("issues", "f-3", &body), Bytes::from(body))
                .await
                .unwrap()
        })
    };
    let e = next(&mut follower).await;
    assert_eq!(e.seq, 3);
    assert_eq!(
        StoredDelivery::from_event(&e).unwrap().unwrap().delivery,
        "f-3"
    );
    assert_eq!(live.await.unwrap().seq(), 3);
    // Events of other streams are not the consumer's business.
    assert_eq!(ingress.follow(3).try_next_stored().unwrap(), None);
}
