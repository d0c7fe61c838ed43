//! `map_event` over every real payload, and exact mappings of a few.

use channels::github::{CommandRules, map_event};
use serde_json::{Value, json};

use crate::fixtures;

fn mapped(path: &str) -> channels::github::GithubEvent {
    let event = path.split('/').next().unwrap();
    let payload: Value = serde_json::from_slice(&fixtures::one(path)).unwrap();
    map_event(event, &payload, &CommandRules::default())
}

#[test]
fn every_real_payload_maps_to_a_kind_and_a_session() {
    let mut keys = std::collections::BTreeSet::new();
    for f in fixtures::all() {
        let payload: Value = serde_json::from_slice(&f.body)
            .unwrap_or_else(|e| panic!("{}/{}: {e}", f.event, f.file));
        let e = map_event(&f.event, &payload, &CommandRules::default());
        let name = format!("{}/{}", f.event, f.file);
        assert!(
            e.session_key.starts_with("github:"),
            "{name}: {}",
            e.session_key
        );
        assert!(e.session_key.len() > "github:".len(), "{name}");
        assert!(
            !e.session_key.contains(char::is_whitespace),
            "{name}: {}",
            e.session_key
        );
        assert!(e.kind.starts_with(&f.event), "{name}: {}", e.kind);
        if let Some(action) = payload["action"].as_str() {
            assert_eq!(e.kind, format!("{}.{action}", f.event), "{name}");
        }
        assert_eq!(e.context["event"], f.event.as_str(), "{name}");
        assert_eq!(e.context["kind"], e.kind.as_str(), "{name}");
        if let Some(full) = payload["repository"]["full_name"].as_str() {
            assert_eq!(e.context["repo"], full, "{name}");
            assert!(
                e.session_key.starts_with(&format!("github:{full}")),
                "{name}"
            );
        }
        // No fixture addresses the bot.
        assert_eq!(e.command, None, "{name}");
        keys.insert(e.session_key);
    }
    // The rules tell conversations apart: far fewer keys than payloads, but more than a handful.
    assert!(keys.len() > 30, "{keys:?}");
}

#[test]
fn exact_mappings() {
    let e = mapped("issue_comment/created.payload.json");
    assert_eq!(e.kind, "issue_comment.created");
    assert_eq!(e.session_key, "github:Codertocat/Hello-World#1");
    let c = &e.context;
    assert_eq!(c["repo"], "Codertocat/Hello-World");
    assert_eq!(c["owner"], "Codertocat");
    assert_eq!(c["name"], "Hello-World");
    assert_eq!(c["number"], 1);
    assert_eq!(c["title"], "Spelling error in the README file");
    assert_eq!(c["state"], "open");
    assert_eq!(c["author"], "Codertocat");
    assert_eq!(c["pull_request"], false);
    assert_eq!(
        c["url"],
        "https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400"
    );
    assert!(
        c["comment"]
            .as_str()
            .unwrap()
            .starts_with("You are totally right!")
    );

    let e = mapped("pull_request/closed.payload.json");
    assert_eq!(e.kind, "pull_request.closed");
    assert_eq!(e.session_key, "github:Codertocat/Hello-World#2");
    let c = &e.context;
    assert_eq!(c["merged"], false);
    assert_eq!(c["state"], "closed");
    assert_eq!(c["base"], "master");
    assert_eq!(c["head"], "changes");
    assert_eq!(c["sha"], "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(c["title"], "Update the README with new information.");
    assert_eq!(c["url"], "https://github.com/Codertocat/Hello-World/pull/2");
    assert_eq!(c["pull_request"], true);

    // The same pull request through a review comment: the same session.
    let e = mapped("pull_request_review_comment/created.payload.json");
    assert_eq!(e.session_key, "github:Codertocat/Hello-World#2");
    assert_eq!(
        e.context["comment"],
        "Maybe you should use more emoji on this line."
    );

    let e = mapped("push/with-new-branch.payload.json");
    assert_eq!(e.kind, "push");
    assert_eq!(e.session_key, "github:Codertocat/Hello-World@master");
    assert_eq!(e.context["ref"], "refs/heads/master");
    assert_eq!(e.context["branch"], "master");
    assert_eq!(e.context["sha"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(e.context["author"], "Codertocat");

    let e = mapped("push/payload.json");
    assert_eq!(
        e.session_key,
        "github:Codertocat/Hello-World@refs/tags/simple-tag"
    );
    assert_eq!(e.context["tag"], "simple-tag");
    // Creating that tag is the same conversation.
    assert_eq!(
        mapped("create/payload.json").session_key,
        "github:Codertocat/Hello-World@refs/tags/simple-tag"
    );

    let e = mapped("release/published.payload.json");
    assert_eq!(e.kind, "release.published");
    assert_eq!(e.session_key, "github:Codertocat/Hello-World/release/0.0.1");
    assert_eq!(e.context["tag"], "0.0.1");

    let e = mapped("workflow_run/completed.payload.json");
    assert_eq!(
        e.session_key,
        "github:octo-org/octo-repo/workflow_run/master"
    );
    assert_eq!(e.context["conclusion"], "success");
    assert_eq!(e.context["org"], "octo-org");

    assert_eq!(
        mapped("check_run/completed.payload.json").session_key,
        "github:Codertocat/Hello-World/check_run/changes"
    );
    assert_eq!(
        mapped("workflow_job/in_progress.with-queued-steps.payload.json").session_key,
        "github:wolfy1339/github-events-schemas/workflow_job/renovate/got-13.x"
    );
    assert_eq!(
        mapped("deployment_status/payload.json").session_key,
        "github:Codertocat/Hello-World/deployment/production"
    );
    assert_eq!(
        mapped("discussion_comment/created.payload.json").session_key,
        "github:Codertocat/Hello-World/discussion/4"
    );

    // No repository: the organization, else the installation's account, else GitHub itself.
    let e = mapped("organization/member_added.payload.json");
    assert_eq!(e.kind, "organization.member_added");
    assert_eq!(e.session_key, "github:Octocoders/organization");
    assert_eq!(
        mapped("installation/created.payload.json").session_key,
        "github:Codertocat/installation"
    );
    assert_eq!(
        mapped("security_advisory/published.payload.json").session_key,
        "github:github/security_advisory"
    );

    let e = mapped("ping/payload.json");
    assert_eq!(
        (e.kind.as_str(), e.session_key.as_str()),
        ("ping", "github:Octocoders/Hello-World")
    );
    assert_eq!(
        mapped("ping/with-organization.payload.json").session_key,
        "github:Octocoders/ping"
    );
}

#[test]
fn a_real_comment_addressed_to_the_bot_is_a_command() {
    let mut payload: Value =
        serde_json::from_slice(&fixtures::one("issue_comment/created.payload.json")).unwrap();
    payload["comment"]["body"] = json!("Thanks.\r\n\r\n@rauskuclaw run the tests\r\n");
    let rules = CommandRules {
        bot_login: Some("rausku-bot".into()),
        ..CommandRules::default()
    };
    let e = map_event("issue_comment", &payload, &rules);
    assert_eq!(e.command.as_deref(), Some("run the tests"));
    assert_eq!(e.context["command"], "run the tests");
    // The bot's own comment is not.
    payload["comment"]["user"]["login"] = json!("rausku-bot[bot]");
    assert_eq!(map_event("issue_comment", &payload, &rules).command, None);
}
