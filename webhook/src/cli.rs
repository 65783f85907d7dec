//! Command line and environment, parsed once into a validated [`Config`]. Flag names and defaults follow the
//! upstream webhook's so a Deployment's args keep working.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::workload_identity as wi;

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
    /// Directory holding tls.crt and tls.key; polled for changes.
    #[arg(long, default_value = "/certs")]
    pub webhook_cert_dir: PathBuf,
    /// How often the certificate directory is checked for a new pair.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
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
}

/// Everything the server needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `native_sidecar` in here is resolved by the server when [`Config::native_sidecar`] is `Auto`.
    pub mutation: MutationConfig,
    pub native_sidecar: NativeSidecar,
    pub cert_dir: PathBuf,
    pub cert_reload_interval: Duration,
    pub tls_min_version: TlsVersion,
    pub webhook_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub log_level: String,
    pub shutdown_timeout: Duration,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
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
            tls_min_version: cli.tls_min_version,
            webhook_addr: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, cli.port)),
            health_addr: parse_addr("--health-addr", &cli.health_addr)?,
            metrics_addr: parse_addr("--metrics-addr", &cli.metrics_addr)?,
            log_level: cli.log_level,
            shutdown_timeout: cli.shutdown_timeout,
        })
    }
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

/// Go-style listen address: ":9440" is every interface (IPv6 and, dual-stack, IPv4; see `server::bind`).
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
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use rstest::rstest;

    fn cli(args: &[&str]) -> Cli {
        // Flags only: the environment of the test process must not leak in, so every env-backed flag is given.
        let mut all = vec!["wisp-webhook"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_match_upstream() {
        let config = Config::from_cli(cli(&["--tenant-id", "tid", "--azure-environment", "AzurePublicCloud"])).unwrap();
        assert_eq!(
            config.mutation,
            MutationConfig {
                tenant_id: "tid".to_string(),
                authority_host: "https://login.microsoftonline.com/".to_string(),
                audience: "api://AzureADTokenExchange".to_string(),
                proxy_image: DEFAULT_PROXY_IMAGE.to_string(),
                proxy_init_image: DEFAULT_PROXY_INIT_IMAGE.to_string(),
                native_sidecar: false,
                proxy_log_level: "info".to_string(),
            }
        );
        assert_eq!(config.webhook_addr, "[::]:9443".parse().unwrap());
        assert_eq!(config.health_addr, "[::]:9440".parse().unwrap());
        assert_eq!(config.metrics_addr, "[::]:8095".parse().unwrap());
        assert_eq!(config.tls_min_version, TlsVersion::Tls13);
        assert_eq!(config.cert_dir, PathBuf::from("/certs"));
        assert_eq!(config.native_sidecar, NativeSidecar::Auto);
    }

    #[rstest]
    #[case("AzurePublicCloud", "https://login.microsoftonline.com/")]
    #[case("AzureUSGovernmentCloud", "https://login.microsoftonline.us/")]
    #[case("AzureChinaCloud", "https://login.chinacloudapi.cn/")]
    #[case("azurechinacloud", "https://login.chinacloudapi.cn/")]
    fn authority_host_from_cloud(#[case] cloud: &str, #[case] authority: &str) {
        let config = Config::from_cli(cli(&["--tenant-id", "t", "--azure-environment", cloud])).unwrap();
        assert_eq!(config.mutation.authority_host, authority);
    }

    #[rstest]
    #[case(&["--tenant-id", " ", "--azure-environment", "AzurePublicCloud"], "AZURE_TENANT_ID is required: set it (or --tenant-id) to the Microsoft Entra tenant ID used for ServiceAccounts without the azure.workload.identity/tenant-id annotation")]
    #[case(&["--tenant-id", "t", "--azure-environment", "InvalidCloud"], "AZURE_ENVIRONMENT: There is no cloud environment matching the name \"InvalidCloud\"; use AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud or AzureStackCloud")]
    #[case(&["--tenant-id", "t", "--azure-environment", "AzureStackCloud", "--azure-environment-filepath", "/nonexistent/env.json"], "AZURE_ENVIRONMENT_FILEPATH: cloud environment file /nonexistent/env.json: No such file or directory (os error 2)")]
    #[case(&["--tenant-id", "t", "--azure-environment", "AzurePublicCloud", "--metrics-backend", "otel"], "unsupported metrics backend: otel; the only backend is prometheus")]
    #[case(&["--tenant-id", "t", "--azure-environment", "AzurePublicCloud", "--health-addr", "nope"], "--health-addr: \"nope\" is not an address; use HOST:PORT or :PORT")]
    fn fatal_configuration(#[case] args: &[&str], #[case] message: &str) {
        assert_eq!(Config::from_cli(cli(args)).unwrap_err().to_string(), message);
    }

    #[rstest]
    #[case("", "info")]
    #[case("debug", "debug")]
    #[case("WARN", "warning")]
    #[case("wisp_webhook=trace", "info")]
    fn proxy_level(#[case] level: &str, #[case] expected: &str) {
        assert_eq!(proxy_log_level(level), expected);
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::from_cli(cli(&[
            "--tenant-id",
            "t",
            "--azure-environment",
            "AzurePublicCloud",
            "--port",
            "10443",
            "--health-addr",
            "127.0.0.1:1",
            "--tls-min-version",
            "1.2",
            "--native-sidecar",
            "true",
            "--audience",
            "",
            "--log-level",
            "debug",
        ]))
        .unwrap();
        assert_eq!(config.webhook_addr, "[::]:10443".parse().unwrap());
        assert_eq!(config.health_addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(config.tls_min_version, TlsVersion::Tls12);
        assert!(config.mutation.native_sidecar);
        assert_eq!(config.mutation.audience, "api://AzureADTokenExchange");
        assert_eq!(config.mutation.proxy_log_level, "debug");
    }
}
