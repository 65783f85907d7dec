use super::*;
use pretty_assertions::assert_eq;

fn self_signed(name: &str) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn write(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join(CERT_FILE), cert).unwrap();
    std::fs::write(dir.join(KEY_FILE), key).unwrap();
}

fn served(resolver: &CertResolver) -> Vec<Vec<u8>> {
    resolver
        .current_chain()
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_vec())
        .collect()
}

#[test]
fn reload_swaps_only_on_valid_changes() {
    wisp_shared::runtime::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let resolver = Arc::new(CertResolver::default());
    let reloader = CertReloader::new(dir.path(), resolver.clone());

    let err = reloader.reload().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            dir.path().join(CERT_FILE).display()
        )
    );
    assert!(!resolver.is_loaded());

    let (cert_a, key_a, der_a) = self_signed("a.example");
    write(dir.path(), &cert_a, &key_a);
    assert_eq!(reloader.reload().unwrap(), Reload::Loaded);
    assert_eq!(served(&resolver), vec![der_a.clone()]);
    assert_eq!(reloader.reload().unwrap(), Reload::Unchanged);

    // A key from another pair: refused, the old certificate stays.
    let (cert_b, key_b, der_b) = self_signed("b.example");
    write(dir.path(), &cert_b, &key_a);
    let err = reloader.reload().unwrap_err();
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert_eq!(served(&resolver), vec![der_a.clone()]);

    write(dir.path(), "not pem", &key_b);
    let err = reloader.reload().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} holds no PEM CERTIFICATE block; it must contain the serving certificate (then its chain)",
            dir.path().join(CERT_FILE).display()
        )
    );
    assert_eq!(served(&resolver), vec![der_a]);

    write(dir.path(), &cert_b, &key_b);
    assert_eq!(reloader.reload().unwrap(), Reload::Loaded);
    assert_eq!(served(&resolver), vec![der_b]);
}

/// Runs a handshake between an in-memory client offering `client_versions` and `server`; the version agreed.
fn handshake(
    server: Arc<ServerConfig>,
    client_versions: &[&'static rustls::SupportedProtocolVersion],
    ca_der: Vec<u8>,
) -> Result<rustls::ProtocolVersion, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der)).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(client_versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("a.example").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = rustls::ServerConnection::new(server).unwrap();
    let mut buf = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets()?;
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets()?;
    }
    Ok(client.protocol_version().unwrap())
}

#[test]
fn minimum_tls_version_is_enforced() {
    let (cert, key, der) = self_signed("a.example");
    let dir = Path::new("/certs");
    let resolver = Arc::new(CertResolver::default());
    resolver.set(
        certified_key(
            &dir.join(CERT_FILE),
            cert.as_bytes(),
            &dir.join(KEY_FILE),
            key.as_bytes(),
        )
        .unwrap(),
    );
    let tls13 = server_config(resolver.clone(), TlsVersion::Tls13).unwrap();
    let tls12 = server_config(resolver, TlsVersion::Tls12).unwrap();
    assert_eq!(tls13.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);

    let only12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let both: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    assert_eq!(
        handshake(tls13.clone(), both, der.clone()),
        Ok(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(handshake(tls13, only12, der.clone()).is_err());
    assert_eq!(handshake(tls12, only12, der), Ok(rustls::ProtocolVersion::TLSv1_2));
}

#[test]
fn debug_never_shows_the_key() {
    let (cert, key, _) = self_signed("a.example");
    let resolver = CertResolver::default();
    assert_eq!(format!("{resolver:?}"), "CertResolver { loaded: false }");
    let dir = Path::new("/certs");
    resolver.set(
        certified_key(
            &dir.join(CERT_FILE),
            cert.as_bytes(),
            &dir.join(KEY_FILE),
            key.as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(format!("{resolver:?}"), "CertResolver { loaded: true }");
}

#[test]
fn key_errors_do_not_echo_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = self_signed("a.example");
    let secret_looking = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n";
    let err = certified_key(
        &dir.path().join(CERT_FILE),
        cert.as_bytes(),
        &dir.path().join(KEY_FILE),
        secret_looking.as_bytes(),
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("c2VjcmV0"), "{err}");
    assert!(err.contains(KEY_FILE), "{err}");
}
