//! wisp-sync's metrics under kubernetes-sigs/secrets-store-sync-controller's names: `rotation_reconcile_total` and
//! `rotation_reconcile_duration_sec` (every reconcile that synced or failed) and `secrets_store_sync_duration_sec`
//! (Secret writes), labelled `successful` and `namespace`; plus the provider's `keyvault_request` histogram from
//! the agent's [`Metrics`] (the one family of that registry wisp-sync feeds; its driver families share names with
//! these and are left out). An explicit registry, no globals.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wisp_agent::library::Metrics;

/// Seconds; a sync waits on the API server, Entra and Key Vault.
const BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const PROVIDER_FAMILY: &str = "keyvault_request";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    successful: String,
    namespace: String,
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct SyncMetrics {
    registry: Registry,
    provider: Arc<Metrics>,
    reconciles: Family<Labels, Counter>,
    reconcile_duration: HistogramFamily,
    secret_duration: HistogramFamily,
}

impl std::fmt::Debug for SyncMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncMetrics").finish_non_exhaustive()
    }
}

fn labels(namespace: &str, successful: bool) -> Labels {
    Labels {
        successful: successful.to_string(),
        namespace: namespace.to_string(),
    }
}

impl SyncMetrics {
    /// `provider` is the registry the provider records Key Vault requests in.
    pub fn new(provider: Arc<Metrics>) -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        let reconcile_duration: HistogramFamily = Family::new_with_constructor(histogram);
        let secret_duration: HistogramFamily = Family::new_with_constructor(histogram);
        registry.register(
            "rotation_reconcile",
            "Total number of SecretSync syncs, by success",
            reconciles.clone(),
        );
        registry.register(
            "rotation_reconcile_duration_sec",
            "Duration of SecretSync syncs in seconds",
            reconcile_duration.clone(),
        );
        registry.register(
            "secrets_store_sync_duration_sec",
            "Duration of Secret writes in seconds",
            secret_duration.clone(),
        );
        Self {
            registry,
            provider,
            reconciles,
            reconcile_duration,
            secret_duration,
        }
    }

    /// One sync of a SecretSync of `namespace` (fetch, hash, maybe a write), done or failed.
    pub fn reconciled(&self, namespace: &str, successful: bool, seconds: f64) {
        let labels = labels(namespace, successful);
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(seconds);
    }

    /// One Secret write.
    pub fn secret_written(&self, namespace: &str, successful: bool, seconds: f64) {
        self.secret_duration
            .get_or_create(&labels(namespace, successful))
            .observe(seconds);
    }

    /// The OpenMetrics text: the provider's `keyvault_request` family, then these.
    pub fn encode(&self) -> String {
        let mut out = provider_family(&self.provider.encode());
        // Writing into a String cannot fail; an error here would be a bug in an encoder, reported as text.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# metrics encoding failed: {e}\n");
        }
        out
    }
}

/// The lines of the `keyvault_request` family in the agent registry's exposition (no `# EOF`).
fn provider_family(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .or_else(|| line.strip_prefix("# UNIT "))
            .unwrap_or(line);
        let name = name.split([' ', '{']).next().unwrap_or("");
        if name == PROVIDER_FAMILY
            || name
                .strip_prefix(PROVIDER_FAMILY)
                .is_some_and(|rest| rest.starts_with('_'))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn names_labels_and_one_eof() {
        let provider = Arc::new(Metrics::new());
        provider.keyvault_request("secret", "s1", "", 0.1);
        provider.node_publish_ok();
        let metrics = SyncMetrics::new(provider);
        metrics.reconciled("ns-a", true, 0.2);
        metrics.secret_written("ns-a", false, 0.02);
        let text = metrics.encode();
        assert!(text.contains("# TYPE keyvault_request histogram\n"), "{text}");
        assert!(text.contains("keyvault_request_count{"), "{text}");
        assert!(
            text.contains("rotation_reconcile_total{successful=\"true\",namespace=\"ns-a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rotation_reconcile_duration_sec_count{successful=\"true\",namespace=\"ns-a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("secrets_store_sync_duration_sec_count{successful=\"false\",namespace=\"ns-a\"} 1\n"),
            "{text}"
        );
        // The agent's driver families (one of them also named rotation_reconcile) are not repeated.
        assert_eq!(text.matches("# TYPE rotation_reconcile counter").count(), 1, "{text}");
        assert!(!text.contains("node_publish"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
