//! Helpers of the security tests: raw reads of every topic, byte searches
//! through directories, keys files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

const CALL: Duration = Duration::from_secs(5);

/// One record as stored: topic, key, value and headers, raw.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl RawRecord {
    /// Whether `needle` is anywhere in the record's bytes.
    pub fn contains(&self, needle: &[u8]) -> bool {
        find(&self.key, needle)
            || find(&self.value, needle)
            || self
                .headers
                .iter()
                .any(|(k, v)| find(k.as_bytes(), needle) || find(v, needle))
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every record of every topic the broker has (internal ones included).
pub fn read_all_topics(bootstrap: &str) -> Result<Vec<RawRecord>> {
    let consumer: BaseConsumer = weft_integration_tests::broker::client_config(bootstrap)
        .set(
            "group.id",
            format!("weft-security-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.partition.eof", "false")
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(None, CALL)?;
    let mut out = Vec::new();
    for t in md.topics() {
        let topic = t.name();
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), CALL)?;
            if high > low {
                ends.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            }
        }
        if ends.is_empty() {
            continue;
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pending = ends.clone();
        while !pending.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "reading {topic}: partitions {:?} did not reach their end",
                    pending.keys()
                );
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                if let Ok(position) = consumer.position() {
                    pending.retain(|p, end| {
                        !matches!(
                            position.find_partition(topic, *p).map(|e| e.offset()),
                            Some(Offset::Offset(o)) if o >= *end
                        )
                    });
                }
                continue;
            };
            let msg = msg?;
            let mut headers = BTreeMap::new();
            if let Some(h) = msg.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_owned(),
                        header.value.unwrap_or_default().to_vec(),
                    );
                }
            }
            if msg.offset() + 1 >= ends[&msg.partition()] {
                pending.remove(&msg.partition());
            }
            out.push(RawRecord {
                topic: topic.to_owned(),
                key: msg.key().unwrap_or_default().to_vec(),
                value: msg.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        consumer.unassign()?;
    }
    Ok(out)
}

/// The files under `dir` (recursively) whose bytes hold `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Result<Vec<String>> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(&path) {
                    if find(&bytes, needle) {
                        hits.push(path.display().to_string());
                    }
                }
            }
        }
    }
    Ok(hits)
}

/// A random 32-byte key in base64.
pub fn random_key() -> ([u8; 32], String) {
    // Two v4 UUIDs give 244 random bits; the key is their 32 bytes.
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    let text = base64_encode(&key);
    (key, text)
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A secret nobody could guess: 24 random hex characters after a marker.
pub fn random_secret(marker: &str) -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    format!("{marker}{}", &a[..24])
}

/// The SHA-256 of `s` in hex, as `sha256sum` prints it.
pub fn sha256_hex(s: &str) -> Result<String> {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("piped").write_all(s.as_bytes())?;
            c.wait_with_output()
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// URL-safe base64 without padding (JWT parts, JWK members).
pub fn b64url(bytes: &[u8]) -> String {
    base64_encode(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// An Ed25519 key made by `openssl`: its PEM file and its public key as a JWK.
pub struct SigningKey {
    pub pem: std::path::PathBuf,
    pub kid: String,
    pub public_x: String,
}

impl SigningKey {
    pub fn generate(dir: &Path, kid: &str) -> Result<Self> {
        let pem = dir.join(format!("{kid}.pem"));
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()?;
        anyhow::ensure!(ok.success(), "openssl genpkey failed");
        let der = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&pem)
            .output()?;
        anyhow::ensure!(
            der.status.success() && der.stdout.len() >= 32,
            "openssl pkey failed"
        );
        let x = &der.stdout[der.stdout.len() - 32..];
        Ok(Self {
            pem,
            kid: kid.to_owned(),
            public_x: b64url(x),
        })
    }

    /// The JWK of the public key.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": self.public_x, "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }

    /// A JWT (EdDSA) with `claims`, signed with this key.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let data = self.pem.with_extension("input");
        std::fs::write(&data, &input)?;
        let sig = std::process::Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(&self.pem)
            .arg("-in")
            .arg(&data)
            .output()?;
        anyhow::ensure!(
            sig.status.success() && sig.stdout.len() == 64,
            "openssl pkeyutl -sign failed"
        );
        Ok(format!("{input}.{}", b64url(&sig.stdout)))
    }
}

/// Seconds since the epoch.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
