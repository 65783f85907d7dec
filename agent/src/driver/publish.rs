//! A first mount: resolve the class, fetch every object, prepare the target (a tmpfs), write the files
//! atomically, write the pod status; a failure at any step leaves nothing behind, so kubelet's retry starts from
//! scratch.

use std::path::Path;

use tokio::time::Instant;

use super::common::{Driver, PublishFailure};
use super::request::PublishRequest;
use crate::provider::Freshness;
use crate::volume::mount::Mounter;
use crate::volume::writer;

/// Best-effort removal of a first mount that failed; the error that matters is the one that stopped it.
fn cleanup(mounter: Mounter, target: &Path, created_dir: bool) {
    if let Err(e) = mounter.teardown(target, created_dir) {
        tracing::error!(target = %target.display(), error = %e, "cleanup after a failed mount failed");
    }
}

impl Driver {
    pub(super) async fn first_mount(
        &self,
        request: &PublishRequest,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), PublishFailure> {
        let resolved = self.resolve(request).await?;
        let content = self.fetch(request, &resolved, deadline, Freshness::Fresh).await?;
        let objects = content.objects;
        let mounter = self.mounter;
        let write_target = request.target.clone();
        let files = content.files;
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = mounter
                .prepare(&write_target)
                .map_err(|e| PublishFailure::internal("FailedToMount", e.to_string()))?;
            if let Err(e) = writer::write_atomically(&write_target, &files) {
                cleanup(mounter, &write_target, prepared.created_dir);
                return Err(PublishFailure::internal(
                    "FileWriteError",
                    format!(
                        "failed to write the files of the volume at {}: {e}",
                        write_target.display()
                    ),
                ));
            }
            Ok(prepared)
        })
        .await
        .map_err(|e| PublishFailure::internal("FileWriteError", format!("the write task failed: {e}")))??;

        let volume = self.mounted_volume(request, objects);
        if let Some(cluster) = &self.cluster
            && let Err(e) = cluster.record_pod_status(&volume).await
        {
            let cleanup_target = request.target.clone();
            let _ = tokio::task::spawn_blocking(move || cleanup(mounter, &cleanup_target, prepared.created_dir)).await;
            return Err(PublishFailure::unknown("ProviderError", e.to_string()));
        }
        self.registry.remember(volume.clone());
        self.sync_secrets_later(volume, resolved.spc);
        tracing::info!(
            pod = %format!("{}/{}", request.pod.namespace, request.pod.name),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volume published"
        );
        Ok(())
    }
}
