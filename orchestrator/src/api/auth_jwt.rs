//! JWT bearer tokens verified against a JWKS file (`auth.jwks_file`), for
//! single sign-on: the token's `kid` picks the key (a set with one key needs
//! none), its `alg` must fit the key's type (RSA: RS*/PS*, EC: ES*, OKP:
//! EdDSA; symmetric keys are refused), `exp` is required, and `iss` / `aud`
//! are checked when `auth.jwt_issuer` / `auth.jwt_audience` are set. The
//! caller is the `sub` claim; its grants (`role:namespace`) are in the
//! policy's roles claim (default `roles`: a list, or a space-separated string).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::auth_policy::{Grant, Identity};

/// Verifies JWTs with the keys of a JWKS file.
pub struct JwtVerifier {
    keys: Vec<(Option<String>, Jwk, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("kids", &self.keys.iter().map(|k| &k.0).collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn fits(alg: Algorithm, jwk: &Jwk) -> bool {
    use Algorithm::*;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        AlgorithmParameters::OctetKey(_) => false,
    }
}

impl JwtVerifier {
    /// Loads the JWKS file at `path`.
    pub fn load(
        path: &str,
        issuer: &str,
        audience: &str,
        roles_claim: &str,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the JWKS file {path}: {e}"))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("JWKS file {path} is not a JSON Web Key Set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(format!(
                    "JWKS file {path}: symmetric (oct) keys are not accepted; publish public keys only"
                ));
            }
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|e| format!("JWKS file {path}: a key cannot be used: {e}"))?;
            keys.push((jwk.common.key_id.clone(), jwk, key));
        }
        if keys.is_empty() {
            return Err(format!("JWKS file {path} holds no key"));
        }
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Self {
            keys,
            issuer: opt(issuer),
            audience: opt(audience),
            roles_claim: roles_claim.to_owned(),
        })
    }

    /// The caller a token names, or why it is not accepted (no token text in it).
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let candidates: Vec<&(Option<String>, Jwk, DecodingKey)> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|(k, _, _)| k.as_deref() == Some(kid))
                .collect(),
            None if self.keys.len() == 1 => self.keys.iter().collect(),
            None => return Err("the JWT has no kid and the JWKS holds several keys".into()),
        };
        let Some((_, jwk, key)) = candidates.first() else {
            return Err(format!(
                "no key '{}' in the JWKS",
                header.kid.unwrap_or_default()
            ));
        };
        if !fits(header.alg, jwk) {
            return Err(format!("alg {:?} does not fit the key", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        let data = decode::<serde_json::Map<String, Value>>(token, key, &v)
            .map_err(|e| format!("JWT rejected: {e}"))?;
        let claims = data.claims;
        let name = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the JWT has no sub")?
            .to_owned();
        let raw: Vec<String> = match claims.get(&self.roles_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        // Grants that do not parse give nothing (an IdP may put other roles there).
        let grants = raw.iter().filter_map(|g| Grant::parse(g).ok()).collect();
        Ok(Identity {
            name,
            method: "jwt",
            grants,
        })
    }
}
