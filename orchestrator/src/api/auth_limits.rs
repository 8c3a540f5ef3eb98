//! Per-caller rate limits of starts and signals: a token bucket per caller
//! (its identity name; `anonymous` when authentication is off) holding up to
//! `api.rate_limit_per_minute` requests, refilled continuously at that rate.

//!
//! The guard puts a [`RateTicket`] on a limited request; [`charge`], the
//! innermost layer, takes it from the budget on the replica that serves the
//! request. A request forwarded to its instance's owner therefore counts
//! once, on the owner (which cannot trust a forwarding header to say it was
//! counted before), and a request answered 503 (owner unknown or replaying)
//! not at all. Budgets are per replica (ADR 0015).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Callers tracked before idle, full buckets are dropped.
const MAX_CALLERS: usize = 10_000;

/// Token buckets by caller; a limit of 0 allows everything.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request of `caller`'s budget, or says how long until one is there.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        self.check_at(caller, Instant::now())
    }

    fn check_at(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CALLERS {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(caller.to_owned()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_sec))
        }
    }
}

/// A limited request's caller and the budget it is charged to.
#[derive(Clone)]
pub struct RateTicket {
    pub limiter: Arc<RateLimiter>,
    pub caller: String,
}

/// The layer that charges a [`RateTicket`]: 429 with `Retry-After` when the
/// caller's budget is spent.
pub async fn charge(req: Request, next: Next) -> Response {
    let Some(t) = req.extensions().get::<RateTicket>() else {
        return next.run(req).await;
    };
    match t.limiter.check(&t.caller) {
        Ok(()) => next.run(req).await,
        Err(retry) => {
            let secs = retry.as_secs().max(1);
            tracing::info!(caller = %t.caller, retry_s = secs, "rate limited");
            let mut resp = super::auth::refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!("caller '{}' is over api.rate_limit_per_minute for starts and signals; retry in {secs} s", t.caller),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_budget_refilled_over_time() {
        let l = RateLimiter::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t0).is_ok());
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            l.check_at("b", t0).is_ok(),
            "another caller is not limited by a"
        );
        assert!(l.check_at("a", t0 + Duration::from_secs(21)).is_ok());
        assert!(l.check_at("a", t0 + Duration::from_secs(21)).is_err());
        let off = RateLimiter::per_minute(0);
        assert!((0..1000).all(|_| off.check("x").is_ok()));
    }
}
