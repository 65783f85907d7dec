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
pub struct OsLabels {
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyVaultLabels {
    pub object_type: String,
    /// Key Vault's error code (e.g. `SecretNotFound`) or a short transport error kind; empty on success.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_method: String,
    pub grpc_code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn provider_histogram() -> Histogram {
    Histogram::new(PROVIDER_BUCKETS)
}

/// The agent's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    node_publish: Family<PublishLabels, Counter>,
    node_publish_error: Family<PublishErrorLabels, Counter>,
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
            node_unpublish,
            node_unpublish_error,
            keyvault_request,
            grpc_request,
        }
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

    pub fn keyvault_request(&self, object_type: &str, error: &str, seconds: f64) {
        self.keyvault_request
            .get_or_create(&KeyVaultLabels {
                object_type: object_type.into(),
                error: error.into(),
            })
            .observe(seconds);
    }

    pub fn grpc_request(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.grpc_request
            .get_or_create(&GrpcLabels {
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
        metrics.keyvault_request("secret", "SecretNotFound", 0.05);
        metrics.grpc_request("/csi.v1.Node/NodePublishVolume", tonic::Code::Ok, 0.2);
        let text = metrics.encode();
        for line in [
            "node_publish_total{provider=\"azure\",os_type=\"linux\"} 1",
            "node_publish_error_total{provider=\"azure\",error_type=\"SecretProviderClassNotFound\",os_type=\"linux\"} 1",
            "node_unpublish_total{os_type=\"linux\"} 1",
            "node_unpublish_error_total{os_type=\"linux\"} 1",
            "keyvault_request_count{object_type=\"secret\",error=\"SecretNotFound\"} 1",
            "keyvault_request_bucket{le=\"0.1\",object_type=\"secret\",error=\"SecretNotFound\"} 1",
            "grpc_request_count{grpc_method=\"/csi.v1.Node/NodePublishVolume\",grpc_code=\"OK\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing line {line:?} in\n{text}");
        }
    }
}
