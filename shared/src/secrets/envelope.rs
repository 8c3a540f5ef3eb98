//! The envelope format, `wsec1.<key id>.<wrapped data key>.<ciphertext>`:
//! the two binary parts are URL-safe base64 (no padding) of a 24-byte
//! XChaCha20-Poly1305 nonce followed by the sealed bytes. The data key is
//! wrapped under the key-encryption key with the key id as associated data;
//! the secrets are sealed under the data key with the workflow type and
//! instance id as associated data, so an envelope copied to another instance
//! does not open.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

use super::keyring::{valid_key_id, Keyring};
use super::{valid_name, SecretsError, MAX_SECRETS, MAX_SECRETS_BYTES};

const PREFIX: &str = "wsec1";
const NONCE: usize = 24;

/// A secret's clear value: never printed (`Debug` and `Display` show
/// `<redacted>`), wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the handler that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::config::REDACTED)
    }
}

/// Opened secrets by name.
pub type Secrets = BTreeMap<String, SecretValue>;

/// The parts of an envelope, parsed but not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub key_id: String,
    wrapped: Vec<u8>,
    sealed: Vec<u8>,
}

impl Envelope {
    /// Parses `text` (checks the format only; nothing is decrypted).
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let bad = |m: &str| SecretsError::Malformed(m.to_owned());
        let mut parts = text.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad("does not start with 'wsec1.'"));
        }
        let (Some(key_id), Some(wrapped), Some(sealed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected 4 dot-separated parts"));
        };
        if !valid_key_id(key_id) {
            return Err(bad("invalid key id"));
        }
        let decode = |what: &str, s: &str| {
            let bytes = URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| bad(&format!("{what} is not base64")))?;
            if bytes.len() <= NONCE + 16 {
                return Err(bad(&format!("{what} is too short")));
            }
            Ok(bytes)
        };
        Ok(Self {
            key_id: key_id.to_owned(),
            wrapped: decode("wrapped key", wrapped)?,
            sealed: decode("ciphertext", sealed)?,
        })
    }
}

fn instance_aad(workflow_type: &str, instance_id: &str) -> Vec<u8> {
    format!("weft-secrets:v1:{workflow_type}/{instance_id}").into_bytes()
}

fn key_aad(key_id: &str) -> Vec<u8> {
    format!("weft-kek:v1:{key_id}").into_bytes()
}

fn encrypt(key: &[u8], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encryption of a bounded message cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn decrypt(key: &[u8], data: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let (nonce, ct) = data.split_at(NONCE);
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// Checks the secrets' names and sizes.
fn check(secrets: &BTreeMap<String, String>) -> Result<(), SecretsError> {
    if secrets.len() > MAX_SECRETS {
        return Err(SecretsError::Invalid(format!(
            "{} secrets; at most {MAX_SECRETS}",
            secrets.len()
        )));
    }
    if let Some(bad) = secrets.keys().find(|n| !valid_name(n)) {
        return Err(SecretsError::Invalid(format!(
            "secret name '{bad}' must be 1-128 of [A-Za-z0-9_.-]"
        )));
    }
    let size: usize = secrets.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRETS_BYTES {
        return Err(SecretsError::Invalid(format!(
            "secrets take {size} bytes; at most {MAX_SECRETS_BYTES}"
        )));
    }
    Ok(())
}

/// Seals `secrets` for instance `instance_id` of `workflow_type` under the
/// keyring's active key: a new data key, wrapped.
pub fn seal(
    keyring: &Keyring,
    workflow_type: &str,
    instance_id: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<String, SecretsError> {
    check(secrets)?;
    let (key_id, kek) = keyring.active().ok_or(SecretsError::NoKey)?;
    let mut dek = Zeroizing::new([0u8; super::KEY_BYTES]);
    OsRng.fill_bytes(dek.as_mut_slice());
    let plain = Zeroizing::new(
        serde_json::to_vec(secrets).expect("a map of strings always serializes to JSON"),
    );
    let wrapped = encrypt(kek, dek.as_slice(), &key_aad(key_id));
    let sealed = encrypt(
        dek.as_slice(),
        &plain,
        &instance_aad(workflow_type, instance_id),
    );
    Ok(format!(
        "{PREFIX}.{key_id}.{}.{}",
        URL_SAFE_NO_PAD.encode(wrapped),
        URL_SAFE_NO_PAD.encode(sealed)
    ))
}

/// Opens `envelope` of instance `instance_id` of `workflow_type`, keeping
/// only the secrets named in `wanted`; a name the envelope lacks is an error.
pub fn open(
    keyring: &Keyring,
    workflow_type: &str,
    instance_id: &str,
    envelope: &str,
    wanted: &[String],
) -> Result<Secrets, SecretsError> {
    let env = Envelope::parse(envelope)?;
    let kek = keyring
        .get(&env.key_id)
        .ok_or_else(|| SecretsError::UnknownKeyId {
            key_id: env.key_id.clone(),
            known: keyring.describe(),
        })?;
    let fail = || SecretsError::Decrypt {
        key_id: env.key_id.clone(),
    };
    let dek = Zeroizing::new(decrypt(kek, &env.wrapped, &key_aad(&env.key_id)).ok_or_else(fail)?);
    if dek.len() != super::KEY_BYTES {
        return Err(fail());
    }
    let plain = Zeroizing::new(
        decrypt(&dek, &env.sealed, &instance_aad(workflow_type, instance_id)).ok_or_else(fail)?,
    );
    let mut all: BTreeMap<String, String> = serde_json::from_slice(&plain)
        .map_err(|_| SecretsError::Malformed("sealed content is not a map of strings".into()))?;
    let mut out = Secrets::new();
    for name in wanted {
        match all.remove(name) {
            Some(v) => {
                out.insert(name.clone(), SecretValue(v));
            }
            None => {
                return Err(SecretsError::Invalid(format!(
                    "the task asks for secret '{name}', which this instance was not started with"
                )))
            }
        }
    }
    for v in all.values_mut() {
        v.zeroize();
    }
    Ok(out)
}
