use super::*;
use pretty_assertions::assert_eq;
use std::sync::Mutex;

fn info(client_id: &str) -> ServiceAccountInfo {
    ServiceAccountInfo {
        client_id: Some(client_id.to_string()),
        ..Default::default()
    }
}

#[test]
fn index_apply_delete_and_replace() {
    let index = ServiceAccountIndex::new();
    assert!(!index.is_synced());
    index.apply("ns1", "sa", info("a"));
    index.apply("ns1", "sa", info("b"));
    index.apply("ns2", "sa", info("c"));
    assert_eq!(index.get("ns1", "sa").as_deref(), Some(&info("b")));
    assert_eq!(index.get("ns2", "sa").as_deref(), Some(&info("c")));
    assert_eq!(index.get("ns3", "sa"), None);
    index.delete("ns1", "sa");
    assert_eq!(index.get("ns1", "sa"), None);
    assert_eq!(index.len(), 1);
    index.replace_all([("ns4".to_string(), "x".to_string(), info("d"))]);
    assert!(index.is_synced());
    assert_eq!(index.get("ns2", "sa"), None);
    assert_eq!(index.get("ns4", "x").as_deref(), Some(&info("d")));
    assert_eq!(index.len(), 1);
}

/// Records each fetch and answers from a fixed table.
struct Recording {
    known: HashMap<(String, String), ServiceAccountInfo>,
    calls: Mutex<Vec<String>>,
}

impl ServiceAccountSource for Recording {
    fn fetch<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{namespace}/{name}"));
        let found = self.known.get(&(namespace.to_string(), name.to_string())).cloned();
        Box::pin(async move { Ok(found) })
    }
}

#[tokio::test]
async fn miss_falls_back_to_a_live_read_that_is_not_stored() {
    let source = Arc::new(Recording {
        known: HashMap::from([(("ns".to_string(), "late".to_string()), info("live"))]),
        calls: Mutex::new(Vec::new()),
    });
    let index = Arc::new(ServiceAccountIndex::new());
    index.apply("ns", "cached", info("cached"));
    let lookup = ServiceAccountLookup::new(index.clone(), source.clone());

    assert_eq!(
        lookup.get("ns", "cached").await.unwrap().as_deref(),
        Some(&info("cached"))
    );
    assert_eq!(lookup.get("ns", "late").await.unwrap().as_deref(), Some(&info("live")));
    assert_eq!(lookup.get("ns", "late").await.unwrap().as_deref(), Some(&info("live")));
    assert_eq!(lookup.get("ns", "missing").await.unwrap(), None);
    // Until the watch delivers it, every admission reads live.
    assert_eq!(
        *source.calls.lock().unwrap(),
        vec!["ns/late".to_string(), "ns/late".to_string(), "ns/missing".to_string()]
    );
    assert_eq!(index.get("ns", "late"), None);
}

/// Answers with `stale` only once released, as a GET that is slow while the watch moves on; says when it started.
struct Slow {
    stale: ServiceAccountInfo,
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl ServiceAccountSource for Slow {
    fn fetch<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        Box::pin(async move {
            self.started.notify_one();
            self.release.notified().await;
            Ok(Some(self.stale.clone()))
        })
    }
}

/// A live read that answers after the watch delivered a newer state must not put its older state into the
/// index: the watch sends no further event to correct it.
#[tokio::test]
async fn a_slow_live_read_never_overwrites_a_newer_watch_event() {
    let source = Arc::new(Slow {
        stale: info("v1"),
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let index = Arc::new(ServiceAccountIndex::new());
    let lookup = ServiceAccountLookup::new(index.clone(), source.clone());

    let admission = tokio::spawn({
        let lookup = lookup.clone();
        async move { lookup.get("ns", "sa").await }
    });
    // The watch delivers the creation and then the annotation change while the GET (which read v1) is in flight.
    source.started.notified().await;
    index.apply("ns", "sa", info("v1"));
    index.apply("ns", "sa", info("v2"));
    source.release.notify_one();
    let answered = admission.await.unwrap().unwrap();
    // The admission that started before the watch delivered anything uses what it read.
    assert_eq!(answered.as_deref(), Some(&info("v1")));
    assert_eq!(index.get("ns", "sa").as_deref(), Some(&info("v2")));
    assert_eq!(lookup.get("ns", "sa").await.unwrap().as_deref(), Some(&info("v2")));
}

#[test]
fn only_the_workload_identity_annotations_are_kept() {
    let annotations = std::collections::BTreeMap::from([
        ("azure.workload.identity/client-id".to_string(), "cid".to_string()),
        ("azure.workload.identity/tenant-id".to_string(), String::new()),
        (
            "azure.workload.identity/service-account-token-expiration".to_string(),
            "4800".to_string(),
        ),
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".to_string(),
        ),
    ]);
    assert_eq!(
        ServiceAccountInfo::from_annotations(&annotations),
        ServiceAccountInfo {
            client_id: Some("cid".to_string()),
            tenant_id: Some(String::new()),
            token_expiration: Some("4800".to_string()),
        }
    );
}
