//! Prometheus metrics under the names the upstream driver and provider export, so existing dashboards keep
//! working: `node_publish_total`, `node_publish_error_total{error_type}`, `node_unpublish_total`,
//! `node_unpublish_error_total` (driver) and the `keyvault_request` / `grpc_request` histograms (provider).
//! Everything lives in an explicit [`Registry`] owned by [`Metrics`]; there are no globals.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The upstream charts only run Linux nodes for this agent; the label is kept because dashboards filter on it.
const OS_TYPE: &str = "linux";
const PROVIDER: &str = "azure";

/// The provider's histogram buckets (seconds).
const PROVIDER_BUCKETS: [f64; 14] = [0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 15.0, 30.0];
/// The driver's histogram buckets (seconds): 11 exponentially spaced from 0.1 to 2.
const DRIVER_BUCKETS: [f64; 11] = [
    0.1, 0.134_928, 0.182_056, 0.245_646, 0.331_445, 0.447_214, 0.603_418, 0.814_181, 1.098_561, 1.482_269, 2.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    pub provider: String,
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishErrorLabels {
    pub provider: String,
    pub error_type: String,
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub provider: String,
    pub os_type: String,
    /// Whether the refresh changed the mounted files.
    pub rotated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationErrorLabels {
    pub provider: String,
    pub error_type: String,
    pub os_type: String,
    pub rotated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OsLabels {
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyVaultLabels {
    pub provider: String,
    pub os_type: String,
    pub object_type: String,
    pub object_name: String,
    /// Key Vault's error code (e.g. `SecretNotFound`) or a short transport error kind; empty on success.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub provider: String,
    pub os_type: String,
    pub grpc_method: String,
    pub grpc_code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn provider_histogram() -> Histogram {
    Histogram::new(PROVIDER_BUCKETS)
}

/// The driver's buckets, OpenTelemetry's `ExponentialBucketsRange(0.1, 2, 11)`.
fn driver_histogram() -> Histogram {
    Histogram::new(DRIVER_BUCKETS)
}

/// The agent's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    node_publish: Family<PublishLabels, Counter>,
    node_publish_error: Family<PublishErrorLabels, Counter>,
    rotation_reconcile: Family<RotationLabels, Counter>,
    rotation_reconcile_error: Family<RotationErrorLabels, Counter>,
    rotation_reconcile_duration: HistogramFamily<OsLabels>,
    sync_k8s_secret: Family<PublishLabels, Counter>,
    k8s_secret_duration: HistogramFamily<OsLabels>,
    node_unpublish: Family<OsLabels, Counter>,
    node_unpublish_error: Family<OsLabels, Counter>,
    keyvault_request: HistogramFamily<KeyVaultLabels>,
    grpc_request: HistogramFamily<GrpcLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let node_publish = Family::<PublishLabels, Counter>::default();
        let node_publish_error = Family::<PublishErrorLabels, Counter>::default();
        let node_unpublish = Family::<OsLabels, Counter>::default();
        let node_unpublish_error = Family::<OsLabels, Counter>::default();
        let keyvault_request: HistogramFamily<KeyVaultLabels> = Family::new_with_constructor(provider_histogram);
        let grpc_request: HistogramFamily<GrpcLabels> = Family::new_with_constructor(provider_histogram);
        let rotation_reconcile = Family::<RotationLabels, Counter>::default();
        let rotation_reconcile_error = Family::<RotationErrorLabels, Counter>::default();
        let rotation_reconcile_duration: HistogramFamily<OsLabels> = Family::new_with_constructor(driver_histogram);
        let sync_k8s_secret = Family::<PublishLabels, Counter>::default();
        let k8s_secret_duration: HistogramFamily<OsLabels> = Family::new_with_constructor(driver_histogram);
        registry.register(
            "rotation_reconcile",
            "Total number of refreshes of mounted volumes, by whether they changed the files",
            rotation_reconcile.clone(),
        );
        registry.register(
            "rotation_reconcile_error",
            "Total number of failed refreshes of mounted volumes (the old content is kept), by error type",
            rotation_reconcile_error.clone(),
        );
        registry.register(
            "rotation_reconcile_duration_sec",
            "Duration of refreshes of mounted volumes in seconds",
            rotation_reconcile_duration.clone(),
        );
        registry.register(
            "sync_k8s_secret",
            "Total number of Kubernetes Secrets written from mounted files",
            sync_k8s_secret.clone(),
        );
        registry.register(
            "k8s_secret_duration_sec",
            "Duration of the sync of a volume's Kubernetes Secrets in seconds",
            k8s_secret_duration.clone(),
        );
        // prometheus-client appends `_total` to counters, giving the exported names upstream dashboards query.
        registry.register(
            "node_publish",
            "Total number of successful NodePublishVolume calls",
            node_publish.clone(),
        );
        registry.register(
            "node_publish_error",
            "Total number of failed NodePublishVolume calls, by error type",
            node_publish_error.clone(),
        );
        registry.register(
            "node_unpublish",
            "Total number of successful NodeUnpublishVolume calls",
            node_unpublish.clone(),
        );
        registry.register(
            "node_unpublish_error",
            "Total number of failed NodeUnpublishVolume calls",
            node_unpublish_error.clone(),
        );
        registry.register(
            "keyvault_request",
            "Duration of Key Vault requests in seconds",
            keyvault_request.clone(),
        );
        registry.register(
            "grpc_request",
            "Duration of CSI gRPC requests in seconds",
            grpc_request.clone(),
        );
        Self {
            registry,
            node_publish,
            node_publish_error,
            rotation_reconcile,
            rotation_reconcile_error,
            rotation_reconcile_duration,
            sync_k8s_secret,
            k8s_secret_duration,
            node_unpublish,
            node_unpublish_error,
            keyvault_request,
            grpc_request,
        }
    }

    /// A refresh of a mounted volume that succeeded; `rotated` when it changed the files.
    pub fn rotation_ok(&self, rotated: bool, seconds: f64) {
        self.rotation_reconcile
            .get_or_create(&RotationLabels {
                provider: PROVIDER.into(),
                os_type: OS_TYPE.into(),
                rotated: rotated.to_string(),
            })
            .inc();
        self.rotation_duration(seconds);
    }

    /// A refresh that failed; the mounted content was kept.
    pub fn rotation_error(&self, error_type: &str, seconds: f64) {
        self.rotation_reconcile_error
            .get_or_create(&RotationErrorLabels {
                provider: PROVIDER.into(),
                error_type: error_type.into(),
                os_type: OS_TYPE.into(),
                rotated: "false".into(),
            })
            .inc();
        self.rotation_duration(seconds);
    }

    fn rotation_duration(&self, seconds: f64) {
        self.rotation_reconcile_duration
            .get_or_create(&OsLabels {
                os_type: OS_TYPE.into(),
            })
            .observe(seconds);
    }

    /// `count` Secrets written for one volume in `seconds`.
    pub fn secrets_synced(&self, count: u64, seconds: f64) {
        self.sync_k8s_secret
            .get_or_create(&PublishLabels {
                provider: PROVIDER.into(),
                os_type: OS_TYPE.into(),
            })
            .inc_by(count);
        self.k8s_secret_duration
            .get_or_create(&OsLabels {
                os_type: OS_TYPE.into(),
            })
            .observe(seconds);
    }

    pub fn node_publish_ok(&self) {
        self.node_publish
            .get_or_create(&PublishLabels {
                provider: PROVIDER.into(),
                os_type: OS_TYPE.into(),
            })
            .inc();
    }

    pub fn node_publish_error(&self, error_type: &str) {
        self.node_publish_error
            .get_or_create(&PublishErrorLabels {
                provider: PROVIDER.into(),
                error_type: error_type.into(),
                os_type: OS_TYPE.into(),
            })
            .inc();
    }

    pub fn node_unpublish_ok(&self) {
        self.node_unpublish
            .get_or_create(&OsLabels {
                os_type: OS_TYPE.into(),
            })
            .inc();
    }

    pub fn node_unpublish_error(&self) {
        self.node_unpublish_error
            .get_or_create(&OsLabels {
                os_type: OS_TYPE.into(),
            })
            .inc();
    }

    pub fn keyvault_request(&self, object_type: &str, object_name: &str, error: &str, seconds: f64) {
        self.keyvault_request
            .get_or_create(&KeyVaultLabels {
                provider: PROVIDER.into(),
                os_type: OS_TYPE.into(),
                object_type: object_type.into(),
                object_name: object_name.into(),
                error: error.into(),
            })
            .observe(seconds);
    }

    pub fn grpc_request(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.grpc_request
            .get_or_create(&GrpcLabels {
                provider: PROVIDER.into(),
                os_type: OS_TYPE.into(),
                grpc_method: method.into(),
                grpc_code: grpc_code_name(code).into(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in an encoder, reported as text.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# metrics encoding failed: {e}\n");
        }
        out
    }
}

/// gRPC's canonical upper-case code names, as Go's `codes.Code.String()` prints them (`OK`, `NotFound`, ...).
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_upstream_metric_names() {
        let metrics = Metrics::new();
        metrics.node_publish_ok();
        metrics.node_publish_error("SecretProviderClassNotFound");
        metrics.node_unpublish_ok();
        metrics.node_unpublish_error();
        metrics.keyvault_request("secret", "s1", "SecretNotFound", 0.05);
        metrics.grpc_request("/csi.v1.Node/NodePublishVolume", tonic::Code::Ok, 0.2);
        metrics.rotation_ok(true, 0.05);
        metrics.rotation_error("ProviderError", 0.05);
        metrics.secrets_synced(2, 0.01);
        let text = metrics.encode();
        for line in [
            "node_publish_total{provider=\"azure\",os_type=\"linux\"} 1",
            "node_publish_error_total{provider=\"azure\",error_type=\"SecretProviderClassNotFound\",os_type=\"linux\"} 1",
            "node_unpublish_total{os_type=\"linux\"} 1",
            "node_unpublish_error_total{os_type=\"linux\"} 1",
            "keyvault_request_count{provider=\"azure\",os_type=\"linux\",object_type=\"secret\",object_name=\"s1\",error=\"SecretNotFound\"} 1",
            "keyvault_request_bucket{le=\"0.1\",provider=\"azure\",os_type=\"linux\",object_type=\"secret\",object_name=\"s1\",error=\"SecretNotFound\"} 1",
            "grpc_request_count{provider=\"azure\",os_type=\"linux\",grpc_method=\"/csi.v1.Node/NodePublishVolume\",grpc_code=\"OK\"} 1",
            "rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"true\"} 1",
            "rotation_reconcile_error_total{provider=\"azure\",error_type=\"ProviderError\",os_type=\"linux\",rotated=\"false\"} 1",
            "rotation_reconcile_duration_sec_count{os_type=\"linux\"} 2",
            "sync_k8s_secret_total{provider=\"azure\",os_type=\"linux\"} 2",
            "k8s_secret_duration_sec_count{os_type=\"linux\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing line {line:?} in\n{text}");
        }
    }
}
