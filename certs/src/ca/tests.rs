use std::net::{Ipv4Addr, Ipv6Addr};

use pretty_assertions::assert_eq;

use super::*;
use crate::fixtures::{DAY, ca};
use crate::{inspect, verify_serving_cert};

#[test]
fn generated_ca_is_a_self_signed_ca_with_the_requested_validity() {
    let ca = ca();
    let info = inspect(ca.cert_pem()).unwrap();
    assert_eq!(info.subject_common_name.as_deref(), Some("wisp test CA"));
    assert_eq!(info.issuer_common_name.as_deref(), Some("wisp test CA"));
    assert!(info.is_ca);
    assert_eq!(info.dns_names, Vec::<String>::new());
    assert_eq!(
        info.not_after.duration_since(info.not_before).unwrap(),
        30 * DAY + BACKDATE
    );
    assert_eq!(&info, ca.info());
    assert_eq!(ca.not_after(), info.not_after);
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
}

#[test]
fn server_cert_carries_dns_and_ip_names_in_order_and_chains_to_the_ca() {
    let ca = ca();
    let names = [
        "wisp-webhook.wisp-system.svc",
        "localhost",
        "127.0.0.1",
        "::1",
        "*.vault.wisp.test",
    ];
    let cert = ca.issue_server_cert(&names, DAY).unwrap();
    let info = inspect(&cert.cert_pem).unwrap();
    assert_eq!(
        info,
        CertInfo {
            subject_common_name: Some("wisp-webhook.wisp-system.svc".into()),
            issuer_common_name: Some("wisp test CA".into()),
            not_before: info.not_before,
            not_after: info.not_before + DAY + BACKDATE,
            dns_names: vec![
                "wisp-webhook.wisp-system.svc".into(),
                "localhost".into(),
                "*.vault.wisp.test".into()
            ],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
            is_ca: false,
        }
    );
    let now = SystemTime::now();
    for name in [
        "wisp-webhook.wisp-system.svc",
        "localhost",
        "127.0.0.1",
        "::1",
        "kv1.vault.wisp.test",
    ] {
        verify_serving_cert(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, name, now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn ca_round_trips_through_pem_and_keeps_signing_for_the_same_trust_anchor() {
    let original = ca();
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    assert_eq!(loaded.key_pem(), original.key_pem());
    assert_eq!(loaded.info(), original.info());
    let cert = loaded.issue_server_cert(&["127.0.0.1"], DAY).unwrap();
    verify_serving_cert(
        original.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
        "127.0.0.1",
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        inspect(&cert.cert_pem).unwrap().issuer_common_name.as_deref(),
        Some("wisp test CA")
    );
}

#[test]
fn loading_a_ca_checks_the_certificate_and_the_key() {
    let ca = ca();
    let other = CertificateAuthority::generate("other CA", DAY).unwrap();
    let leaf = ca.issue_server_cert(&["localhost"], DAY).unwrap();

    let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CA private key does not belong to CA certificate; store the key that was generated with that certificate"
    );
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CA certificate is not a CA certificate (basicConstraints CA:TRUE is missing); use the CA's own certificate"
    );
    let err = CertificateAuthority::from_pem("garbage", ca.key_pem()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CA certificate: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
    );
    let err = CertificateAuthority::from_pem(ca.cert_pem(), "garbage").unwrap_err();
    assert_eq!(
        err.to_string(),
        "CA private key: not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----) of a supported type"
    );
}

#[test]
fn server_cert_validity_is_capped_at_the_ca_expiry() {
    let ca = CertificateAuthority::generate("short CA", DAY).unwrap();
    let cert = ca.issue_server_cert(&["localhost"], 365 * DAY).unwrap();
    assert_eq!(inspect(&cert.cert_pem).unwrap().not_after, ca.not_after());
}

#[test]
fn invalid_names_and_validities_are_refused_with_the_offending_value() {
    let ca = ca();
    let none: [&str; 0] = [];
    assert_eq!(ca.issue_server_cert(&none, DAY).unwrap_err(), CertError::NoNames);
    assert_eq!(
        ca.issue_server_cert(&["localhost", " "], DAY).unwrap_err().to_string(),
        "invalid subject alternative name \" \": it is empty"
    );
    assert_eq!(
        ca.issue_server_cert(&["bad name"], DAY).unwrap_err().to_string(),
        "invalid subject alternative name \"bad name\": not an IP address, and not a DNS name (dot-separated \
         labels of letters, digits and '-', optionally starting with \"*.\")"
    );
    assert_eq!(
        ca.issue_server_cert(&["localhost"], Duration::ZERO)
            .unwrap_err()
            .to_string(),
        "certificate validity of 0s is out of range: use between 1 second and 100 years"
    );
    assert_eq!(
        CertificateAuthority::generate("x", MAX_VALIDITY + DAY).unwrap_err(),
        CertError::InvalidValidity {
            seconds: (MAX_VALIDITY + DAY).as_secs()
        }
    );
}

#[test]
fn debug_output_never_shows_private_keys() {
    let ca = ca();
    let cert = ca.issue_server_cert(&["localhost"], DAY).unwrap();
    let key_body = |pem: &str| pem.lines().nth(1).unwrap().to_string();
    let ca_debug = format!("{ca:?}");
    let cert_debug = format!("{cert:?}");
    assert!(!ca_debug.contains(&key_body(ca.key_pem())), "{ca_debug}");
    assert!(!cert_debug.contains(&key_body(&cert.key_pem)), "{cert_debug}");
    assert!(ca_debug.contains("key_pem: \"<redacted>\""), "{ca_debug}");
    assert!(cert_debug.contains("key_pem: \"<redacted>\""), "{cert_debug}");
}

#[test]
fn generation_at_an_explicit_time_starts_validity_there() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let ca = CertificateAuthority::generate_at("future CA", 30 * DAY, at).unwrap();
    assert_eq!(ca.info().not_before, at - BACKDATE);
    assert_eq!(ca.info().not_after, at + 30 * DAY);
    let cert = ca.issue_server_cert_at(&["localhost"], DAY, at).unwrap();
    let info = inspect(&cert.cert_pem).unwrap();
    assert_eq!((info.not_before, info.not_after), (at - BACKDATE, at + DAY));
    verify_serving_cert(ca.cert_pem(), &cert.cert_pem, &cert.key_pem, "localhost", at).unwrap();
    let err = verify_serving_cert(
        ca.cert_pem(),
        &cert.cert_pem,
        &cert.key_pem,
        "localhost",
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, CertError::Untrusted { reason, .. } if reason.starts_with("invalid peer certificate: certificate not valid yet")),
        "{err}"
    );
}
