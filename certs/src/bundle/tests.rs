use pretty_assertions::assert_eq;

use super::*;
use crate::fixtures::DAY;

const NAME: &str = "wisp-webhook.wisp-system.svc";

fn spec() -> BundleSpec {
    BundleSpec::new("wisp-webhook-ca", &[NAME, "wisp-webhook.wisp-system.svc.cluster.local"])
}

#[test]
fn defaults_are_cert_controllers() {
    let spec = spec();
    assert_eq!(spec.ca_validity, Duration::from_secs(315_360_000));
    assert_eq!(spec.serving_validity, Duration::from_secs(315_360_000));
    assert_eq!(spec.lookahead, Duration::from_secs(7_776_000));
}

#[test]
fn a_generated_bundle_round_trips_through_secret_data_and_passes_the_check() {
    let bundle = CertBundle::generate(&spec(), SystemTime::now()).unwrap();
    let data = bundle.to_secret_data();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    let loaded = CertBundle::from_secret_data(&data).unwrap();
    assert_eq!(loaded.to_secret_data(), data);
    loaded.check(&spec(), SystemTime::now()).unwrap();
}

#[test]
fn reconcile_keeps_a_good_bundle_and_generates_when_nothing_usable_is_stored() {
    let now = SystemTime::now();
    let (fresh, outcome) = CertBundle::reconcile(None, &spec(), now).unwrap();
    assert_eq!(outcome, Outcome::Regenerated);
    let data = fresh.to_secret_data();
    let (kept, outcome) = CertBundle::reconcile(Some(&data), &spec(), now).unwrap();
    assert_eq!(outcome, Outcome::Unchanged);
    assert_eq!(kept.to_secret_data(), data);

    let mut broken = data.clone();
    broken.insert(TLS_KEY_KEY.into(), b"garbage".to_vec());
    let (replaced, outcome) = CertBundle::reconcile(Some(&broken), &spec(), now).unwrap();
    assert_eq!(outcome, Outcome::ServingReissued);
    assert_eq!(replaced.ca.cert_pem(), fresh.ca.cert_pem());
    replaced.check(&spec(), now).unwrap();

    let mut no_ca = data;
    no_ca.remove(CA_KEY_KEY);
    assert_eq!(
        CertBundle::from_secret_data(&no_ca).unwrap_err().to_string(),
        "the Secret has no ca.key entry; delete the Secret to have a new CA generated"
    );
    let (regenerated, outcome) = CertBundle::reconcile(Some(&no_ca), &spec(), now).unwrap();
    assert_eq!(outcome, Outcome::Regenerated);
    assert_ne!(regenerated.ca.cert_pem(), fresh.ca.cert_pem());
}

#[test]
fn reconcile_reissues_only_the_serving_cert_when_it_is_due_and_the_ca_is_not() {
    let mut short = spec();
    short.serving_validity = 100 * DAY;
    let (bundle, _) = CertBundle::reconcile(None, &short, SystemTime::now()).unwrap();
    let data = bundle.to_secret_data();
    // 95 days on, the serving certificate is within the 90-day lookahead; the ten-year CA is not.
    let later = SystemTime::now() + 95 * DAY;
    assert_eq!(
        bundle.check(&short, later).unwrap_err().to_string(),
        "the serving certificate expires within the rotation lookahead"
    );
    let (rotated, outcome) = CertBundle::reconcile(Some(&data), &short, later).unwrap();
    assert_eq!(outcome, Outcome::ServingReissued);
    assert_eq!(rotated.ca.cert_pem(), bundle.ca.cert_pem());
    assert_ne!(rotated.serving.cert_pem, bundle.serving.cert_pem);
}

#[test]
fn reconcile_replaces_everything_when_the_ca_is_due() {
    let mut short = spec();
    short.ca_validity = 100 * DAY;
    let (bundle, _) = CertBundle::reconcile(None, &short, SystemTime::now()).unwrap();
    let later = SystemTime::now() + 20 * DAY;
    assert_eq!(
        bundle.check(&short, later).unwrap_err().to_string(),
        "the serving certificate expires within the rotation lookahead"
    );
    let (rotated, outcome) = CertBundle::reconcile(Some(&bundle.to_secret_data()), &short, later).unwrap();
    assert_eq!(outcome, Outcome::Regenerated);
    assert_ne!(rotated.ca.cert_pem(), bundle.ca.cert_pem());
}

#[test]
fn a_bundle_for_other_names_is_reissued() {
    let (bundle, _) = CertBundle::reconcile(None, &spec(), SystemTime::now()).unwrap();
    let renamed = BundleSpec::new("wisp-webhook-ca", &["wisp-webhook.other-ns.svc"]);
    let err = bundle.check(&renamed, SystemTime::now()).unwrap_err();
    assert!(
        matches!(&err, CertError::Untrusted { server_name, .. } if server_name == "wisp-webhook.other-ns.svc"),
        "{err}"
    );
    let (rotated, outcome) =
        CertBundle::reconcile(Some(&bundle.to_secret_data()), &renamed, SystemTime::now()).unwrap();
    assert_eq!(outcome, Outcome::ServingReissued);
    rotated.check(&renamed, SystemTime::now()).unwrap();
}
