//! TLS for the HTTP API (ADR 0015): the server configuration built from the
//! `api.tls_*` settings (rustls, with client certificates verified against
//! `api.tls_client_ca_file` when one is set), the names a verified client
//! certificate carries ([`PeerCert`], the caller for the auth policy's
//! `[[certificates]]`), and the client replicas forward requests to each
//! other with (https, the replicas' CA, the forwarding certificate).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use weft_shared::config::ApiSettings;

/// Why the API's TLS could not be set up (a start-up error naming the setting).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} = {path}: {message}")]
    File {
        setting: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The names of a verified client certificate: its subject's common name
/// first (when it has one), then its DNS and URI subject alternative names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCert {
    pub names: Vec<String>,
}

impl PeerCert {
    /// The names of the certificate `der`; `None` when it does not parse.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<Self> {
        let cert = webpki::EndEntityCert::try_from(der).ok()?;
        let mut names: Vec<String> = common_name(cert.subject()).into_iter().collect();
        for n in cert.valid_dns_names().chain(cert.valid_uri_names()) {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_owned());
            }
        }
        Some(Self { names })
    }

    /// The name the caller goes by: the first one, or `?` for a certificate without any.
    pub fn primary(&self) -> &str {
        self.names.first().map_or("?", String::as_str)
    }
}

