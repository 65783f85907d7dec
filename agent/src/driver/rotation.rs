//! Rotation: kubelet republishes every mounted volume (`requiresRepublish`); a volume is refreshed when
//! `--rotation-poll-interval` has passed since its last successful refresh. A refresh fetches again, sharing the
//! round's Key Vault reads with every other volume asking the same (the provider's round cache), and swaps the
//! files in only when bytes or modes changed. A failed refresh keeps the mounted files and is not returned:
//! kubelet would tear the mount down on an error (kubernetes #121271).

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::common::{Driver, PublishFailure};
use super::request::PublishRequest;
use crate::error_text::error_chain;
use crate::provider::Freshness;
use crate::volume::state::MountedVolume;
use crate::volume::writer;

/// When the files at `target` last changed: the `..data` link is replaced on every swap (the upstream driver
/// reads the target's mtime instead). For a volume the agent has no record of, e.g. after its state was lost.
fn content_mtime(target: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(target.join("..data"))
        .or_else(|_| std::fs::symlink_metadata(target))
        .and_then(|meta| meta.modified())
        .ok()
}

/// Whether a volume last refreshed at `refreshed_at` is due at `now`. A time so far ahead that the interval
/// cannot be added to it (a damaged volume record, a file time set to the year 292 billion) is due: a refresh is
/// the safe side, and records the real time.
pub(crate) fn refresh_due(refreshed_at: SystemTime, interval: Duration, now: SystemTime) -> bool {
    refreshed_at.checked_add(interval).is_none_or(|due| now >= due)
}

impl Driver {
    /// A publish of a target already published: nothing without rotation or before the interval, else a refresh.
    pub(super) async fn republish(&self, request: &PublishRequest, known: Option<&MountedVolume>, deadline: Instant) {
        let Some(interval) = self.rotation else {
            tracing::info!(target = %request.target.display(), "target path is already mounted; nothing to do");
            return;
        };
        let refreshed_at = known
            .map(|v| v.refreshed_at)
            .or_else(|| content_mtime(&request.target))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if !refresh_due(refreshed_at, interval, SystemTime::now()) {
            tracing::debug!(target = %request.target.display(), "refreshed less than --rotation-poll-interval ago; skipped");
            return;
        }
        self.refresh(request, known, deadline).await;
    }

    async fn refresh(&self, request: &PublishRequest, known: Option<&MountedVolume>, deadline: Instant) {
        let started = Instant::now();
        let target = request.target.as_path();
        let result = async {
            let resolved = self.resolve(request).await?;
            let due = Freshness::SharedRound { due: started };
            let content = self.fetch(request, &resolved, deadline, due).await?;
            let write_target = target.to_path_buf();
            let files = content.files;
            let outcome = tokio::task::spawn_blocking(move || writer::write_atomically(&write_target, &files))
                .await
                .map_err(|e| PublishFailure::internal("FileWriteError", format!("the write task failed: {e}")))?
                .map_err(|e| {
                    PublishFailure::internal(
                        "FileWriteError",
                        format!("failed to write the files of the volume at {}: {e}", target.display()),
                    )
                })?;
            Ok::<_, PublishFailure>((resolved.spc, content.objects, outcome.changed()))
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok((spc, objects, changed)) => {
                self.metrics.rotation_ok(changed, seconds);
                let mut volume = self.mounted_volume(request, objects);
                // The pod status lists versions: it changes only when they do (or the agent has no record).
                let versions_changed = known.is_none_or(|k| k.objects != volume.objects);
                if let Some(cluster) = &self.cluster
                    && versions_changed
                    && let Err(e) = cluster.record_pod_status(&volume).await
                {
                    tracing::warn!(
                        target = %target.display(),
                        error = %error_chain(&e),
                        "pod status not updated after a refresh; written again at the next refresh"
                    );
                    // The record keeps the versions the pod status still shows, so that the next refresh sees
                    // them differ and writes it again once the API server answers.
                    volume.objects = known.map(|k| k.objects.clone()).unwrap_or_default();
                }
                self.registry.remember(volume.clone());
                self.sync_secrets_later(volume, spc);
                tracing::info!(target = %target.display(), changed, "volume refreshed");
            }
            Err(failure) => {
                self.metrics.rotation_error(failure.error_type, seconds);
                tracing::warn!(
                    target = %target.display(),
                    error = %failure.message,
                    "refresh failed; the mounted files are kept as they were"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_is_due_once_the_interval_has_passed() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let interval = Duration::from_secs(120);
        assert!(!refresh_due(at, interval, at));
        assert!(!refresh_due(at, interval, at + Duration::from_secs(119)));
        assert!(refresh_due(at, interval, at + interval));
        assert!(refresh_due(SystemTime::UNIX_EPOCH, interval, at));
    }

    /// Found through the `state_file` fuzz target's check (`fuzz/corpus/state_file/crash-refreshed-at-overflow`):
    /// a volume record whose `refreshed_at` is near the end of `SystemTime` made adding the interval panic on
    /// kubelet's next republish of the volume.
    #[test]
    fn a_time_the_interval_cannot_be_added_to_is_due() {
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        assert!(refresh_due(end, Duration::from_secs(120), SystemTime::now()));
        assert!(!refresh_due(end, Duration::ZERO, SystemTime::now()));
    }
}
