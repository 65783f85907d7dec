//! Serving certificate with hot reload. Kubernetes updates a mounted Secret by swapping a symlink to a new
//! directory, which per-file watches miss; the directory is therefore polled and the file contents compared, and
//! a changed, valid pair replaces the served certificate atomically for the next handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM CERTIFICATE block; it must contain the serving certificate (then its chain)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Minimum TLS protocol version accepted (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

/// Hands rustls the current certificate; none until the first valid pair was loaded (handshakes fail meanwhile).
#[derive(Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

/// Shows whether a certificate is loaded, never the key.
impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl CertResolver {
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// The served certificate chain (DER), for tests.
    #[cfg(test)]
    pub(crate) fn current_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.current.load().as_ref().map(|k| k.cert.clone())
    }

    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Some(Arc::new(key)));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The rustls configuration serving whatever `resolver` holds, HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: Arc<CertResolver>, min_version: TlsVersion) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    // The pem error never contains key material, only the kind of parse failure.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What a reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Loaded,
    Unchanged,
}

/// Polls `dir/tls.crt` and `dir/tls.key` and feeds changed, valid pairs to the resolver.
pub struct CertReloader {
    dir: PathBuf,
    resolver: Arc<CertResolver>,
    /// The bytes of the pair last seen (valid or not), so an unchanged invalid pair is reported once.
    last: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl CertReloader {
    pub fn new(dir: impl Into<PathBuf>, resolver: Arc<CertResolver>) -> Self {
        Self {
            dir: dir.into(),
            resolver,
            last: Mutex::new(None),
        }
    }

    /// Reads the pair; when its bytes differ from the last read and it is valid, it becomes the served one.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let cert_path = self.dir.join(CERT_FILE);
        let key_path = self.dir.join(KEY_FILE);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|(c, k)| *c == cert && *k == key) {
            return Ok(Reload::Unchanged);
        }
        let parsed = certified_key(&cert_path, &cert, &key_path, &key);
        *last = Some((cert, key));
        self.resolver.set(parsed?);
        Ok(Reload::Loaded)
    }

    /// Reloads every `interval`, forever; a bad pair is logged and the previous certificate kept.
    pub async fn run(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(Reload::Loaded) => {
                    failing = false;
                    tracing::info!(dir = %self.dir.display(), "serving certificate loaded");
                }
                Ok(Reload::Unchanged) => {}
                Err(e) => {
                    // A missing pair is expected until the certificate Secret is populated; say so once.
                    if !failing {
                        tracing::error!(error = %e, "serving certificate not (re)loaded; keeping the previous one");
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
