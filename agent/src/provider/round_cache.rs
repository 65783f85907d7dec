//! Key Vault reads shared by the refreshes of one rotation round.
//!
//! With rotation, kubelet republishes every pod's volume about once a pod sync, so a node where 500 pods mount
//! the same objects through one identity would read each object 500 times per interval. Refreshes instead take
//! a read from the current round when one was made (or is in flight) for the same key, so each distinct read is
//! made once per round. A round starts with a read and lasts one rotation poll interval: a refreshed file is
//! then at most one interval older than Key Vault when it is written, which is what rotation promises, and the
//! burst of refreshes that follows the interval shares the first one's reads.
//!
//! The key must name everything that decides the answer, including who asked (the identity key of
//! [`crate::provider::auth`]): a read made with one identity's token is never handed to a request of another identity.
//! First mounts always read afresh (a new pod must see what Key Vault holds now) and keep nothing here: their
//! reads would expire just as the refreshes they could serve become due, and a node starting many pods with
//! distinct identities would hold every read for an interval.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// One key's read, in flight or done, and when its round began.
struct Slot<V> {
    started: Instant,
    cell: Arc<OnceCell<Arc<V>>>,
}

/// Reads by key, each valid for one window from when it began.
pub struct RoundCache<K, V> {
    window: Duration,
    slots: Mutex<HashMap<K, Slot<V>>>,
}

impl<K, V> std::fmt::Debug for RoundCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundCache")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, V> RoundCache<K, V> {
    /// Rounds of `window` (at least one millisecond).
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Puts `cell` as `key`'s slot, dropping every slot whose round is over (there are as many slots as distinct
    /// objects read on the node, so the sweep is cheap).
    fn insert(&self, slots: &mut HashMap<K, Slot<V>>, key: &K, cell: Arc<OnceCell<Arc<V>>>, now: Instant) {
        slots.retain(|_, slot| now.duration_since(slot.started) < self.window);
        slots.insert(key.clone(), Slot { started: now, cell });
    }

    /// The cell of `key` in its current round; a new round when there is none.
    fn cell(&self, key: &K) -> Arc<OnceCell<Arc<V>>> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(key) {
            Some(slot) if now.duration_since(slot.started) < self.window => slot.cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                self.insert(&mut slots, key, cell.clone(), now);
                cell
            }
        }
    }

    /// The value read for `key` in this round, or the result of `read` (kept for the round when it succeeds).
    /// Concurrent callers with the same key wait for one read; after a failed read the next caller reads again.
    pub async fn get_or_read<E, F, Fut>(&self, key: &K, read: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self.cell(key);
        cell.get_or_try_init(|| async { read().await.map(Arc::new) })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_of_one_key_are_made_once_per_round() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_secs(3600));
        let reads = AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>("v1".to_string())
        };
        let all = futures::future::join_all((0..50).map(|_| cache.get_or_read(&"a", read))).await;
        assert!(all.iter().all(|v| v.as_ref().unwrap().as_str() == "v1"));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let other = cache.get_or_read(&"b", read).await.unwrap();
        assert_eq!(other.as_str(), "v1");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_secs(3600));
        let failed = cache
            .get_or_read(&"a", || async { Err::<String, _>("throttled") })
            .await;
        assert_eq!(failed.unwrap_err(), "throttled");
        let value = cache
            .get_or_read(&"a", || async { Ok::<_, &str>("v2".to_string()) })
            .await
            .unwrap();
        assert_eq!(value.as_str(), "v2");
    }

    #[tokio::test]
    async fn a_round_lasts_one_window_from_its_first_read() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_millis(50));
        let first = cache
            .get_or_read(&"a", || async { Ok::<_, ()>("first".to_string()) })
            .await
            .unwrap();
        assert_eq!(first.as_str(), "first");
        let reused = cache
            .get_or_read(&"a", || async { Ok::<_, ()>("read".to_string()) })
            .await
            .unwrap();
        assert_eq!(reused.as_str(), "first");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let next_round = cache
            .get_or_read(&"a", || async { Ok::<_, ()>("read".to_string()) })
            .await
            .unwrap();
        assert_eq!(next_round.as_str(), "read");
    }
}
