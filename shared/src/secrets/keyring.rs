//! [`Keyring`]: the key-encryption keys a process holds, by key id, and the
//! one new envelopes are sealed with. Keys come from the configuration,
//! never from the topics: `secrets.keys_file` is a file of `key_id=base64`
//! lines or a directory with one file per key id holding its base64 key (a
//! mounted Kubernetes Secret), and `secrets.keys` holds `key_id=base64`
//! pairs separated by commas (usually from `WEFT_SECRETS_KEYS`). A key is
//! 32 random bytes (`openssl rand -base64 32`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use zeroize::Zeroizing;

use crate::config::SecretsSettings;

/// Bytes of a key-encryption key and of a data key.
pub const KEY_BYTES: usize = 32;

/// Why the keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read secrets keys from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("secrets key {where_}: {message}")]
    Invalid { where_: String, message: String },
    #[error("secrets.active_key '{0}' is not one of the loaded key ids ({1})")]
    UnknownActive(String, String),
    #[error("several secrets keys are loaded ({0}): set secrets.active_key to the one new secrets are sealed with")]
    AmbiguousActive(String),
}

/// Key-encryption keys by key id. `Debug` shows the ids only.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, Zeroizing<[u8; KEY_BYTES]>>,
    active: Option<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

/// Whether `id` may be a key id: 1-64 of `[A-Za-z0-9_-]`.
pub(crate) fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    /// The keys the settings name (none when they name none).
    pub fn from_settings(s: &SecretsSettings) -> Result<Self, KeyringError> {
        let mut ring = Keyring::default();
        let path = s.keys_file.trim();
        if !path.is_empty() {
            ring.load_path(Path::new(path))?;
        }
        for pair in s.keys.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            ring.add_pair(pair, "in secrets.keys")?;
        }
        ring.choose_active(s.active_key.trim())?;
        Ok(ring)
    }

    /// Adds key `id` (tests, tools); the first key added becomes the active one.
    pub fn insert(&mut self, id: &str, key: [u8; KEY_BYTES]) -> Result<(), KeyringError> {
        if !valid_key_id(id) {
            return Err(KeyringError::Invalid {
                where_: format!("id '{id}'"),
                message: "a key id is 1-64 of [A-Za-z0-9_-]".into(),
            });
        }
        self.keys.insert(id.to_owned(), Zeroizing::new(key));
        if self.active.is_none() {
            self.active = Some(id.to_owned());
        }
        Ok(())
    }

    /// Makes `id` the key new envelopes are sealed with.
    pub fn set_active(&mut self, id: &str) -> Result<(), KeyringError> {
        if !self.keys.contains_key(id) {
            return Err(KeyringError::UnknownActive(id.to_owned(), self.describe()));
        }
        self.active = Some(id.to_owned());
        Ok(())
    }

    /// Whether no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// The key ids for messages: `k1, k2`, or `no keys`.
    pub fn describe(&self) -> String {
        if self.keys.is_empty() {
            "no keys".to_owned()
        } else {
            self.ids().join(", ")
        }
    }

    /// The active key id and key.
    pub fn active(&self) -> Option<(&str, &[u8])> {
        let id = self.active.as_deref()?;
        Some((id, self.keys.get(id)?.as_slice()))
    }

    /// The key of `id`.
    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.keys.get(id).map(|k| k.as_slice())
    }

    fn load_path(&mut self, path: &Path) -> Result<(), KeyringError> {
        let read_err = |source| KeyringError::Read {
            path: path.display().to_string(),
            source,
        };
        if path.is_dir() {
            let mut entries = std::fs::read_dir(path)
                .map_err(read_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_err)?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Kubernetes mounts keep their own entries (`..data`) beside the keys.
                if name.starts_with('.') || !entry.path().is_file() {
                    continue;
                }
                let text =
                    Zeroizing::new(std::fs::read_to_string(entry.path()).map_err(|source| {
                        KeyringError::Read {
                            path: entry.path().display().to_string(),
                            source,
                        }
                    })?);
                let key = decode_key(text.trim(), &format!("in {}", entry.path().display()))?;
                self.insert(&name, key)?;
            }
            return Ok(());
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_pair(line, &format!("on line {} of {}", n + 1, path.display()))?;
        }
        Ok(())
    }

    fn add_pair(&mut self, pair: &str, where_: &str) -> Result<(), KeyringError> {
        let Some((id, key)) = pair.split_once('=') else {
            return Err(KeyringError::Invalid {
                where_: where_.to_owned(),
                message: "expected key_id=base64key".into(),
            });
        };
        let key = decode_key(key.trim(), where_)?;
        self.insert(id.trim(), key)
    }

    fn choose_active(&mut self, configured: &str) -> Result<(), KeyringError> {
        if !configured.is_empty() {
            return self.set_active(configured);
        }
        self.active = match self.keys.len() {
            0 => None,
            1 => self.keys.keys().next().cloned(),
            _ => return Err(KeyringError::AmbiguousActive(self.describe())),
        };
        Ok(())
    }
}

fn decode_key(text: &str, where_: &str) -> Result<[u8; KEY_BYTES], KeyringError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE.decode(text))
            .map_err(|_| KeyringError::Invalid {
                where_: where_.to_owned(),
                message: "the key is not base64".into(),
            })?,
    );
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyringError::Invalid {
        where_: where_.to_owned(),
        message: format!(
            "a key is {KEY_BYTES} bytes (base64 of `openssl rand 32`), this one is {}",
            bytes.len()
        ),
    })
}
