//! The volumes this agent published, by target path: the per-target locks that order a publish, a refresh and an
//! unpublish of one target, and the record of them in the state file, written by a background writer that
//! coalesces bursts of changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::volume::mount::Mounter;
use crate::volume::state::{MountedVolume, StateError, StateFile};

/// How long the record writer waits after a change for more changes to write with it.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct VolumeRegistry {
    state: Option<StateFile>,
    volumes: Mutex<HashMap<PathBuf, MountedVolume>>,
    /// Set once the background writer runs: changes then only mark the record dirty.
    state_dirty: OnceLock<Arc<tokio::sync::Notify>>,
    target_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl VolumeRegistry {
    pub fn new(state: Option<StateFile>) -> Self {
        Self {
            state,
            volumes: Mutex::new(HashMap::new()),
            state_dirty: OnceLock::new(),
            target_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Takes over the volumes of the state file that are still published (a restarted agent), and rewrites
    /// the record without the others. Returns how many were recovered.
    pub fn recover(&self, mounter: Mounter) -> Result<usize, StateError> {
        let Some(state) = &self.state else {
            return Ok(0);
        };
        let recorded = state.load()?;
        let mut volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        for volume in recorded {
            match mounter.is_published(&volume.target_path) {
                Ok(true) => {
                    volumes.insert(volume.target_path.clone(), volume);
                }
                Ok(false) => {
                    tracing::info!(target = %volume.target_path.display(), "recorded volume is no longer mounted; forgotten")
                }
                Err(e) => {
                    tracing::warn!(target = %volume.target_path.display(), error = %e, "recorded volume cannot be checked; forgotten")
                }
            }
        }
        let count = volumes.len();
        drop(volumes);
        self.save_state();
        Ok(count)
    }

    /// Starts the background writer of the record: changes made in quick succession (a node's pods refreshed
    /// in one round) are written once, not once each. Without it every change is written at once.
    pub fn start_state_writer(self: &Arc<Self>) {
        if self.state.is_none() {
            return;
        }
        let dirty = Arc::new(tokio::sync::Notify::new());
        if self.state_dirty.set(dirty.clone()).is_err() {
            return;
        }
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                dirty.notified().await;
                tokio::time::sleep(STATE_WRITE_DELAY).await;
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || registry.write_state()).await;
            }
        });
    }

    /// Writes the record now (at shutdown, so that nothing the writer delayed is lost).
    pub fn flush_state(&self) {
        if self.state_dirty.get().is_some() {
            self.write_state();
        }
    }

    fn save_state(&self) {
        match self.state_dirty.get() {
            Some(dirty) => dirty.notify_one(),
            None => self.write_state(),
        }
    }

    fn write_state(&self) {
        let Some(state) = &self.state else {
            return;
        };
        // Serialized under the lock rather than from a copy (a few milliseconds for hundreds of volumes, once per
        // burst of changes); holding it also orders the writes, so the last one holds the newest record.
        let volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<&MountedVolume> = volumes.values().collect();
        sorted.sort_by(|a, b| a.target_path.cmp(&b.target_path));
        if let Err(e) = state.save(&sorted) {
            tracing::error!(error = %e, "the volume record was not updated; a restarted agent may not know every volume");
        }
    }

    pub fn get(&self, target: &Path) -> Option<MountedVolume> {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    pub fn remember(&self, volume: MountedVolume) {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(volume.target_path.clone(), volume);
        self.save_state();
    }

    /// Forgets the volume at `target` and its lock (after an unpublish).
    pub fn forget(&self, target: &Path) {
        let removed = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target)
            .is_some();
        if removed {
            self.save_state();
        }
        self.target_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target);
    }

    /// The volumes published by this process.
    #[cfg(test)]
    pub fn volumes(&self) -> Vec<MountedVolume> {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The lock that orders every call for `target`.
    pub fn target_lock(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.target_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_path_buf())
            .or_default()
            .clone()
    }
}
