//! What the fake Azure services share besides their server: per-path request counters and injected faults
//! (latency, error statuses, dropped connections), and reading the `Host` a client addressed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

/// What an injected fault does to a matching request.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Answer with this status, headers and body instead of handling the request.
    Respond {
        status: StatusCode,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Send response headers, then abort the connection mid-body, as a reset connection looks to a client.
    DropConnection,
}

/// A fault applied to requests whose counter key starts with `key_prefix`, for the next `times` matching
/// requests (`None`: every one).
#[derive(Debug, Clone)]
pub struct Fault {
    pub key_prefix: String,
    pub action: FaultAction,
    pub times: Option<u32>,
}

#[derive(Debug, Default)]
struct TrafficState {
    counts: BTreeMap<String, u64>,
    faults: Vec<Fault>,
}

/// Request counters and fault rules, keyed by a string the service derives from each request (e.g.
/// `kv1/secrets/s1` for Key Vault, `/tenant/oauth2/v2.0/token` for Entra).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    inner: Arc<Mutex<TrafficState>>,
}

impl Traffic {
    fn lock(&self) -> MutexGuard<'_, TrafficState> {
        // A panicking test thread must not hide the counters from the others.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the request and returns the fault to apply, if any.
    pub fn record(&self, key: &str) -> Option<FaultAction> {
        let mut state = self.lock();
        *state.counts.entry(key.to_string()).or_default() += 1;
        let index = state.faults.iter().position(|f| key.starts_with(&f.key_prefix))?;
        let fault = &mut state.faults[index];
        let action = fault.action.clone();
        if let Some(times) = fault.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                state.faults.remove(index);
            }
        }
        Some(action)
    }

    pub fn count(&self, key: &str) -> u64 {
        self.lock().counts.get(key).copied().unwrap_or(0)
    }

    /// Sum over keys starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.lock()
            .counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    pub fn inject(&self, fault: Fault) {
        if fault.times != Some(0) {
            self.lock().faults.push(fault);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }
}

/// Middleware state: how to key a request, and where to count it.
#[derive(Clone)]
pub(crate) struct TrafficLayer {
    pub traffic: Traffic,
    pub key: fn(&HeaderMap, &http::Uri) -> String,
}

pub(crate) async fn traffic_middleware(State(layer): State<TrafficLayer>, request: Request, next: Next) -> Response {
    let key = (layer.key)(request.headers(), request.uri());
    match layer.traffic.record(&key) {
        None => next.run(request).await,
        Some(FaultAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(request).await
        }
        Some(FaultAction::Respond { status, headers, body }) => {
            let mut response = (status, body).into_response();
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::try_from(name.as_str()),
                    http::HeaderValue::try_from(value.as_str()),
                ) {
                    response.headers_mut().insert(n, v);
                }
            }
            response
        }
        Some(FaultAction::DropConnection) => {
            let failing = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault: drop"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_LENGTH, "1024")
                .body(Body::from_stream(failing))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// The host part of a `Host` header, without the port, lower-cased.
pub(crate) fn host_without_port(headers: &HeaderMap, uri: &http::Uri) -> String {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => raw,
    };
    host.to_ascii_lowercase()
}

/// The `Host` header verbatim (with port), for building absolute URLs the way the client addressed us.
pub(crate) fn host_with_port(headers: &HeaderMap, uri: &http::Uri) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(code: u16) -> FaultAction {
        FaultAction::Respond {
            status: StatusCode::from_u16(code).unwrap(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    fn status_of(action: Option<FaultAction>) -> Option<u16> {
        match action {
            Some(FaultAction::Respond { status, .. }) => Some(status.as_u16()),
            Some(FaultAction::Delay(_)) => Some(0),
            Some(FaultAction::DropConnection) => Some(1),
            None => None,
        }
    }

    #[test]
    fn faults_apply_to_matching_keys_the_given_number_of_times() {
        let traffic = Traffic::default();
        traffic.inject(Fault {
            key_prefix: "kv1/secrets/a".into(),
            action: respond(429),
            times: Some(2),
        });
        traffic.inject(Fault {
            key_prefix: "kv1/".into(),
            action: respond(500),
            times: None,
        });
        traffic.inject(Fault {
            key_prefix: "".into(),
            action: respond(503),
            times: Some(0),
        });
        let seen: Vec<Option<u16>> = [
            "kv1/secrets/a",
            "kv2/secrets/a",
            "kv1/secrets/a",
            "kv1/secrets/a",
            "kv1/keys/k",
        ]
        .iter()
        .map(|k| status_of(traffic.record(k)))
        .collect();
        assert_eq!(seen, vec![Some(429), None, Some(429), Some(500), Some(500)]);
        assert_eq!(traffic.count("kv1/secrets/a"), 3);
        assert_eq!(traffic.count_prefix("kv1/"), 4);
        assert_eq!(traffic.count("nothing"), 0);
        traffic.clear_faults();
        assert_eq!(status_of(traffic.record("kv1/keys/k")), None);
        traffic.reset_counts();
        assert!(traffic.counts().is_empty());
    }

    #[test]
    fn host_is_taken_from_the_host_header_without_port() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_static("KV1.vault.wisp.test:8443"),
        );
        let uri: http::Uri = "/secrets/a".parse().unwrap();
        assert_eq!(host_without_port(&headers, &uri), "kv1.vault.wisp.test");
        assert_eq!(host_with_port(&headers, &uri), "KV1.vault.wisp.test:8443");
        let absolute: http::Uri = "http://169.254.169.254/metadata".parse().unwrap();
        assert_eq!(host_without_port(&HeaderMap::new(), &absolute), "169.254.169.254");
    }
}
