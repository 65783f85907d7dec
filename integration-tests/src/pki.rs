//! The test PKI: one CA per test (or per local stack) that every fake's HTTPS certificate chains to, and the
//! TLS plumbing around it (server and client configs, a `reqwest` client trusting only that CA, an HTTPS server
//! on `127.0.0.1:0` for an axum router).
//!
//! Programs under test trust the CA the way real deployments trust a private CA: through a file (`ca.crt`,
//! see [`TestPki::write_ca_cert`]) named by `SSL_CERT_FILE`, a kubeconfig's `certificate-authority-data`, or
//! the webhook's `caBundle`.
//!
//! ```no_run
//! # async fn demo() {
//! use integration_tests::pki::TestPki;
//! let pki = TestPki::new();
//! let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let server = pki.serve(router, &["login.wisp.test"]);
//! let body = pki.reqwest_client().get(server.url("/")).send().await.unwrap().text().await.unwrap();
//! assert_eq!(body, "hello");
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use wisp_certs::{CertificateAuthority, ServingCert};

use crate::https_server::LoopbackServer;

/// Common name of every test CA, visible in certificate errors.
pub const TEST_CA_NAME: &str = "wisp test CA";

/// File name [`TestPki::write_ca_cert`] writes, as in a Kubernetes CA bundle.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File names [`TestPki::write_server_cert`] writes: the keys of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

/// Names every serving certificate from [`TestPki::server_cert`] carries, so clients may connect by either.
pub const LOOPBACK_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A certificate authority for one test or one local stack.
///
/// Test helper: panics (with the reason) if certificate generation or a file write fails, which only happens
/// on a broken machine.
#[derive(Debug)]
pub struct TestPki {
    ca: CertificateAuthority,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// A fresh CA named [`TEST_CA_NAME`], valid for a day.
    pub fn new() -> Self {
        wisp_shared::runtime::install_crypto_provider();
        let ca = CertificateAuthority::generate(TEST_CA_NAME, VALIDITY)
            .unwrap_or_else(|e| panic!("cannot generate the test CA: {e}"));
        Self { ca }
    }

    /// The underlying CA (for issuing certificates with other names or validities).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns that path.
    pub fn write_ca_cert(&self, dir: &Path) -> PathBuf {
        let path = dir.join(CA_CERT_FILE);
        write(&path, self.ca_pem());
        path
    }

    /// A serving certificate for `127.0.0.1`, `localhost` and `extra_names` (DNS names or IP addresses), valid
    /// for a day.
    pub fn server_cert(&self, extra_names: &[&str]) -> ServingCert {
        let names: Vec<&str> = LOOPBACK_NAMES.iter().chain(extra_names).copied().collect();
        self.ca
            .issue_server_cert(&names, VALIDITY)
            .unwrap_or_else(|e| panic!("cannot issue a test serving certificate for {names:?}: {e}"))
    }

    /// Writes a fresh [`server_cert`](Self::server_cert) as `dir/tls.crt` and `dir/tls.key` (the layout of a
    /// mounted `kubernetes.io/tls` Secret) and returns both paths.
    pub fn write_server_cert(&self, dir: &Path, extra_names: &[&str]) -> (PathBuf, PathBuf) {
        let cert = self.server_cert(extra_names);
        let cert_path = dir.join(TLS_CERT_FILE);
        let key_path = dir.join(TLS_KEY_FILE);
        write(&cert_path, &cert.cert_pem);
        write(&key_path, &cert.key_pem);
        (cert_path, key_path)
    }

    /// A rustls server config presenting a fresh [`server_cert`](Self::server_cert), offering HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(&self, extra_names: &[&str]) -> Arc<ServerConfig> {
        let cert = self.server_cert(extra_names);
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("issued certificate is PEM")];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("issued key is PEM");
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|e| panic!("test serving certificate rejected by rustls: {e}"));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A root store holding only the test CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.ca_pem().as_bytes()).expect("test CA is PEM");
        roots.add(der).expect("test CA is a valid trust anchor");
        roots
    }

    /// A rustls client config trusting only the test CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Serves `router` over HTTPS on `127.0.0.1:<ephemeral port>` with a certificate for `127.0.0.1`, `localhost`
    /// and `extra_names`. Must run inside a Tokio runtime, which then drives the server.
    pub fn serve(&self, router: axum::Router, extra_names: &[&str]) -> LoopbackServer {
        LoopbackServer::https(router, self.server_config(extra_names))
            .unwrap_or_else(|e| panic!("cannot serve HTTPS on loopback: {e}"))
    }

    /// A `reqwest` client trusting only the test CA (no system roots), e.g. for tests that call a fake directly or
    /// for the Azure SDK's transport.
    pub fn reqwest_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).expect("test CA is PEM");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap_or_else(|e| panic!("cannot build a reqwest client trusting the test CA: {e}"))
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_server_is_trusted_by_the_pki_client_under_both_loopback_names() {
        let pki = TestPki::new();
        let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        let server = pki.serve(router, &[]);
        let client = pki.reqwest_client();
        for base in [server.url(""), format!("https://localhost:{}", server.port())] {
            let response = client.get(format!("{base}/hello")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "hello");
        }
        let stranger = TestPki::new().reqwest_client();
        let err = stranger.get(server.url("/hello")).send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }

    #[test]
    fn files_have_the_kubernetes_names_and_the_issued_contents() {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let ca = pki.write_ca_cert(dir.path());
        assert_eq!(ca, dir.path().join("ca.crt"));
        assert_eq!(std::fs::read_to_string(&ca).unwrap(), pki.ca_pem());
        let (cert, key) = pki.write_server_cert(dir.path(), &["kv1.vault.wisp.test"]);
        assert_eq!(
            (cert.clone(), key.clone()),
            (dir.path().join("tls.crt"), dir.path().join("tls.key"))
        );
        let cert_pem = std::fs::read_to_string(cert).unwrap();
        let key_pem = std::fs::read_to_string(key).unwrap();
        let info = wisp_certs::inspect(&cert_pem).unwrap();
        assert_eq!(
            info.dns_names,
            vec!["localhost".to_string(), "kv1.vault.wisp.test".to_string()]
        );
        assert_eq!(info.ip_addresses, vec![std::net::IpAddr::from([127, 0, 0, 1])]);
        wisp_certs::verify_serving_cert(
            pki.ca_pem(),
            &cert_pem,
            &key_pem,
            "kv1.vault.wisp.test",
            std::time::SystemTime::now(),
        )
        .unwrap();
    }
}
