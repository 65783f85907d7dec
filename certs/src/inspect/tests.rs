use pretty_assertions::assert_eq;

use super::*;
use crate::CertificateAuthority;
use crate::fixtures::{DAY, ca};

#[test]
fn server_cert_is_rejected_for_other_names_and_outside_its_validity() {
    let ca = ca();
    let cert = ca.issue_server_cert(&["localhost", "127.0.0.1"], DAY).unwrap();
    let info = inspect(&cert.cert_pem).unwrap();
    let err = verify_serving_cert(
        ca.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
        "example.com",
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, CertError::Untrusted { server_name, reason }
            if server_name == "example.com" && reason.starts_with("invalid peer certificate: certificate not valid for name \"example.com\"")),
        "{err}"
    );
    let after_expiry = info.not_after + Duration::from_secs(1);
    let err = verify_serving_cert(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, "localhost", after_expiry).unwrap_err();
    assert!(
        matches!(&err, CertError::Untrusted { reason, .. } if reason.starts_with("invalid peer certificate: certificate expired")),
        "{err}"
    );
    let err = verify_serving_cert(
        ca.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
        "not a name!",
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid subject alternative name \"not a name!\": not a DNS name or an IP address"
    );
}

#[test]
fn server_cert_from_another_ca_or_with_another_key_is_rejected() {
    let ca = ca();
    let other = CertificateAuthority::generate("other CA", DAY).unwrap();
    let cert = other.issue_server_cert(&["localhost"], DAY).unwrap();
    let err = verify_serving_cert(
        ca.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
        "localhost",
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        CertError::Untrusted {
            server_name: "localhost".into(),
            reason: "invalid peer certificate: UnknownIssuer".into()
        }
    );

    let mine = ca.issue_server_cert(&["localhost"], DAY).unwrap();
    let err = verify_serving_cert(
        ca.cert_pem(),
        &mine.cert_pem,
        &cert.key_pem,
        "localhost",
        SystemTime::now(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "serving private key does not belong to the serving certificate; store the key that was generated with \
         that certificate"
    );
}

#[test]
fn rotation_is_due_within_the_lookahead_or_before_validity_starts() {
    let ca = ca();
    let cert = ca.issue_server_cert(&["localhost"], 10 * DAY).unwrap();
    let info = inspect(&cert.cert_pem).unwrap();
    let lookahead = 2 * DAY;
    let last_quiet_moment = info.not_after - lookahead - Duration::from_secs(1);
    assert!(!info.needs_rotation(last_quiet_moment, lookahead));
    assert!(info.needs_rotation(info.not_after - lookahead, lookahead));
    assert!(info.needs_rotation(info.not_before - Duration::from_secs(1), lookahead));
    assert!(!needs_rotation(&cert.cert_pem, info.not_before, lookahead).unwrap());
    assert!(needs_rotation(&cert.cert_pem, info.not_after, Duration::ZERO).unwrap());
    assert_eq!(
        needs_rotation("", SystemTime::now(), lookahead)
            .unwrap_err()
            .to_string(),
        "certificate: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
    );
}
