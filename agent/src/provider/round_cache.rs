//! Key Vault reads shared by the refreshes of one rotation round.
//!
//! With rotation, kubelet republishes every pod's volume about once a pod sync, so a node where 500 pods mount
//! the same objects through one identity would read each object 500 times per interval. Refreshes instead take
//! a read from the current round when one was made (or is in flight) for the same key, so each distinct read is
//! made once per round. A round starts with a read and lasts one rotation poll interval, counted in the time the
//! refreshes became *due*, not the time they run: a refresh due within one interval of the round's first takes
//! its read, so a refreshed file is at most one interval older than Key Vault at the time it was due, which is what
//! rotation promises. The agent's refreshes are due when they run; wisp-sync's can run well after they were due
//! (1,000 SecretSyncs whose sync hashes take 42 ms of CPU each queue for longer than a short interval), and timing
//! rounds by the clock made such a backlog read every object two or three times.
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

/// One key's read, in flight or done, and when its round began (the due time of the refresh that started it).
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

    /// Puts `cell` as `key`'s slot, dropping the slots of other keys that no refresh due since two rounds ago
    /// can still use (there are as many slots as distinct objects read, so the sweep is cheap; a backlog longer
    /// than that reads again, which costs a request, never a stale answer).
    fn insert(&self, slots: &mut HashMap<K, Slot<V>>, key: &K, cell: Arc<OnceCell<Arc<V>>>, due: Instant) {
        let now = Instant::now();
        slots.retain(|_, slot| now.saturating_duration_since(slot.started) < self.window * 2);
        slots.insert(key.clone(), Slot { started: due, cell });
    }

    /// The cell of `key` for a refresh due at `due`: the current round's when `due` falls before its end (a read
    /// made after the refresh was due is newer than it needs), else a new round starting at `due`.
    fn cell(&self, key: &K, due: Instant) -> Arc<OnceCell<Arc<V>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(key) {
            Some(slot) if due.saturating_duration_since(slot.started) < self.window => slot.cell.clone(),
            _ => {
                let cell = Arc::new(OnceCell::new());
                self.insert(&mut slots, key, cell.clone(), due);
                cell
            }
        }
    }

    /// The value read for `key` in the round of a refresh due at `due`, or the result of `read` (kept for the round
    /// when it succeeds). Concurrent callers with the same key wait for one read; after a failed read the next
    /// caller reads again.
    pub async fn get_or_read<E, F, Fut>(&self, key: &K, due: Instant, read: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self.cell(key, due);
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
        let all = futures::future::join_all((0..50).map(|_| cache.get_or_read(&"a", Instant::now(), read))).await;
        assert!(all.iter().all(|v| v.as_ref().unwrap().as_str() == "v1"));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let other = cache.get_or_read(&"b", Instant::now(), read).await.unwrap();
        assert_eq!(other.as_str(), "v1");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_secs(3600));
        let failed = cache
            .get_or_read(&"a", Instant::now(), || async { Err::<String, _>("throttled") })
            .await;
        assert_eq!(failed.unwrap_err(), "throttled");
        let value = cache
            .get_or_read(&"a", Instant::now(), || async { Ok::<_, &str>("v2".to_string()) })
            .await
            .unwrap();
        assert_eq!(value.as_str(), "v2");
    }

    #[tokio::test]
    async fn a_round_lasts_one_window_from_its_first_read() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_millis(50));
        let first = cache
            .get_or_read(&"a", Instant::now(), || async { Ok::<_, ()>("first".to_string()) })
            .await
            .unwrap();
        assert_eq!(first.as_str(), "first");
        let reused = cache
            .get_or_read(&"a", Instant::now(), || async { Ok::<_, ()>("read".to_string()) })
            .await
            .unwrap();
        assert_eq!(reused.as_str(), "first");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let next_round = cache
            .get_or_read(&"a", Instant::now(), || async { Ok::<_, ()>("read".to_string()) })
            .await
            .unwrap();
        assert_eq!(next_round.as_str(), "read");
    }

    #[tokio::test]
    async fn rounds_follow_due_times_not_the_clock() {
        let cache: RoundCache<&str, String> = RoundCache::new(Duration::from_secs(20));
        let start = Instant::now();
        let read = |value: &'static str| move || async move { Ok::<_, ()>(value.to_string()) };
        let first = cache.get_or_read(&"a", start, read("round 1")).await.unwrap();
        assert_eq!(first.as_str(), "round 1");
        // Due 19 s after the round began: its read, whenever it runs.
        let late = cache
            .get_or_read(&"a", start + Duration::from_secs(19), read("extra"))
            .await
            .unwrap();
        assert_eq!(late.as_str(), "round 1");
        // Due 20 s after: the next round.
        let next = cache
            .get_or_read(&"a", start + Duration::from_secs(20), read("round 2"))
            .await
            .unwrap();
        assert_eq!(next.as_str(), "round 2");
        // A refresh due before the current round began takes its newer read.
        let backlog = cache
            .get_or_read(&"a", start + Duration::from_secs(5), read("extra"))
            .await
            .unwrap();
        assert_eq!(backlog.as_str(), "round 2");
    }
}
