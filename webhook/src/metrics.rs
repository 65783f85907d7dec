//! Prometheus metrics: upstream's `azwi_mutation_request` histogram (so existing dashboards keep working) and a
//! counter of admissions by outcome. The registry is created by the caller and passed in; there are no globals.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upstream's buckets: 1..9 ms, 10..90 ms, 100..900 ms, then 1, 1.5, 2, 2.5, 3 s.
pub const MUTATION_BUCKETS: [f64; 32] = [
    0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08,
    0.09, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 2.5, 3.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// How an admission request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a non-empty patch.
    Mutated,
    /// Allowed, nothing to add (a reinvocation).
    Unchanged,
    /// Refused because of the pod or its ServiceAccount.
    Denied,
    /// The request could not be processed (malformed review, API read failure).
    Error,
}

type HistogramFamily = Family<NamespaceLabel, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug)]
pub struct Metrics {
    mutation_seconds: HistogramFamily,
    mutated: Counter,
    unchanged: Counter,
    denied: Counter,
    error: Counter,
}

fn mutation_histogram() -> Histogram {
    Histogram::new(MUTATION_BUCKETS)
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mutation_seconds: HistogramFamily = Family::new_with_constructor(mutation_histogram);
        registry.register(
            "azwi_mutation_request",
            "Distribution of how long it took for the azure-workload-identity mutation request",
            mutation_seconds.clone(),
        );
        let admissions = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "wisp_webhook_admissions",
            "Admission requests handled, by outcome (mutated, unchanged, denied, error)",
            admissions.clone(),
        );
        let counter = |outcome| admissions.get_or_create(&OutcomeLabel { outcome }).clone();
        Self {
            mutated: counter("mutated"),
            unchanged: counter("unchanged"),
            denied: counter("denied"),
            error: counter("error"),
            mutation_seconds,
        }
    }

    pub fn observe_mutation(&self, namespace: &str, seconds: f64) {
        self.mutation_seconds
            .get_or_create(&NamespaceLabel {
                namespace: namespace.to_string(),
            })
            .observe(seconds);
    }

    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Mutated => &self.mutated,
            Outcome::Unchanged => &self.unchanged,
            Outcome::Denied => &self.denied,
            Outcome::Error => &self.error,
        }
        .inc();
    }
}

/// The registry in the text exposition format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
