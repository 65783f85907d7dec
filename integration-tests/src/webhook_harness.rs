//! The harness of the real `wisp-webhook` binary, shared by its end-to-end tests: a running webhook on free
//! loopback ports ([`Webhook`]) with its plain HTTP health and metrics listeners, waiting on it with its logs at
//! hand, and looking at the certificate it serves through a real TLS handshake.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::process::{RunningProgram, WebhookLaunch, free_port};

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `wisp-webhook` with the test command line of [`WebhookLaunch`].
pub struct Webhook {
    pub program: RunningProgram,
    /// The HTTPS admission port.
    pub port: u16,
    pub health_port: u16,
    pub metrics_port: u16,
    /// For the plain HTTP listeners; one per webhook, as a client's pool belongs to one test's runtime.
    plain: reqwest::Client,
}

impl Webhook {
    /// Starts the webhook with `extra_args` after the test command line.
    pub fn start(kubeconfig: &Path, cert_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_with(kubeconfig, cert_dir, extra_args, &[])
    }

    /// As [`start`](Self::start), with `env` set in the webhook's environment.
    pub fn start_with(kubeconfig: &Path, cert_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let (port, health_port, metrics_port) = (free_port(), free_port(), free_port());
        let mut program = WebhookLaunch {
            kubeconfig,
            cert_dir,
            port,
            health_port,
            metrics_port,
        }
        .program()
        .args(extra_args);
        for (name, value) in env {
            program = program.env(name, value);
        }
        Self {
            program: program.spawn(),
            port,
            health_port,
            metrics_port,
            plain: reqwest::Client::builder().no_proxy().build().expect("http client"),
        }
    }

    pub fn log(&self) -> String {
        self.program.logs()
    }

    /// GET `path` on the health listener: `None` while the process does not listen yet.
    pub async fn health(&self, path: &str) -> Option<(u16, String)> {
        self.get(self.health_port, path).await
    }

    /// GET `path` on the metrics listener: `None` while the process does not listen yet.
    pub async fn metrics(&self, path: &str) -> Option<(u16, String)> {
        self.get(self.metrics_port, path).await
    }

    async fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let response = self
            .plain
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_for("/readyz is ok", async || {
            self.health("/readyz").await.filter(|r| r.0 == 200)
        })
        .await;
    }

    /// Polls `probe` until it gives a value; panics with the webhook's log after a while.
    pub async fn wait_for<T>(&self, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting until {what}; webhook log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> ExitStatus {
        match self.program.terminate(PATIENCE).await {
            Some(status) => status,
            None => panic!("webhook did not exit after SIGTERM; log:\n{}", self.program.logs()),
        }
    }
}

/// The leaf the webhook on `port` presents to a client with `config` connecting for `server_name`, from a real
/// handshake.
pub async fn served_certificate(
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    port: u16,
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let certs = tls.get_ref().1.peer_certificates().ok_or("no peer certificate")?;
    Ok(certs[0].to_vec())
}

/// A TLS client config trusting only the certificates of `ca_pem`, as kube-apiserver trusts a caBundle.
pub fn client_config_trusting(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The DER of the first certificate in `pem`.
pub fn certificate_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}
