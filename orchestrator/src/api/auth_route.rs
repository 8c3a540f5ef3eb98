//! What each API request needs (ADR 0015): nothing (health, readiness,
//! metrics, the OpenAPI document, the UI's static pages), an authenticated
//! caller, or a role on a workflow type — `reader` to read, `operator` to
//! change an instance, `admin` for definitions and admin endpoints. Any
//! `/v1` route not listed needs `admin` on every type, so a new route is
//! closed until it is classified here.

use axum::http::Method;

use super::auth_policy::Role;

/// Where a role is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// On this workflow type.
    Type(String),
    /// On every type (a `*` grant).
    All,
    /// On the type the request body's definition names.
    BodyType,
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    Open,
    Authenticated,
    Role {
        role: Role,
        scope: Scope,
        /// Counted by the per-caller rate limit (starts and signals).
        limited: bool,
    },
}

fn role(role: Role, ty: &str) -> Need {
    Need::Role {
        role,
        scope: Scope::Type(ty.to_owned()),
        limited: false,
    }
}

/// The need of `method path?query`.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Need {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match segs.as_slice() {
        [first, ..] if *first != "v1" => Need::Open,
        ["v1", "openapi.json"] => Need::Open,
        ["v1", "workflows"] if get => match query_type(query) {
            Some(ty) => role(Role::Reader, &ty),
            // the handler answers 400 naming the missing parameter
            None => Need::Authenticated,
        },
        ["v1", "workflows", ty] if post => Need::Role {
            role: Role::Operator,
            scope: Scope::Type((*ty).to_owned()),
            limited: true,
        },
        ["v1", "workflows", ty, _id] if get => role(Role::Reader, ty),
        ["v1", "workflows", ty, _id, "events" | "state" | "trace" | "watch" | "children"]
            if get =>
        {
            role(Role::Reader, ty)
        }
        ["v1", "workflows", ty, _id, "replay"] if post => role(Role::Reader, ty),
        ["v1", "workflows", ty, _id, "cancel" | "pause" | "resume"] if post => {
            role(Role::Operator, ty)
        }
        ["v1", "workflows", ty, _id, "signals", _name] if post => Need::Role {
            role: Role::Operator,
            scope: Scope::Type((*ty).to_owned()),
            limited: true,
        },
        ["v1", "analytics", ty] if get => role(Role::Reader, ty),
        ["v1", "definitions"] if post => Need::Role {
            role: Role::Admin,
            scope: Scope::BodyType,
            limited: false,
        },
        ["v1", "definitions"] if get => Need::Authenticated,
        ["v1", "definitions", ty, ..] if get => role(Role::Reader, ty),
        ["v1", "dlq", ty, ..] if get => role(Role::Reader, ty),
        ["v1", "dlq", ty, ..] if post => role(Role::Operator, ty),
        ["v1", "nodes"] if get => Need::Authenticated,
        _ => Need::Role {
            role: Role::Admin,
            scope: Scope::All,
            limited: false,
        },
    }
}

fn query_type(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "type" && !v.is_empty()).then(|| v.to_owned())
    })
}

/// The instance id a path names, for audit lines.
pub fn instance_of(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "workflows", _ty, id, ..] => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(m: Method, p: &str) -> Need {
        let (path, query) = match p.split_once('?') {
            Some((a, b)) => (a, Some(b)),
            None => (p, None),
        };
        classify(&m, path, query)
    }

    #[test]
    fn every_route_needs_what_adr_0015_says() {
        use Method as M;
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/openapi.json",
            "/",
            "/ui/app.js",
        ] {
            assert_eq!(need(M::GET, p), Need::Open, "{p}");
        }
        let r = |ty: &str| role(Role::Reader, ty);
        let o = |ty: &str| role(Role::Operator, ty);
        let limited = |ty: &str| Need::Role {
            role: Role::Operator,
            scope: Scope::Type(ty.into()),
            limited: true,
        };
        assert_eq!(
            need(M::GET, "/v1/workflows?type=pay&state=running"),
            r("pay")
        );
        assert_eq!(need(M::GET, "/v1/workflows/pay/abc"), r("pay"));
        assert_eq!(need(M::GET, "/v1/workflows/pay/abc/events"), r("pay"));
        assert_eq!(need(M::GET, "/v1/workflows/pay/abc/trace"), r("pay"));
        assert_eq!(need(M::GET, "/v1/workflows/pay/abc/children"), r("pay"));
        assert_eq!(need(M::GET, "/v1/workflows/pay/abc/watch"), r("pay"));
        assert_eq!(need(M::POST, "/v1/workflows/pay/abc/replay"), r("pay"));
        assert_eq!(need(M::GET, "/v1/analytics/pay"), r("pay"));
        assert_eq!(need(M::GET, "/v1/definitions/pay/3"), r("pay"));
        assert_eq!(need(M::POST, "/v1/workflows/pay"), limited("pay"));
        assert_eq!(
            need(M::POST, "/v1/workflows/pay/abc/signals/go"),
            limited("pay")
        );
        assert_eq!(need(M::POST, "/v1/workflows/pay/abc/cancel"), o("pay"));
        assert_eq!(need(M::POST, "/v1/workflows/pay/abc/pause"), o("pay"));
        assert_eq!(need(M::POST, "/v1/workflows/pay/abc/resume"), o("pay"));
        assert_eq!(
            need(M::POST, "/v1/definitions"),
            Need::Role {
                role: Role::Admin,
                scope: Scope::BodyType,
                limited: false
            }
        );
        let admin_all = Need::Role {
            role: Role::Admin,
            scope: Scope::All,
            limited: false,
        };
        assert_eq!(need(M::GET, "/v1/admin/projection-digest"), admin_all);
        assert_eq!(need(M::DELETE, "/v1/workflows/pay/abc"), admin_all);
        assert_eq!(need(M::GET, "/v1/something-new"), admin_all);
        assert_eq!(instance_of("/v1/workflows/pay/abc/cancel"), Some("abc"));
        assert_eq!(instance_of("/v1/workflows/pay"), None);
    }
}
