//! Command line and environment, parsed once into a validated [`Config`]. Flag names and defaults follow the
//! upstream webhook's so a Deployment's args keep working.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::deploy;
use wisp_shared::contract::workload_identity as wi;

use crate::cert_rotation::RotationConfig;
use crate::mutate::{DEFAULT_PROXY_IMAGE, DEFAULT_PROXY_INIT_IMAGE, MutationConfig};
use crate::tls::TlsVersion;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wisp-webhook",
    version,
    about = "Mutating admission webhook injecting Azure workload identity into pods"
)]
pub struct Cli {
    /// Default tenant ID, for ServiceAccounts without the azure.workload.identity/tenant-id annotation. Required.
    #[arg(long, env = wi::ENV_TENANT_ID)]
    pub tenant_id: Option<String>,
    /// Cloud name (AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud);
    /// decides AZURE_AUTHORITY_HOST.
    #[arg(long, env = "AZURE_ENVIRONMENT", default_value = "AzurePublicCloud")]
    pub azure_environment: String,
    /// Cloud environment JSON file, required with AzureStackCloud.
    #[arg(long, env = "AZURE_ENVIRONMENT_FILEPATH")]
    pub azure_environment_filepath: Option<PathBuf>,
    /// Image of the injected proxy sidecar.
    #[arg(long, env = "PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// Image of the injected proxy init container.
    #[arg(long, env = "PROXY_INIT_IMAGE", default_value = DEFAULT_PROXY_INIT_IMAGE)]
    pub proxy_init_image: String,
    /// Audience of the projected service account token (empty means the default).
    #[arg(long, default_value = wi::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Directory holding tls.crt and tls.key; polled for changes. Not used with --cert-rotation.
    #[arg(long, default_value = "/certs")]
    pub webhook_cert_dir: PathBuf,
    /// How often the certificate directory is checked for a new pair.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Manage the serving certificate (as upstream's cert-controller): keep a CA and a serving certificate in the
    /// Secret --cert-secret-name, rotate them before expiry, serve them, and write the CA into the caBundle of
    /// the MutatingWebhookConfiguration --webhook-config-name. false serves tls.crt/tls.key from
    /// --webhook-cert-dir.
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub cert_rotation: bool,
    /// Secret holding the managed CA and serving certificate (ca.crt, ca.key, tls.crt, tls.key).
    #[arg(long, default_value = deploy::WEBHOOK_CERT_SECRET_NAME)]
    pub cert_secret_name: String,
    /// Namespace of that Secret and of the webhook's Service; required with --cert-rotation.
    #[arg(long, env = "POD_NAMESPACE")]
    pub cert_secret_namespace: Option<String>,
    /// MutatingWebhookConfiguration whose webhooks get the managed CA as clientConfig.caBundle.
    #[arg(long, default_value = deploy::MUTATING_WEBHOOK_CONFIGURATION_NAME)]
    pub webhook_config_name: String,
    /// Service in front of the webhook: the serving certificate names <service>.<namespace>.svc and
    /// <service>.<namespace>.svc.<cluster domain>.
    #[arg(long, default_value = deploy::WEBHOOK_SERVICE_NAME)]
    pub webhook_service_name: String,
    /// Cluster DNS domain, for the serving certificate's long name.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// How often, with --cert-rotation, the Secret and the MutatingWebhookConfiguration are checked.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub cert_check_interval: Duration,
    /// Minimum TLS version.
    #[arg(long, value_enum, default_value = "1.3")]
    pub tls_min_version: TlsVersion,
    /// HTTPS port of the admission endpoint /mutate-v1-pod, on every interface.
    #[arg(long, default_value_t = 9443)]
    pub port: u16,
    /// Address of /healthz and /readyz (plain HTTP); ":PORT" means every interface.
    #[arg(long, default_value = ":9440")]
    pub health_addr: String,
    /// Address of /metrics (plain HTTP); ":PORT" means every interface.
    #[arg(long, default_value = ":8095")]
    pub metrics_addr: String,
    /// Metrics backend; only prometheus exists (accepted for compatibility with upstream's flag).
    #[arg(long, default_value = "prometheus")]
    pub metrics_backend: String,
    /// Log filter (info, debug, trace, or an env-filter directive); empty means RUST_LOG or info. Also passed to
    /// the proxy sidecar.
    #[arg(long, default_value = "")]
    pub log_level: String,
    /// Inject the proxy as a native sidecar (an init container with restartPolicy Always): auto detects an API
    /// server of 1.32 or newer at start-up, as upstream does.
    #[arg(long, value_enum, default_value = "auto")]
    pub native_sidecar: NativeSidecar,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecar {
    Auto,
    #[value(name = "true")]
    Enabled,
    #[value(name = "false")]
    Disabled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "AZURE_TENANT_ID is required: set it (or --tenant-id) to the Microsoft Entra tenant ID used for ServiceAccounts without the {} annotation",
        wi::TENANT_ID_ANNOTATION
    )]
    MissingTenant,
    #[error(
        "AZURE_ENVIRONMENT: {0}; use AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud or AzureStackCloud"
    )]
    UnknownCloud(String),
    #[error(
        "AZURE_ENVIRONMENT is AzureStackCloud but AZURE_ENVIRONMENT_FILEPATH is not set; point it at the cloud environment JSON file"
    )]
    MissingEnvironmentFile,
    #[error("AZURE_ENVIRONMENT_FILEPATH: {0}")]
    EnvironmentFile(String),
    #[error("unsupported metrics backend: {0}; the only backend is prometheus")]
    MetricsBackend(String),
    #[error("{flag}: {value:?} is not an address; use HOST:PORT or :PORT")]
    Address { flag: &'static str, value: String },
    #[error(
        "--cert-rotation needs the namespace of the certificate Secret: set POD_NAMESPACE (the chart sets it from the pod's namespace) or --cert-secret-namespace"
    )]
    MissingCertNamespace,
    #[error("{flag} must not be empty with --cert-rotation")]
    EmptyName { flag: &'static str },
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `native_sidecar` in here is resolved by the server when [`Config::native_sidecar`] is `Auto`.
    pub mutation: MutationConfig,
    pub native_sidecar: NativeSidecar,
    pub cert_dir: PathBuf,
    pub cert_reload_interval: Duration,
    /// `Some` with `--cert-rotation`: the certificate comes from the managed Secret, not from `cert_dir`.
    pub cert_rotation: Option<RotationConfig>,
    pub tls_min_version: TlsVersion,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub log_level: String,
    pub shutdown_timeout: Duration,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let cert_rotation = if cli.cert_rotation {
            Some(rotation_config(&cli)?)
        } else {
            None
        };
        let tenant_id = cli
            .tenant_id
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::MissingTenant)?;
        let cloud = if CloudEnvironment::is_stack_cloud(&cli.azure_environment) {
            let path = cli
                .azure_environment_filepath
                .ok_or(ConfigError::MissingEnvironmentFile)?;
            CloudEnvironment::from_file(&path).map_err(|e| ConfigError::EnvironmentFile(e.to_string()))?
        } else if cli.azure_environment.trim().is_empty() {
            CloudEnvironment::builtin(wisp_shared::cloud::AZURE_PUBLIC_CLOUD)
                .map_err(|e| ConfigError::UnknownCloud(e.to_string()))?
        } else {
            CloudEnvironment::builtin(&cli.azure_environment).map_err(|e| ConfigError::UnknownCloud(e.to_string()))?
        };
        if !cli.metrics_backend.eq_ignore_ascii_case("prometheus") {
            return Err(ConfigError::MetricsBackend(cli.metrics_backend));
        }
        let audience = if cli.audience.trim().is_empty() {
            wi::DEFAULT_AUDIENCE.to_string()
        } else {
            cli.audience
        };
        Ok(Config {
            mutation: MutationConfig {
                tenant_id,
                authority_host: cloud.active_directory_endpoint,
                audience,
                proxy_image: cli.proxy_image,
                proxy_init_image: cli.proxy_init_image,
                native_sidecar: cli.native_sidecar == NativeSidecar::Enabled,
                proxy_log_level: proxy_log_level(&cli.log_level).to_string(),
            },
            native_sidecar: cli.native_sidecar,
            cert_dir: cli.webhook_cert_dir,
            cert_reload_interval: cli.cert_reload_interval,
            cert_rotation,
            tls_min_version: cli.tls_min_version,
            webhook_addr: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, cli.port)),
            health_addr: parse_addr("--health-addr", &cli.health_addr)?,
            metrics_addr: parse_addr("--metrics-addr", &cli.metrics_addr)?,
            log_level: cli.log_level,
            shutdown_timeout: cli.shutdown_timeout,
        })
    }
}

