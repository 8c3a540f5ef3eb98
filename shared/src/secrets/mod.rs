//! Secrets of a workflow instance, envelope-encrypted: the secrets a start
//! request carries are sealed once, when the instance is created, into a
//! string ([`SECRETS_KEY`] of the workflow input) that every record holds in
//! place of the clear values — events, task dispatches, snapshots, the
//! orchestrator's store and API responses only ever see ciphertext.
//!
//! Sealing draws a fresh 256-bit data key for the instance, encrypts the
//! secrets (a JSON object of names to strings) with it under
//! XChaCha20-Poly1305, bound to the workflow type and instance id, and wraps
//! the data key with a key-encryption key named by a key id that the
//! envelope carries in clear. Rotating the key-encryption key is adding a
//! new key id to the [`Keyring`] and making it active: old envelopes still
//! open with the old key, none is rewritten.
//!
//! Only workers open envelopes, for the secrets a task's definition names
//! (its `secrets` parameter, see [`requested_names`]). See ADR 0014.

mod envelope;
mod keyring;

pub use envelope::{open, seal, Envelope, SecretValue, Secrets};
pub use keyring::{Keyring, KeyringError, KEY_BYTES};

use crate::data::{DataMap, WorkflowData};

/// The workflow-input key holding an instance's sealed secrets.
pub const SECRETS_KEY: &str = "weft.secrets";

/// The task parameter listing the secrets a task may see.
pub const SECRETS_PARAMETER: &str = "secrets";

/// Most secrets one instance may carry.
pub const MAX_SECRETS: usize = 64;

/// Largest total size of an instance's secrets, names and values (bytes).
pub const MAX_SECRETS_BYTES: usize = 64 * 1024;

/// Why secrets could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The envelope names a key id the keyring does not hold.
    #[error("unknown key id '{key_id}' (this process holds: {known})")]
    UnknownKeyId { key_id: String, known: String },
    /// The envelope is not one this version writes.
    #[error("malformed secrets envelope: {0}")]
    Malformed(String),
    /// Authentication failed: wrong key, or the envelope belongs to another instance or was altered.
    #[error("secrets envelope of key id '{key_id}' does not decrypt (wrong key, another instance's envelope, or altered)")]
    Decrypt { key_id: String },
    /// Too many secrets, too large, or a bad name.
    #[error("invalid secrets: {0}")]
    Invalid(String),
    /// No key to seal with.
    #[error("no secrets key configured (set secrets.keys_file or secrets.keys)")]
    NoKey,
}

impl SecretsError {
    /// A stable classification for DLQ reasons and task errors.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretsError::UnknownKeyId { .. } => "secrets_unknown_key_id",
            SecretsError::Malformed(_) => "secrets_malformed",
            SecretsError::Decrypt { .. } => "secrets_decrypt_failed",
            SecretsError::Invalid(_) => "secrets_invalid",
            SecretsError::NoKey => "secrets_no_key",
        }
    }
}

/// The secret names a task's `parameters` ask for (its `secrets` parameter:
/// one name or a list of names); empty when it names none.
pub fn requested_names(parameters: &DataMap) -> Vec<String> {
    match parameters.get(SECRETS_PARAMETER) {
        Some(WorkflowData::Str(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(WorkflowData::List(l)) => l.clone(),
        _ => Vec::new(),
    }
}

/// The sealed envelope of `input`, if it carries one.
pub fn sealed_in(input: &DataMap) -> Option<&str> {
    match input.get(SECRETS_KEY) {
        Some(WorkflowData::Str(s)) => Some(s),
        _ => None,
    }
}

/// Whether `name` may name a secret: 1-128 of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests;
