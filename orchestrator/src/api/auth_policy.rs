//! The authorization policy (`auth.policy_file`, TOML): namespaces — named
//! sets of workflow types — bearer tokens, stored as SHA-256 hashes, and
//! client-certificate subjects (mTLS, see [`super::tls`]), each with an
//! identity name and role grants. A grant is `role:namespace`;
//! `*` is the namespace of every type. Roles nest: `admin` ⊇ `operator` ⊇
//! `reader`. JWT callers carry grants of the same form in a claim (see
//! [`super::auth_jwt`]).
//!
//! ```toml
//! [namespaces]
//! payments = ["payment", "refund"]
//!
//! [[tokens]]
//! name = "ci-bot"
//! sha256 = "<hex of sha256(token)>"   # printf %s "$TOKEN" | sha256sum
//! roles = ["operator:payments", "reader:*"]
//!
//! [[certificates]]
//! subject = "deploy-bot.example.com"   # the certificate's CN, or one of its DNS/URI SANs
//! name = "deploy-bot"                  # optional; default: the subject
//! roles = ["admin:*"]
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The namespace every workflow type is in.
pub const ALL: &str = "*";

/// A role, in increasing power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One grant: `role` on the types of `namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub namespace: String,
}

impl Grant {
    /// Parses `role:namespace`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (role, ns) = s
            .split_once(':')
            .ok_or_else(|| format!("grant '{s}' is not role:namespace"))?;
        let role = Role::parse(role.trim()).ok_or_else(|| {
            format!("grant '{s}': unknown role '{role}' (reader, operator, admin)")
        })?;
        Ok(Self {
            role,
            namespace: ns.trim().to_owned(),
        })
    }
}

/// Who is calling and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, the JWT's `sub` or the client certificate's name.
    pub name: String,
    /// How the caller authenticated: `token`, `jwt`, `certificate`, or
    /// `anonymous` (auth off).
    pub method: &'static str,
    pub grants: Vec<Grant>,
}

/// Why the policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the auth policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("auth policy {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    namespaces: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
    #[serde(default)]
    jwt: RawJwt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    subject: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

struct CertificateEntry {
    subject: String,
    name: String,
    grants: Vec<Grant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    sha256: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default)]
    roles_claim: Option<String>,
}

struct TokenEntry {
    name: String,
    hash: [u8; 32],
    grants: Vec<Grant>,
}

/// The loaded policy.
pub struct Policy {
    namespaces: BTreeMap<String, Vec<String>>,
    tokens: Vec<TokenEntry>,
    certificates: Vec<CertificateEntry>,
    /// The JWT claim holding grants (default `roles`).
    pub roles_claim: String,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("namespaces", &self.namespaces)
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field(
                "certificates",
                &self
                    .certificates
                    .iter()
                    .map(|c| &c.subject)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Policy {
    /// Loads `path`.
    pub fn load(path: &str) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        if raw.namespaces.contains_key(ALL) {
            return Err(format!("namespace '{ALL}' is built in (every type)"));
        }
        let mut tokens = Vec::new();
        for t in raw.tokens {
            let hash = hex32(&t.sha256).ok_or_else(|| {
                format!(
                    "token '{}': sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    t.name
                )
            })?;
            let grants = grants(&raw.namespaces, &t.roles, &format!("token '{}'", t.name))?;
            tokens.push(TokenEntry {
                name: t.name,
                hash,
                grants,
            });
        }
        let mut certificates = Vec::new();
        for c in raw.certificates {
            let subject = c.subject.trim().to_owned();
            if subject.is_empty() {
                return Err("a [[certificates]] entry has an empty subject".into());
            }
            let what = format!("certificate '{subject}'");
            certificates.push(CertificateEntry {
                grants: grants(&raw.namespaces, &c.roles, &what)?,
                name: c.name.unwrap_or_else(|| subject.clone()),
                subject,
            });
        }
        Ok(Self {
            namespaces: raw.namespaces,
            tokens,
            certificates,
            roles_claim: raw.jwt.roles_claim.unwrap_or_else(|| "roles".to_owned()),
        })
    }

    /// The identity of a bearer token, if its hash is in the policy.
    pub fn token(&self, token: &str) -> Option<Identity> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Every entry is compared, in constant time each.
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found.map(|t| Identity {
            name: t.name.clone(),
            method: "token",
            grants: t.grants.clone(),
        })
    }

    /// The identity of a verified client certificate with `names` (its CN and
    /// SANs, see [`super::tls::PeerCert`]): the first `[[certificates]]`
    /// entry naming one of them, or a caller without grants named after the
    /// first name.
    pub fn certificate(&self, names: &[String]) -> Identity {
        let entry = self
            .certificates
            .iter()
            .find(|c| names.contains(&c.subject));
        match entry {
            Some(c) => Identity {
                name: c.name.clone(),
                method: "certificate",
                grants: c.grants.clone(),
            },
            None => Identity {
                name: names.first().cloned().unwrap_or_else(|| "?".into()),
                method: "certificate",
                grants: Vec::new(),
            },
        }
    }

    /// Whether `namespace` holds workflow type `ty`.
    fn holds(&self, namespace: &str, ty: &str) -> bool {
        namespace == ALL
            || self
                .namespaces
                .get(namespace)
                .is_some_and(|types| types.iter().any(|t| t == ty || t == ALL))
    }

    /// Whether `who` has `role` on type `ty` (`None`: on every type, i.e. a `*` grant).
    pub fn allows(&self, who: &Identity, role: Role, ty: Option<&str>) -> bool {
        who.grants.iter().any(|g| {
            g.role >= role
                && match ty {
                    Some(ty) => self.holds(&g.namespace, ty),
                    None => g.namespace == ALL,
                }
        })
    }

    /// The namespaces holding `ty`, for messages (`*` when none does).
    pub fn namespaces_of(&self, ty: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, types)| types.iter().any(|t| t == ty || t == ALL))
            .map(|(n, _)| n.clone())
            .collect();
        out.push(ALL.to_owned());
        out
    }
}

/// The grants `roles` of the entry `what`, each on a known namespace.
fn grants(
    namespaces: &BTreeMap<String, Vec<String>>,
    roles: &[String],
    what: &str,
) -> Result<Vec<Grant>, String> {
    let grants = roles
        .iter()
        .map(|g| Grant::parse(g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if let Some(g) = grants
        .iter()
        .find(|g| g.namespace != ALL && !namespaces.contains_key(&g.namespace))
    {
        return Err(format!(
            "{what}: grant on unknown namespace '{}'",
            g.namespace
        ));
    }
    Ok(grants)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
#[path = "auth_policy_tests.rs"]
mod tests;