fn rotation_config(cli: &Cli) -> Result<RotationConfig, ConfigError> {
    let namespace = cli
        .cert_secret_namespace
        .as_deref()
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .ok_or(ConfigError::MissingCertNamespace)?;
    let non_empty = |flag: &'static str, value: &str| {
        let value = value.trim();
        if value.is_empty() {
            Err(ConfigError::EmptyName { flag })
        } else {
            Ok(value.to_string())
        }
    };
    let service = non_empty("--webhook-service-name", &cli.webhook_service_name)?;
    Ok(RotationConfig {
        secret_name: non_empty("--cert-secret-name", &cli.cert_secret_name)?,
        secret_namespace: namespace.to_string(),
        webhook_config_name: non_empty("--webhook-config-name", &cli.webhook_config_name)?,
        bundle: RotationConfig::bundle_spec(RotationConfig::service_dns_names(
            &service,
            namespace,
            &cli.cluster_domain,
        )),
        check_interval: cli.cert_check_interval,
    })
}

/// The proxy understands upstream's levels only; anything else (an env-filter directive) falls back to info.
pub fn proxy_log_level(level: &str) -> &'static str {
    match level.trim().to_ascii_lowercase().as_str() {
        "all" => "all",
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warning",
        _ => "info",
    }
}

/// Go-style listen address: ":9440" is every interface (IPv6 and, dual-stack, IPv4; see `serve::bind`).
pub fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::Address {
        flag,
        value: value.to_string(),
    };
    let full = if value.starts_with(':') {
        format!("[::]{value}")
    } else {
        value.to_string()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    full.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)
}

#[cfg(test)]
mod tests;
