//! Tests of the policy: tokens, certificates, grants and what bad policies say.

use super::*;

fn sha(t: &str) -> String {
    Sha256::digest(t.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy() -> Policy {
    Policy::parse(&format!(
        r#"
[namespaces]
payments = ["payment", "refund"]
ops = ["jobs"]

[[tokens]]
name = "alice"
sha256 = "{}"
roles = ["operator:payments", "reader:ops"]

[[tokens]]
name = "root"
sha256 = "{}"
roles = ["admin:*"]
"#,
        sha("alice-token"),
        sha("root-token")
    ))
    .unwrap()
}

#[test]
fn tokens_resolve_to_their_identity_and_roles_nest() {
    let p = policy();
    let alice = p.token("alice-token").unwrap();
    assert_eq!((alice.name.as_str(), alice.method), ("alice", "token"));
    assert!(p.token("alice-token ").is_none() && p.token("").is_none());
    assert!(p.allows(&alice, Role::Operator, Some("refund")));
    assert!(p.allows(&alice, Role::Reader, Some("payment")));
    assert!(!p.allows(&alice, Role::Admin, Some("payment")));
    assert!(p.allows(&alice, Role::Reader, Some("jobs")));
    assert!(!p.allows(&alice, Role::Operator, Some("jobs")));
    assert!(!p.allows(&alice, Role::Reader, Some("other")));
    assert!(!p.allows(&alice, Role::Reader, None));
    let root = p.token("root-token").unwrap();
    assert!(p.allows(&root, Role::Admin, None));
    assert!(p.allows(&root, Role::Operator, Some("anything")));
    assert_eq!(p.namespaces_of("refund"), vec!["payments", "*"]);
    assert!(!format!("{p:?}").contains(&sha("alice-token")));
}

#[test]
fn certificates_resolve_by_common_name_or_san() {
    let p = Policy::parse(
        r#"
[namespaces]
ops = ["jobs"]

[[certificates]]
subject = "deploy.example.com"
name = "deploy-bot"
roles = ["admin:*"]

[[certificates]]
subject = "watcher"
roles = ["reader:ops"]
"#,
    )
    .unwrap();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let bot = p.certificate(&names(&["bot", "deploy.example.com"]));
    assert_eq!(
        (bot.name.as_str(), bot.method),
        ("deploy-bot", "certificate")
    );
    assert!(p.allows(&bot, Role::Admin, None));
    let w = p.certificate(&names(&["watcher"]));
    assert_eq!(w.name, "watcher");
    assert!(p.allows(&w, Role::Reader, Some("jobs")));
    assert!(!p.allows(&w, Role::Operator, Some("jobs")));
    let stranger = p.certificate(&names(&["mallory"]));
    assert_eq!(stranger.name, "mallory");
    assert!(stranger.grants.is_empty());
    assert!(
        Policy::parse("[[certificates]]\nsubject='a'\nroles=['reader:nope']")
            .unwrap_err()
            .contains("certificate 'a': grant on unknown namespace 'nope'")
    );
}

#[test]
fn bad_policies_name_what_is_wrong() {
    let err = |t: &str| Policy::parse(t).unwrap_err();
    assert!(err("[[tokens]]\nname='a'\nsha256='12'").contains("64 hex"));
    let h = sha("x");
    assert!(err(&format!(
        "[[tokens]]\nname='a'\nsha256='{h}'\nroles=['boss:*']"
    ))
    .contains("unknown role 'boss'"));
    assert!(err(&format!(
        "[[tokens]]\nname='a'\nsha256='{h}'\nroles=['reader:nope']"
    ))
    .contains("unknown namespace 'nope'"));
    assert!(err("[namespaces]\n'*' = ['a']").contains("built in"));
    assert!(err("[[tokens]]\nname='a'\ntoken='plain'").contains("unknown field"));
}
