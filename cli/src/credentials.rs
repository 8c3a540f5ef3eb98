//! What the CLI authenticates with and the secrets it passes on. The API
//! token: `--token` or `WEFT_TOKEN`, else the file `--token-file` or
//! `WEFT_TOKEN_FILE` names (its first line). TLS: `--ca-cert`,
//! `--client-cert` and `--client-key` (or `WEFT_CA_CERT`, `WEFT_CLIENT_CERT`,
//! `WEFT_CLIENT_KEY`), read into [`Tls`]. Secrets of `weft start`:
//! `--secret NAME=VALUE`, `--secret NAME=@FILE` (the file's content), or
//! `--secrets-file FILE` (a JSON object of names to strings). Secret values
//! are never printed, also not in error messages.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub use crate::api::Tls;

/// The bearer token to send, if any.
pub fn token(flag_or_env: Option<&str>, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(t) = flag_or_env.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_owned()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(t) => Ok(Some(t.to_owned())),
        None => bail!("the token file {} is empty", path.display()),
    }
}

/// The TLS material of `--ca-cert`, `--client-cert` and `--client-key`: a
/// client certificate needs its key and the other way round.
pub fn tls(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Tls> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let ca_pem = ca
        .map(|p| read("CA certificate (--ca-cert)", p))
        .transpose()?;
    let identity_pem = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => bail!("--client-cert needs --client-key (WEFT_CLIENT_KEY)"),
        (None, Some(_)) => bail!("--client-key needs --client-cert (WEFT_CLIENT_CERT)"),
        (Some(c), Some(k)) => {
            let mut pem = read("client certificate (--client-cert)", c)?;
            pem.push(b'\n');
            pem.extend(read("client key (--client-key)", k)?);
            Some(pem)
        }
    };
    Ok(Tls {
        ca_pem,
        identity_pem,
    })
}

/// The secrets of `weft start` as the API's `secrets` body field; `None` when none is given.
pub fn secrets(pairs: &[String], file: Option<&Path>) -> Result<Option<Value>> {
    let mut all = BTreeMap::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the secrets file {}", path.display()))?;
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) else {
            bail!(
                "the secrets file {} must hold a JSON object of names to strings",
                path.display()
            );
        };
        for (name, value) in map {
            let Value::String(v) = value else {
                bail!("secret '{name}' in {} must be a string", path.display());
            };
            all.insert(name, v);
        }
    }
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--secret takes NAME=VALUE or NAME=@FILE (got one without '=')");
        };
        let name = name.trim();
        if name.is_empty() {
            bail!("--secret takes NAME=VALUE or NAME=@FILE (the name is empty)");
        }
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read secret '{name}' from {path}"))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => value.to_owned(),
        };
        all.insert(name.to_owned(), value);
    }
    if all.is_empty() {
        return Ok(None);
    }
    Ok(Some(Value::Object(
        all.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("weft-cli-cred-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tls_needs_certificate_and_key_together() {
        let dir = scratch("tls");
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, "CERT").unwrap();
        std::fs::write(&k, "KEY").unwrap();
        let t = tls(Some(&c), Some(&c), Some(&k)).unwrap();
        assert_eq!(t.ca_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(t.identity_pem.as_deref(), Some(&b"CERT\nKEY"[..]));
        let e = |r: Result<Tls>| format!("{:#}", r.unwrap_err());
        assert!(e(tls(None, Some(&c), None)).contains("needs --client-key"));
        assert!(e(tls(None, None, Some(&k))).contains("needs --client-cert"));
        assert!(e(tls(Some(&dir.join("nope")), None, None)).contains("--ca-cert"));
        assert!(tls(None, None, None).unwrap().identity_pem.is_none());
    }

    #[test]
    fn token_from_flag_then_file() {
        let dir = scratch("token");
        let f = dir.join("token");
        std::fs::write(&f, "\n  abc123 \nignored\n").unwrap();
        assert_eq!(token(Some("t1"), Some(&f)).unwrap().as_deref(), Some("t1"));
        assert_eq!(token(None, Some(&f)).unwrap().as_deref(), Some("abc123"));
        assert_eq!(token(Some(" "), None).unwrap(), None);
        std::fs::write(&f, "\n").unwrap();
        assert!(token(None, Some(&f))
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = dir.join("nope");
        assert!(format!("{:#}", token(None, Some(&missing)).unwrap_err()).contains("nope"));
    }

    #[test]
    fn secrets_from_pairs_files_and_json() {
        let dir = scratch("secrets");
        let v = dir.join("v");
        std::fs::write(&v, "from-file\n").unwrap();
        let j = dir.join("s.json");
        std::fs::write(&j, r#"{"a": "1", "b": "2"}"#).unwrap();
        let pairs = vec!["b=x=y".to_owned(), format!("c=@{}", v.display())];
        let got = secrets(&pairs, Some(&j)).unwrap().unwrap();
        assert_eq!(
            got,
            serde_json::json!({"a": "1", "b": "x=y", "c": "from-file"})
        );
        assert_eq!(secrets(&[], None).unwrap(), None);
        let err = secrets(&["hunter2".to_owned()], None)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(&j, r#"{"a": 1}"#).unwrap();
        assert!(secrets(&[], Some(&j)).is_err());
    }
}
