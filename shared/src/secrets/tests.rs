use std::collections::BTreeMap;

use super::*;
use crate::config::SecretsSettings;

fn ring(ids: &[(&str, u8)]) -> Keyring {
    let mut r = Keyring::default();
    for (id, b) in ids {
        r.insert(id, [*b; KEY_BYTES]).unwrap();
    }
    r
}

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("api_token".to_owned(), "s3cr3t-VALUE".to_owned()),
        ("db".to_owned(), "pw".to_owned()),
    ])
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[test]
fn seal_then_open_gives_only_the_named_secrets() {
    let r = ring(&[("k1", 7)]);
    let env = seal(&r, "pay", "i-1", &secrets()).unwrap();
    assert!(env.starts_with("wsec1.k1."), "{env}");
    assert!(!env.contains("s3cr3t"), "{env}");
    let got = open(&r, "pay", "i-1", &env, &names(&["api_token"])).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got["api_token"].expose(), "s3cr3t-VALUE");
    assert_eq!(format!("{:?}", got), r#"{"api_token": <redacted>}"#);
    // Two seals of the same secrets differ (fresh data key and nonces).
    assert_ne!(env, seal(&r, "pay", "i-1", &secrets()).unwrap());
}

#[test]
fn another_instance_or_an_altered_envelope_does_not_open() {
    let r = ring(&[("k1", 7)]);
    let env = seal(&r, "pay", "i-1", &secrets()).unwrap();
    let err = open(&r, "pay", "i-2", &env, &[]).unwrap_err();
    assert_eq!(err.kind(), "secrets_decrypt_failed");
    let err = open(&r, "other", "i-1", &env, &[]).unwrap_err();
    assert_eq!(err.kind(), "secrets_decrypt_failed");
    let mut altered = env.clone().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let err = open(
        &r,
        "pay",
        "i-1",
        std::str::from_utf8(&altered).unwrap(),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.kind(), "secrets_decrypt_failed");
    // The same key id with another key: the wrapped data key does not open.
    let err = open(&ring(&[("k1", 8)]), "pay", "i-1", &env, &[]).unwrap_err();
    assert_eq!(err.kind(), "secrets_decrypt_failed");
}

#[test]
fn unknown_key_id_names_it_and_the_known_ones() {
    let env = seal(&ring(&[("old", 1)]), "pay", "i-1", &secrets()).unwrap();
    let err = open(&ring(&[("k2", 2), ("k3", 3)]), "pay", "i-1", &env, &[]).unwrap_err();
    assert_eq!(
        err,
        SecretsError::UnknownKeyId {
            key_id: "old".into(),
            known: "k2, k3".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown key id 'old' (this process holds: k2, k3)"
    );
}

#[test]
fn rotation_keeps_old_envelopes_readable() {
    let mut r = ring(&[("k1", 1)]);
    let old = seal(&r, "pay", "i-1", &secrets()).unwrap();
    r.insert("k2", [2; KEY_BYTES]).unwrap();
    r.set_active("k2").unwrap();
    let new = seal(&r, "pay", "i-2", &secrets()).unwrap();
    assert!(new.starts_with("wsec1.k2."));
    assert_eq!(
        open(&r, "pay", "i-1", &old, &names(&["db"])).unwrap()["db"].expose(),
        "pw"
    );
    assert_eq!(
        open(&r, "pay", "i-2", &new, &names(&["db"])).unwrap()["db"].expose(),
        "pw"
    );
}

#[test]
fn missing_names_bad_names_and_malformed_envelopes_are_errors() {
    let r = ring(&[("k1", 7)]);
    let env = seal(&r, "pay", "i-1", &secrets()).unwrap();
    let err = open(&r, "pay", "i-1", &env, &names(&["nope"])).unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
    for bad in [
        "",
        "wsec1.k1",
        "wsec2.k1.AAAA.AAAA",
        "wsec1.k 1.AAAA.AAAA",
        "wsec1.k1.!!.AAAA",
    ] {
        assert_eq!(
            open(&r, "pay", "i-1", bad, &[]).unwrap_err().kind(),
            "secrets_malformed",
            "{bad}"
        );
    }
    let bad_name = BTreeMap::from([("a b".to_owned(), "x".to_owned())]);
    assert_eq!(
        seal(&r, "pay", "i", &bad_name).unwrap_err().kind(),
        "secrets_invalid"
    );
    let big = BTreeMap::from([("a".to_owned(), "x".repeat(MAX_SECRETS_BYTES))]);
    assert_eq!(
        seal(&r, "pay", "i", &big).unwrap_err().kind(),
        "secrets_invalid"
    );
    assert_eq!(
        seal(&Keyring::default(), "pay", "i", &secrets()).unwrap_err(),
        SecretsError::NoKey
    );
}

#[test]
fn requested_names_come_from_the_secrets_parameter() {
    use crate::data::{DataMap, WorkflowData};
    let p = DataMap::from([("secrets".into(), WorkflowData::List(names(&["a", "b"])))]);
    assert_eq!(requested_names(&p), names(&["a", "b"]));
    let p = DataMap::from([("secrets".into(), "a, b".into())]);
    assert_eq!(requested_names(&p), names(&["a", "b"]));
    assert!(requested_names(&DataMap::new()).is_empty());
}

fn b64(b: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([b; KEY_BYTES])
}

#[test]
fn keys_load_from_a_file_a_directory_and_the_setting() {
    let dir = std::env::temp_dir().join(format!("weft-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("mounted/..data")).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, format!("# keys\nk1={}\n\nk2 = {}\n", b64(1), b64(2))).unwrap();
    std::fs::write(dir.join("mounted/m1"), format!("{}\n", b64(3))).unwrap();
    std::fs::write(dir.join("mounted/.hidden"), "junk").unwrap();
    let settings = |keys_file: &str, keys: &str, active: &str| SecretsSettings {
        keys_file: keys_file.into(),
        keys: keys.into(),
        active_key: active.into(),
    };
    let r = Keyring::from_settings(&settings(
        file.to_str().unwrap(),
        &format!("e1={}", b64(4)),
        "k2",
    ))
    .unwrap();
    assert_eq!(r.ids(), vec!["e1", "k1", "k2"]);
    assert_eq!(r.active().unwrap().0, "k2");
    assert_eq!(r.get("e1").unwrap(), &[4u8; KEY_BYTES]);
    let r =
        Keyring::from_settings(&settings(dir.join("mounted").to_str().unwrap(), "", "")).unwrap();
    assert_eq!(r.ids(), vec!["m1"]);
    assert_eq!(r.active().unwrap().0, "m1");
    assert!(format!("{r:?}").contains("m1") && !format!("{r:?}").contains(&b64(3)));

    let err = Keyring::from_settings(&settings(file.to_str().unwrap(), "", "")).unwrap_err();
    assert!(err.to_string().contains("set secrets.active_key"), "{err}");
    let err = Keyring::from_settings(&settings("", "k1=short", "")).unwrap_err();
    assert!(err.to_string().contains("secrets.keys"), "{err}");
    let err = Keyring::from_settings(&settings("", &format!("k1={}", b64(1)), "k9")).unwrap_err();
    assert!(err.to_string().contains("'k9'"), "{err}");
    let err = Keyring::from_settings(&settings("/nonexistent/keys", "", "")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
    assert!(Keyring::from_settings(&settings("", "", ""))
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn printed_configuration_redacts_inline_keys() {
    let mut c = crate::config::WeftConfig::default();
    c.secrets.keys = format!("k1={}", b64(9));
    assert!(!c.to_toml().contains(&b64(9)));
    assert!(!format!("{c:?}").contains(&b64(9)));
}
