//! What a publish does on this node, with the provider in-process: the SecretProviderClass from the pod's
//! namespace only, volume attributes over parameters, the files written atomically. [`Driver::publish`] decides
//! between a first mount ([`publish`]) and a refresh of a mounted volume ([`rotation`]); [`Driver::unpublish`]
//! removes everything, idempotently; [`registry`] keeps what is mounted.

mod common;
pub(crate) mod publish;
pub(crate) mod registry;
pub(crate) mod request;
pub(crate) mod rotation;

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use common::{Driver, DriverInfo, DriverOptions, PublishFailure};
use request::PublishRequest;

/// kubelet's deadline for CSI calls, used when a request carries no `grpc-timeout`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Time kept back from the deadline for writing the files and answering.
const DEADLINE_RESERVE: Duration = Duration::from_secs(2);

impl Driver {
    /// NodePublishVolume: a first mount, or, for a target already published (kubelet retries and
    /// `requiresRepublish`), a refresh when rotation is due.
    pub async fn publish(&self, request: &PublishRequest) -> Result<(), PublishFailure> {
        let started = Instant::now();
        let deadline = started
            + request
                .timeout
                .unwrap_or(DEFAULT_DEADLINE)
                .saturating_sub(DEADLINE_RESERVE);
        let lock = self.registry.target_lock(&request.target);
        let _guard = lock.lock().await;
        let known = self.registry.get(&request.target);
        let published = known.is_some()
            || self
                .mounter
                .is_published(&request.target)
                .map_err(|e| PublishFailure::internal("FailedToEnsureMountPoint", e.to_string()))?;
        if published {
            self.republish(request, known.as_ref(), deadline).await;
            return Ok(());
        }
        self.first_mount(request, started, deadline).await
    }

    /// NodeUnpublishVolume: remove contents, unmount, remove the directory. Idempotent. The error is the
    /// message kubelet shows.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), String> {
        let lock = self.registry.target_lock(target);
        let _guard = lock.lock().await;
        let mounter = self.mounter;
        let teardown_target = target.to_path_buf();
        tokio::task::spawn_blocking(move || mounter.teardown(&teardown_target, true))
            .await
            .map_err(|e| format!("the unpublish task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()))?;
        self.registry.forget(target);
        tracing::info!(volume_id, target = %target.display(), "volume unpublished");
        Ok(())
    }
}
