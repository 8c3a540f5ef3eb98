//! The security layers of the HTTP API, put around the router by
//! [`secure`]: the secrets keyring start requests seal with (an
//! [`axum::Extension`] for [`super::workflows::start`]), and, when
//! `auth.enabled`, who is calling and whether their roles allow the route
//! (see ADR 0015). Off by default, with a warning at start.

use std::sync::Arc;

use axum::Router;
use weft_shared::config::WeftConfig;
use weft_shared::secrets::Keyring;

/// Why the API's security could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("secrets keys: {0}")]
    Keys(#[from] weft_shared::secrets::KeyringError),
}

/// `app` with the security layers `config` asks for.
pub fn secure(app: Router, config: &WeftConfig) -> Result<Router, SecurityError> {
    let keyring = Keyring::from_settings(&config.secrets)?;
    if keyring.is_empty() {
        tracing::info!("no secrets keys: start requests with secrets are refused");
    } else {
        tracing::info!(key_ids = ?keyring.ids(), active = keyring.active().map(|(id, _)| id), "secrets keys loaded");
    }
    if !config.auth.enabled {
        tracing::warn!("API authentication is off (auth.enabled=false): anyone who can reach the API may read, start, cancel and register anything");
    }
    Ok(app.layer(axum::Extension(Arc::new(keyring))))
}
