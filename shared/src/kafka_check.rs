//! The start-up check of the broker connection when it is secured (a
//! `security.protocol` of `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`): without it
//! librdkafka retries a failed authentication or TLS handshake forever and
//! the process looks hung. [`check_broker`] asks for metadata for a few
//! seconds; an authentication or TLS failure becomes an error naming the
//! broker, the protocol, the SASL mechanism and the user — never a password.
//! A broker that is merely unreachable is left to the normal start-up path.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use crate::config::KafkaSettings;
use crate::kafka::{client_config, Role};

/// How long the check waits for the broker.
pub const CHECK_FOR: Duration = Duration::from_secs(10);

/// Why the secured connection to the broker failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerCheckError {
    #[error("cannot authenticate to the Kafka broker at {bootstrap} ({protocol}, SASL mechanism {mechanism}, user '{user}'): {reason}; check the sasl.username / sasl.password properties (WEFT_KAFKA_PROPERTY_SASL_*)")]
    Authentication {
        bootstrap: String,
        protocol: String,
        mechanism: String,
        user: String,
        reason: String,
    },
    #[error("TLS to the Kafka broker at {bootstrap} ({protocol}) failed: {reason}; check ssl.ca.location and the broker's certificate")]
    Tls {
        bootstrap: String,
        protocol: String,
        reason: String,
    },
}

/// Errors librdkafka reports while the check runs.
#[derive(Default)]
struct Capture(Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>);

impl ClientContext for Capture {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((code, reason.to_owned()));
    }
}

impl ConsumerContext for Capture {}

fn property<'a>(settings: &'a KafkaSettings, name: &str) -> &'a str {
    settings
        .properties
        .get(name)
        .map(String::as_str)
        .unwrap_or("")
}

/// Whether `settings` ask for a secured connection.
pub fn secured(settings: &KafkaSettings) -> bool {
    let p = property(settings, "security.protocol").to_ascii_uppercase();
    p == "SSL" || p.starts_with("SASL")
}

/// Checks a secured connection (see the module doc); does nothing for a plain one.
pub async fn check_broker(settings: &KafkaSettings) -> Result<(), BrokerCheckError> {
    if !secured(settings) {
        return Ok(());
    }
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || check_blocking(&settings, CHECK_FOR))
        .await
        .unwrap_or(Ok(()))
}

fn check_blocking(settings: &KafkaSettings, within: Duration) -> Result<(), BrokerCheckError> {
    let protocol = property(settings, "security.protocol").to_ascii_uppercase();
    let consumer: BaseConsumer<Capture> =
        match client_config(settings, Role::Admin).create_with_context(Capture::default()) {
            Ok(c) => c,
            // A configuration librdkafka refuses is reported by the normal start-up path.
            Err(_) => return Ok(()),
        };
    let start = Instant::now();
    while start.elapsed() < within {
        // Error events reach the context only while the client is polled, and
        // a poll returns at the first one: take all that are queued, or the
        // one naming the cause can wait behind others until the check ends.
        let _ = consumer.poll(Duration::from_millis(100));
        for _ in 0..1000 {
            if consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        let ok = consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok();
        let seen = std::mem::take(
            &mut *consumer
                .context()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (code, reason) in seen {
            let auth = matches!(
                code,
                Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
            ) || reason.contains("SASL authentication")
                || reason.contains("Authentication failed");
            if auth {
                return Err(BrokerCheckError::Authentication {
                    bootstrap: settings.bootstrap.clone(),
                    protocol,
                    mechanism: property(settings, "sasl.mechanism").to_owned(),
                    user: property(settings, "sasl.username").to_owned(),
                    reason,
                });
            }
            if matches!(code, Some(RDKafkaErrorCode::SSL))
                || reason.contains("SSL handshake")
                || reason.contains("certificate verify failed")
            {
                return Err(BrokerCheckError::Tls {
                    bootstrap: settings.bootstrap.clone(),
                    protocol,
                    reason,
                });
            }
        }
        if ok {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_secured_connections_are_checked_and_errors_hide_passwords() {
        let mut k = crate::config::WeftConfig::default().kafka;
        assert!(!secured(&k));
        k.properties
            .insert("security.protocol".into(), "sasl_ssl".into());
        assert!(secured(&k));
        let e = BrokerCheckError::Authentication {
            bootstrap: "b:9093".into(),
            protocol: "SASL_SSL".into(),
            mechanism: "SCRAM-SHA-512".into(),
            user: "weft".into(),
            reason: "Authentication failed".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("b:9093") && text.contains("SCRAM-SHA-512") && text.contains("'weft'")
        );
    }
}
