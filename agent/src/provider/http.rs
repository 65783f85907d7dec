//! The HTTP client every outbound call shares (Entra, IMDS, Key Vault) and its retry policy.
//!
//! TLS trusts the operating system's CA store (reqwest's `rustls` feature verifies through
//! rustls-platform-verifier, which on Linux reads the system bundle and honours `SSL_CERT_FILE`), and names are
//! resolved by the system resolver, so private clouds with their own CA and DNS work unchanged.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
}

/// One client for the process: connection pools and TLS sessions are shared by every mount.
pub fn build_client() -> Result<reqwest::Client, HttpError> {
    reqwest::Client::builder()
        .user_agent(concat!("wisp-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        // Entra, IMDS and Key Vault never redirect; following one would re-send a client secret, an assertion
        // or a bearer token wherever the Location points. A 3xx is an error like any other status.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(HttpError::Client)
}

/// Retries for transient failures, as the Azure SDKs do (408, 429, 500, 502, 503, 504 and transport errors),
/// but bounded by the caller's deadline (kubelet's) rather than a fixed count alone.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, including the first.
    pub max_attempts: u32,
    /// First backoff when the server gives no `Retry-After`; doubled per retry.
    pub base_delay: Duration,
    /// Upper bound of one backoff, and of a `Retry-After` wisp is willing to honour.
    pub max_delay: Duration,
    /// Upper bound of one request.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(800),
            max_delay: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first answer is final.
    #[cfg(test)]
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The delay a response asks for: `retry-after-ms`, `x-ms-retry-after-ms` (milliseconds) or `Retry-After`
/// (seconds; an HTTP date is treated as "unspecified").
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = header(name).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The final outcome of a retried request: the last response (whatever its status) or the last transport error.
pub enum Outcome {
    Response(reqwest::Response),
    Transport(reqwest::Error),
}

/// Sends the request built by `build` until it gets a non-retryable answer, the attempts run out, or the next
/// wait would end after `deadline`. `build` is called once per attempt.
pub async fn send_with_retry(
    policy: &RetryPolicy,
    deadline: Instant,
    mut build: impl FnMut() -> reqwest::RequestBuilder,
) -> Outcome {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = policy.attempt_timeout.min(remaining.max(Duration::from_millis(1)));
        let result = build().timeout(timeout).send().await;
        let wait = match &result {
            Ok(resp) if is_retryable_status(resp.status()) => {
                Some(retry_after(resp.headers()).unwrap_or_else(|| backoff(policy, attempt)))
            }
            Ok(_) => None,
            Err(e) if e.is_builder() => None,
            Err(_) => Some(backoff(policy, attempt)),
        };
        let outcome = match result {
            Ok(resp) => Outcome::Response(resp),
            Err(e) => Outcome::Transport(e),
        };
        let Some(wait) = wait else { return outcome };
        if attempt >= policy.max_attempts || wait > policy.max_delay || Instant::now() + wait >= deadline {
            return outcome;
        }
        if let Outcome::Response(resp) = &outcome {
            tracing::debug!(status = resp.status().as_u16(), url = %resp.url(), wait_ms = wait.as_millis() as u64, "retrying");
        } else {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "retrying after transport error");
        }
        // Dropping the response releases its connection before sleeping.
        drop(outcome);
        tokio::time::sleep(wait).await;
    }
}

/// `(2^attempt - 1) × base`, capped, with a small jitter so that many mounts do not retry in lockstep.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = (1u64 << attempt.min(16)) - 1;
    let base = policy.base_delay.saturating_mul(factor as u32).min(policy.max_delay);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Jitter in [0.8, 1.2).
    let permille = 800 + u64::from(nanos % 400);
    Duration::from_millis((base.as_millis() as u64).saturating_mul(permille) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        h.insert("retry-after-ms", HeaderValue::from_static("20"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(20)));
        let mut date = HeaderMap::new();
        date.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn retryable_statuses_match_the_azure_sdks() {
        let retryable: Vec<u16> = (100..600)
            .filter(|s| is_retryable_status(StatusCode::from_u16(*s).unwrap()))
            .collect();
        assert_eq!(retryable, vec![408, 429, 500, 502, 503, 504]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let first = backoff(&policy, 1);
        assert!(
            first >= Duration::from_millis(80) && first < Duration::from_millis(120),
            "{first:?}"
        );
        let third = backoff(&policy, 3);
        assert!(
            third >= Duration::from_millis(560) && third < Duration::from_millis(840),
            "{third:?}"
        );
        let capped = backoff(&policy, 10);
        assert!(
            capped >= Duration::from_millis(800) && capped < Duration::from_millis(1200),
            "{capped:?}"
        );
    }
}
