//! The fake Key Vault on the wire: the vault from the `Host` header, the bearer token from `Authorization`,
//! `api-version`, the routes (`/{secrets,keys,certificates}/{name}[/{version}|/versions]`), and Key Vault's
//! bodies and status codes (bundles, paged version lists with `nextLink`, error bodies, the 401 challenge).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Map, Value, json};

use super::material::{self, KeyType};
use super::state::{
    API_VERSIONS, Attributes, CertVersion, Entry, KeyVersion, LATEST_API_VERSION, MAX_PAGE_SIZE, ObjectKind,
    SecretVersion, Service, Vault, pick,
};
use crate::traffic::{self, TrafficLayer};

/// The router of `service`, every request counted (and faults applied) by vault and path.
pub(super) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .fallback(handler)
        .layer(axum::middleware::from_fn_with_state(
            TrafficLayer {
                traffic: service.traffic.clone(),
                key: traffic_key,
            },
            traffic::traffic_middleware,
        ))
        .with_state(service)
}

/// `{vault}{path}`, e.g. `kv1/secrets/s1`.
fn traffic_key(headers: &HeaderMap, uri: &Uri) -> String {
    let host = traffic::host_without_port(headers, uri);
    let vault = host.split('.').next().unwrap_or_default().to_string();
    format!("{vault}{}", uri.path())
}

pub(super) fn error_json(code: &str, message: &str, inner: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    json!({ "error": error })
}

fn error_response(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    (status, Json(error_json(code, message, inner))).into_response()
}

fn not_found(kind: ObjectKind, name_or_id: &str) -> Response {
    let noun = kind.noun();
    error_response(
        StatusCode::NOT_FOUND,
        kind.not_found_code(),
        &format!(
            "A {noun} with (name/id) {name_or_id} was not found in this key vault. If you recently deleted this {noun} \
             you may be able to recover it using the correct recovery command. For help resolving this issue, please \
             see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn unauthorized(service: &Service, tenant: &str, message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "Unauthorized", message, None);
    let challenge = format!(
        "Bearer authorization=\"{}{tenant}\", resource=\"{}\"",
        service.config.authority_host, service.config.resource
    );
    if let Ok(value) = HeaderValue::try_from(challenge) {
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The bearer token of `Authorization`, if there is a non-empty one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

enum Op<'a> {
    Get { name: &'a str, version: Option<&'a str> },
    Versions { name: &'a str },
}

async fn handler(
    State(inner): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let host = traffic::host_without_port(&headers, &uri);
    let suffix = format!(".{}", inner.config.dns_suffix);
    let Some(vault_name) = host.strip_suffix(&suffix).filter(|v| !v.is_empty() && !v.contains('.')) else {
        // A real client would fail name resolution; say which host was unexpected.
        return (
            StatusCode::NOT_FOUND,
            format!("the fake Key Vault serves *{suffix}, not {host}"),
        )
            .into_response();
    };
    let tenant = match inner.state().vaults.get(vault_name) {
        Some(v) => v.tenant.clone(),
        None => {
            return (
                StatusCode::NOT_FOUND,
                format!("vault {vault_name} does not exist in the fake Key Vault"),
            )
                .into_response();
        }
    };
    let caller = match inner.authenticate(bearer_token(&headers), &tenant) {
        Ok(c) => c,
        Err(message) => return unauthorized(&inner, &tenant, &message),
    };
    let q = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match q("api-version") {
        None => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The 'api-version' query parameter is missing.",
                None,
            );
        }
        Some(v) if !API_VERSIONS.contains(&v) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
                ),
                None,
            );
        }
        Some(_) => {}
    }
    if method != Method::GET {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadParameter",
            &format!("The fake Key Vault only serves GET, not {method}."),
            None,
        );
    }
    let Some((kind, op)) = parse_route(uri.path()) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Path {} was not found.", uri.path()),
            None,
        );
    };
    let state = inner.state();
    let Some(vault) = state.vaults.get(vault_name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !vault.granted.contains(&caller.appid) {
        let action = if matches!(op, Op::Versions { .. }) {
            "list"
        } else {
            "get"
        };
        return error_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have {} {action} \
                 permission on key vault '{vault_name};location=eastus'. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125287",
                caller.appid,
                caller.oid,
                caller.tenant,
                kind.collection()
            ),
            Some("AccessDenied"),
        );
    }
    let base = format!("https://{}", traffic::host_with_port(&headers, &uri));
    let api_version = q("api-version").unwrap_or(LATEST_API_VERSION);
    match op {
        Op::Get { name, version } => get_object(vault, &base, kind, name, version, q("outContentType")),
        Op::Versions { name } => {
            let page = PageRequest {
                base: &base,
                api_version,
                maxresults: q("maxresults"),
                skiptoken: q("$skiptoken"),
                page_size: inner.config.page_size.clamp(1, MAX_PAGE_SIZE),
            };
            list_versions(vault, kind, name, &page)
        }
    }
}

