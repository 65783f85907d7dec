//! Reading figures out of a program's `/metrics` page (the Prometheus text format wisp-agent and wisp-sync serve),
//! for benchmarks that count what a program did.

/// The sum of the samples of `name` whose labels contain `label` (all of them when it is empty). Comment lines
/// and families whose name only starts with `name` (`name_bucket` of a histogram `name`) are left out.
pub fn sample_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .fold(0.0, |sum, v| sum + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_samples_of_one_family_by_label() {
        let text = "# HELP rotation_reconcile Total\n\
                    rotation_reconcile_total{successful=\"true\",namespace=\"a\"} 3\n\
                    rotation_reconcile_total{successful=\"true\",namespace=\"b\"} 4\n\
                    rotation_reconcile_total{successful=\"false\",namespace=\"a\"} 1\n\
                    rotation_reconcile_total_bucket{le=\"1\"} 100\n";
        assert_eq!(sample_sum(text, "rotation_reconcile_total", ""), 8.0);
        assert_eq!(sample_sum(text, "rotation_reconcile_total", "successful=\"true\""), 7.0);
        assert_eq!(sample_sum(text, "absent_total", ""), 0.0);
    }
}
