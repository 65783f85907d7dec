use super::*;
use pretty_assertions::assert_eq;

#[test]
fn exposition_names_labels_and_buckets() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.observe_mutation("ns1", 0.0025);
    metrics.count(Outcome::Mutated);
    metrics.count(Outcome::Mutated);
    metrics.count(Outcome::Denied);
    let text = encode(&registry).unwrap();
    let mut expected = String::from(
        "# HELP azwi_mutation_request Distribution of how long it took for the azure-workload-identity mutation request.\n\
         # TYPE azwi_mutation_request histogram\n\
         azwi_mutation_request_sum{namespace=\"ns1\"} 0.0025\n\
         azwi_mutation_request_count{namespace=\"ns1\"} 1\n",
    );
    for bucket in MUTATION_BUCKETS {
        let count = u8::from(bucket >= 0.003);
        expected.push_str(&format!(
            "azwi_mutation_request_bucket{{le=\"{bucket:?}\",namespace=\"ns1\"}} {count}\n"
        ));
    }
    expected.push_str("azwi_mutation_request_bucket{le=\"+Inf\",namespace=\"ns1\"} 1\n");
    expected.push_str(
        "# HELP wisp_webhook_admissions Admission requests handled, by outcome (mutated, unchanged, denied, error).\n\
         # TYPE wisp_webhook_admissions counter\n",
    );
    let body_start = expected.len();
    expected.push_str("# EOF\n");
    // The counter family's series order follows a hash map; compare them as a set.
    let (head, counters) = text.split_at(body_start.min(text.len()));
    assert_eq!(head, &expected[..body_start]);
    let mut lines: Vec<&str> = counters.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec![
            "# EOF",
            "wisp_webhook_admissions_total{outcome=\"denied\"} 1",
            "wisp_webhook_admissions_total{outcome=\"error\"} 0",
            "wisp_webhook_admissions_total{outcome=\"mutated\"} 2",
            "wisp_webhook_admissions_total{outcome=\"unchanged\"} 0",
        ]
    );
}