/// The common name (OID 2.5.4.3) of a DER-encoded subject without its outer
/// SEQUENCE (a sequence of RDN sets of attribute type-and-value sequences).
fn common_name(mut subject: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while let Some((0x31, set, rest)) = der_next(subject) {
        subject = rest;
        let mut set = set;
        while let Some((0x30, atv, rest)) = der_next(set) {
            set = rest;
            let Some((0x06, oid, value)) = der_next(atv) else {
                continue;
            };
            // UTF8String, PrintableString, IA5String
            if let (true, Some((0x0c | 0x13 | 0x16, text, _))) = (oid == CN, der_next(value)) {
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// The first DER element of `input`: its tag, contents and what follows.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn read(setting: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        setting,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn certs(setting: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            setting,
            path: path.to_owned(),
            message: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            setting,
            path: path.to_owned(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn key(setting: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(setting, path)?;
    // The error never shows the file's content.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::File {
        setting,
        path: path.to_owned(),
        message: "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
    })
}

/// The *ring* provider: the one already in the build (reqwest's rustls uses
/// it); aws-lc-rs, with post-quantum key exchange, would add a C build.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration `api` asks for; `None` for plain HTTP.
pub fn server_config(api: &ApiSettings) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (cert, key_file) = (api.tls_cert_file.trim(), api.tls_key_file.trim());
    let client_ca = api.tls_client_ca_file.trim();
    if cert.is_empty() {
        if !key_file.is_empty() || !client_ca.is_empty() {
            return Err(TlsError::Config(
                "api.tls_key_file and api.tls_client_ca_file need api.tls_cert_file (the API's certificate)".into(),
            ));
        }
        return Ok(None);
    }
    if key_file.is_empty() {
        return Err(TlsError::Config(
            "api.tls_cert_file is set but api.tls_key_file is not".into(),
        ));
    }
    let chain = certs("api.tls_cert_file", cert)?;
    let key = key("api.tls_key_file", key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in certs("api.tls_client_ca_file", client_ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                setting: "api.tls_client_ca_file",
                path: client_ca.to_owned(),
                message: e.to_string(),
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier = if api.tls_require_client_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Config(format!("api.tls_client_ca_file: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("api.tls_cert_file and api.tls_key_file: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The certificate and key files a replica forwards with, if any.
fn forward_identity(api: &ApiSettings) -> Option<(&str, &str)> {
    let cert = Some(api.tls_forward_cert_file.trim())
        .filter(|c| !c.is_empty())
        .unwrap_or(api.tls_cert_file.trim());
    let key = Some(api.tls_forward_key_file.trim())
        .filter(|k| !k.is_empty())
        .unwrap_or(api.tls_key_file.trim());
    (!cert.is_empty() && !key.is_empty()).then_some((cert, key))
}

/// The subjects whose certificates are replicas forwarding a caller
/// (`api.tls_replica_subjects`, or the names of this replica's own
/// forwarding certificate).
pub fn replica_subjects(api: &ApiSettings) -> Result<Vec<String>, TlsError> {
    let listed: Vec<String> = api
        .tls_replica_subjects
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if !listed.is_empty() || !api.tls() {
        return Ok(listed);
    }
    let Some((cert, _)) = forward_identity(api) else {
        return Ok(Vec::new());
    };
    let setting = if api.tls_forward_cert_file.trim().is_empty() {
        "api.tls_cert_file"
    } else {
        "api.tls_forward_cert_file"
    };
    let first = certs(setting, cert)?.swap_remove(0);
    Ok(PeerCert::from_der(&first)
        .map(|p| p.names.into_iter().take(1).collect())
        .unwrap_or_default())
}

/// The HTTP client replicas forward requests with: https trusting
/// `api.tls_ca_file` (or the client CA) and presenting the forwarding
/// certificate when the API is served over TLS; plain HTTP otherwise.
pub fn forward_client(api: &ApiSettings) -> Result<reqwest::Client, TlsError> {
    // The server closes a connection idle for api.header_timeout_ms (hyper's
    // header timeout runs while it waits for the next request): the pool lets
    // idle connections go sooner, so it does not reuse one being closed.
    let idle = Duration::from_millis((api.header_timeout_ms / 2).max(1));
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(idle)
        .no_proxy();
    if !api.tls() {
        return builder
            .build()
            .map_err(|e| TlsError::Config(format!("the forwarding HTTP client: {e}")));
    }
    let mut builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
    let (setting, ca) = match api.tls_ca_file.trim() {
        "" => ("api.tls_client_ca_file", api.tls_client_ca_file.trim()),
        ca => ("api.tls_ca_file", ca),
    };
    if ca.is_empty() {
        builder = builder.tls_built_in_root_certs(true);
    } else {
        for c in certs(setting, ca)? {
            let c = reqwest::Certificate::from_der(&c).map_err(|e| TlsError::File {
                setting,
                path: ca.to_owned(),
                message: e.to_string(),
            })?;
            builder = builder.add_root_certificate(c);
        }
    }
    if let Some((cert, key)) = forward_identity(api) {
        let mut pem = read("api.tls_forward_cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read("api.tls_forward_key_file", key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            TlsError::Config(format!(
                "the forwarding certificate ({cert}) and key ({key}): {e}"
            ))
        })?;
        builder = builder.identity(id);
    }
    builder
        .build()
        .map_err(|e| TlsError::Config(format!("the forwarding HTTPS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_finds_the_common_name_among_other_attributes() {
        // SET { SEQ { OID 2.5.4.10 (O), UTF8 "acme" } }, SET { SEQ { OID 2.5.4.3 (CN), PrintableString "ci-bot" } }
        let subject = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'a', b'c', b'm',
            b'e', 0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x06, b'c', b'i',
            b'-', b'b', b'o', b't',
        ];
        assert_eq!(common_name(&subject).as_deref(), Some("ci-bot"));
        assert_eq!(common_name(&subject[..15]), None);
        assert_eq!(common_name(&subject[..20]), None, "truncated input");
        assert_eq!(der_next(&[0x30, 0x82, 0x01]), None);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_by_name() {
        let mut api = weft_shared::config::WeftConfig::default().api;
        assert!(server_config(&api).unwrap().is_none());
        api.tls_client_ca_file = "/x/ca.crt".into();
        assert!(server_config(&api)
            .unwrap_err()
            .to_string()
            .contains("need api.tls_cert_file"));
        api.tls_cert_file = "/nonexistent/api.crt".into();
        assert!(server_config(&api)
            .unwrap_err()
            .to_string()
            .contains("api.tls_key_file is not"));
        api.tls_key_file = "/nonexistent/api.key".into();
        let e = server_config(&api).unwrap_err().to_string();
        assert!(
            e.starts_with("api.tls_cert_file = /nonexistent/api.crt"),
            "{e}"
        );
    }
}