/// The object collection and operation a path addresses: `/{collection}/{name}[/]`, `/{collection}/{name}/versions`
/// or `/{collection}/{name}/{version}`.
fn parse_route(path: &str) -> Option<(ObjectKind, Op<'_>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [collection, rest @ ..] = segments.as_slice() else {
        return None;
    };
    let kind = match *collection {
        "secrets" => ObjectKind::Secret,
        "keys" => ObjectKind::Key,
        "certificates" => ObjectKind::Certificate,
        _ => return None,
    };
    let op = match rest {
        [name] | [name, ""] if !name.is_empty() => Op::Get { name, version: None },
        [name, "versions"] if !name.is_empty() => Op::Versions { name },
        [name, version] if !name.is_empty() => Op::Get {
            name,
            version: Some(version),
        },
        _ => return None,
    };
    Some((kind, op))
}

fn get_object(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
    out_content_type: Option<&str>,
) -> Response {
    let lname = name.to_ascii_lowercase();
    let shown = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_string(),
    };
    match kind {
        ObjectKind::Secret => {
            let Some((stored_name, s)) = pick(vault.secrets.get(&lname), version, |s| &s.version) else {
                return not_found(kind, &shown);
            };
            if !s.attributes.enabled {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    Some("SecretDisabled"),
                );
            }
            let (value, content_type) = match out_content_type {
                None => (s.value.clone(), s.content_type.clone()),
                Some("application/x-pem-file") if s.content_type.as_deref() == Some("application/x-pem-file") => {
                    (s.value.clone(), s.content_type.clone())
                }
                Some("application/x-pem-file") if s.pem_form.is_some() => (
                    s.pem_form.clone().unwrap_or_default(),
                    Some("application/x-pem-file".to_string()),
                ),
                Some(other) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "BadParameter",
                        &format!("The outContentType {other} is not supported for this secret."),
                        None,
                    );
                }
            };
            let mut body = json!({
                "value": value,
                "id": format!("{base}/secrets/{stored_name}/{}", s.version),
                "attributes": attributes_json(&s.attributes),
                "tags": {},
            });
            if let Some(ct) = content_type {
                body["contentType"] = json!(ct);
            }
            if s.certificate.is_some() {
                body["kid"] = json!(format!("{base}/keys/{stored_name}/{}", s.version));
                body["managed"] = json!(true);
            }
            Json(body).into_response()
        }
        ObjectKind::Key => {
            let Some((stored_name, k)) = pick(vault.keys.get(&lname), version, |k| &k.version) else {
                return not_found(kind, &shown);
            };
            Json(key_bundle(base, stored_name, k)).into_response()
        }
        ObjectKind::Certificate => {
            let Some((stored_name, c)) = pick(vault.certificates.get(&lname), version, |c| &c.version) else {
                return not_found(kind, &shown);
            };
            Json(certificate_bundle(base, stored_name, c)).into_response()
        }
    }
}

fn key_bundle(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut jwk = Map::new();
    jwk.insert("kid".into(), json!(format!("{base}/keys/{name}/{}", k.version)));
    jwk.insert("key_ops".into(), json!(k.key_ops));
    for (field, value) in &k.jwk_fields {
        jwk.insert(field.clone(), value.clone());
    }
    let mut body = json!({ "key": Value::Object(jwk), "attributes": attributes_json(&k.attributes), "tags": {} });
    if k.managed {
        body["managed"] = json!(true);
    }
    body
}

