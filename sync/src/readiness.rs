//! `/healthz` and `/readyz`. Ready means this replica does what it should right now: a stand-by waiting for the
//! Lease is ready (it is healthy and will take over), the active replica is ready once its SecretSync and
//! SecretProviderClass caches hold a full list (before that it would report classes missing that exist).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Where this replica is in its start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Before the Kubernetes client and the leader election started.
    Starting = 0,
    /// Waiting for the leader election Lease.
    StandBy = 1,
    /// Leading (or no election), the caches still listing.
    ListingCaches = 2,
    /// Leading (or no election), caches synced: SecretSyncs are served.
    Serving = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::StandBy,
            2 => Self::ListingCaches,
            3 => Self::Serving,
            _ => Self::Starting,
        }
    }

    /// The `/readyz` answer in this phase.
    fn readiness(self) -> (StatusCode, &'static str) {
        match self {
            Self::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            Self::StandBy => (StatusCode::OK, "ok: stand-by, waiting for the leader election Lease\n"),
            Self::ListingCaches => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SecretSync and SecretProviderClass caches have not synced yet\n",
            ),
            Self::Serving => (StatusCode::OK, "ok\n"),
        }
    }
}

/// The phase, shared by the wiring (which sets it) and the HTTP handler (which reads it).
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicU8>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(Phase::Starting as u8)))
    }
}

impl Readiness {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::Acquire))
    }

    /// `/healthz` (the process answers) and `/readyz` (by phase).
    pub fn router(&self) -> Router {
        let readiness = self.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(move || async move { readiness.phase().readiness() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_answers_as_documented() {
        let readiness = Readiness::default();
        let mut seen = Vec::new();
        for phase in [Phase::Starting, Phase::StandBy, Phase::ListingCaches, Phase::Serving] {
            readiness.set(phase);
            assert_eq!(readiness.phase(), phase);
            seen.push(phase.readiness());
        }
        assert_eq!(
            seen,
            vec![
                (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                (StatusCode::OK, "ok: stand-by, waiting for the leader election Lease\n"),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SecretSync and SecretProviderClass caches have not synced yet\n"
                ),
                (StatusCode::OK, "ok\n"),
            ]
        );
    }
}