fn certificate_bundle(base: &str, name: &str, c: &CertVersion) -> Value {
    let key_props = match c.key_type {
        KeyType::Rsa2048 => json!({ "exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false }),
        KeyType::Ec(curve) => json!({ "exportable": true, "kty": "EC", "crv": curve.jwk_name(), "reuse_key": false }),
    };
    json!({
        "id": format!("{base}/certificates/{name}/{}", c.version),
        "kid": format!("{base}/keys/{name}/{}", c.version),
        "sid": format!("{base}/secrets/{name}/{}", c.version),
        "x5t": material::x5t(&c.cer),
        "cer": STANDARD.encode(&c.cer),
        "attributes": attributes_json(&c.attributes),
        "tags": {},
        "policy": {
            "id": format!("{base}/certificates/{name}/policy"),
            "key_props": key_props,
            "secret_props": { "contentType": c.content_type.mime() },
            "x509_props": {
                "subject": c.subject,
                "sans": { "dns_names": c.dns_names },
                "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                "key_usage": ["digitalSignature", "keyEncipherment"],
                "validity_months": 12,
            },
            "lifetime_actions": [{ "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } }],
            "issuer": { "name": if c.self_signed { "Self" } else { "Unknown" } },
            "attributes": { "enabled": true, "created": c.attributes.created, "updated": c.attributes.created },
        },
    })
}

struct PageRequest<'a> {
    base: &'a str,
    api_version: &'a str,
    maxresults: Option<&'a str>,
    skiptoken: Option<&'a str>,
    page_size: usize,
}

fn list_versions(vault: &Vault, kind: ObjectKind, name: &str, page: &PageRequest<'_>) -> Response {
    let lname = name.to_ascii_lowercase();
    let max = match page.maxresults {
        None => page.page_size,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n.min(page.page_size),
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    &format!(
                        "The value '{raw}' of parameter maxresults is out of range: it must be between 1 and {MAX_PAGE_SIZE}."
                    ),
                    None,
                );
            }
        },
    };
    let offset = match page.skiptoken {
        None => 0,
        Some(token) => match decode_skiptoken(token) {
            Some(n) => n,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The $skiptoken is invalid.",
                    None,
                );
            }
        },
    };
    let listed = match kind {
        ObjectKind::Secret => list_items(vault.secrets.get(&lname), |n, s| secret_item(page.base, n, s)),
        ObjectKind::Key => list_items(vault.keys.get(&lname), |n, k| key_item(page.base, n, k)),
        ObjectKind::Certificate => list_items(vault.certificates.get(&lname), |n, c| certificate_item(page.base, n, c)),
    };
    let Some((stored_name, items)) = listed else {
        return not_found(kind, name);
    };
    let end = (offset + max).min(items.len());
    let value: Vec<Value> = items
        .get(offset.min(items.len())..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next_link = (end < items.len()).then(|| {
        format!(
            "{}/{}/{}/versions?api-version={}&$skiptoken={}&maxresults={max}",
            page.base,
            kind.collection(),
            stored_name,
            page.api_version,
            encode_skiptoken(end)
        )
    });
    Json(json!({ "value": value, "nextLink": next_link })).into_response()
}

/// An object's stored name and its versions as list items, oldest first.
fn list_items<T>(entry: Option<&Entry<T>>, item: impl Fn(&str, &T) -> Value) -> Option<(String, Vec<Value>)> {
    let entry = entry?;
    Some((
        entry.name.clone(),
        entry.versions.iter().map(|v| item(&entry.name, v)).collect(),
    ))
}

fn secret_item(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut item = json!({
        "id": format!("{base}/secrets/{name}/{}", s.version),
        "attributes": attributes_json(&s.attributes),
        "tags": {},
    });
    if let Some(ct) = &s.content_type {
        item["contentType"] = json!(ct);
    }
    if s.certificate.is_some() {
        item["managed"] = json!(true);
    }
    item
}

fn key_item(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut item = json!({
        "kid": format!("{base}/keys/{name}/{}", k.version),
        "attributes": attributes_json(&k.attributes),
        "tags": {},
    });
    if k.managed {
        item["managed"] = json!(true);
    }
    item
}

fn certificate_item(base: &str, name: &str, c: &CertVersion) -> Value {
    json!({
        "id": format!("{base}/certificates/{name}/{}", c.version),
        "x5t": material::x5t(&c.cer),
        "attributes": attributes_json(&c.attributes),
        "tags": {},
    })
}

fn encode_skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    std::str::from_utf8(&raw).ok()?.strip_prefix("offset:")?.parse().ok()
}

/// Attributes as Key Vault writes them.
fn attributes_json(attributes: &Attributes) -> Value {
    let mut m = Map::new();
    m.insert("enabled".into(), json!(attributes.enabled));
    if let Some(nbf) = attributes.nbf {
        m.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = attributes.exp {
        m.insert("exp".into(), json!(exp));
    }
    m.insert("created".into(), json!(attributes.created));
    m.insert("updated".into(), json!(attributes.updated));
    m.insert("recoveryLevel".into(), json!("Recoverable+Purgeable"));
    m.insert("recoverableDays".into(), json!(90));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_skiptoken(&encode_skiptoken(0)), Some(0));
        assert_eq!(decode_skiptoken(&encode_skiptoken(25)), Some(25));
        assert_eq!(decode_skiptoken("not base64!"), None);
        assert_eq!(decode_skiptoken(&URL_SAFE_NO_PAD.encode("offset:x")), None);
        assert_eq!(decode_skiptoken(&URL_SAFE_NO_PAD.encode("limit:3")), None);
    }

    #[test]
    fn attributes_serialize_like_key_vault() {
        let attributes = Attributes {
            enabled: false,
            created: 10,
            updated: 20,
            nbf: Some(5),
            exp: None,
        };
        assert_eq!(
            attributes_json(&attributes),
            json!({"enabled": false, "nbf": 5, "created": 10, "updated": 20,
                   "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90})
        );
    }
}
