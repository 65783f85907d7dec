//! Command-line flags (each also settable through an environment variable), parsed once in `main`.
//!
//! Boolean flags take Go's `flag` forms too (`--construct-pem-chain=false`, `=1`, `=T`): the upstream charts
//! pass them that way and wisp must accept the same DaemonSet arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::provider::ProviderConfig;
use crate::provider::render::RenderOptions;
use crate::volume::mount::MountMode;
use clap::{ArgAction, Args, Parser};
use wisp_shared::contract::secrets_store::DRIVER_NAME;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wisp-agent",
    version,
    about = "CSI node plugin mounting Azure Key Vault objects"
)]
pub struct Cli {
    /// CSI endpoint: `unix:///path/to/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    /// This node's name, returned by NodeGetInfo.
    #[arg(long, env = "KUBE_NODE_NAME")]
    pub nodeid: String,

    #[command(flatten)]
    pub provider: ProviderFlags,

    /// CSI driver name (the CSIDriver object's name).
    #[arg(long, env = "WISP_DRIVER_NAME", default_value = DRIVER_NAME)]
    pub drivername: String,

    /// `tmpfs` (default, as upstream) or `directory` (unprivileged test runs).
    #[arg(long, env = "WISP_MOUNT_MODE", value_enum, default_value = "tmpfs")]
    pub mount_mode: MountMode,

    /// Address of the Prometheus `/metrics` endpoint (Go's `:8095` form accepted).
    #[arg(long, env = "WISP_METRICS_ADDR", default_value = ":8095", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,

    /// Address of the `/healthz` endpoint.
    #[arg(long, env = "WISP_HEALTH_ADDR", default_value = ":9808", value_parser = parse_listen_addr)]
    pub health_addr: SocketAddr,

    /// Log filter (`info`, `debug`, `wisp_agent=trace`); empty means `RUST_LOG` or `info`.
    #[arg(long, env = "WISP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Refresh mounted volumes when kubelet republishes them (CSIDriver `requiresRepublish: true`) and the poll
    /// interval has passed since the last successful refresh. Upstream's default is false.
    #[arg(long, env = "WISP_ENABLE_SECRET_ROTATION", default_value = "true", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub enable_secret_rotation: bool,

    /// Least time between two refreshes of one volume, as Go writes durations (`30s`, `2m`, `1h30m`).
    #[arg(long, env = "WISP_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = parse_go_duration)]
    pub rotation_poll_interval: Duration,

    /// Directory of the agent's record of the volumes it mounted (no secrets in it), so that a restarted agent
    /// keeps rotating and unpublishing them. On a node: a hostPath that lives as long as the mounts, e.g. under
    /// `/run`. Empty: no record (a restarted agent then learns the volumes again from kubelet's republish calls).
    #[arg(long, env = "WISP_STATE_DIR", default_value = "/run/wisp-agent", value_parser = parse_path_or_empty)]
    pub state_dir: PathBuf,

    /// Also serve the Secrets Store CSI driver's provider protocol here, for an existing upstream driver install:
    /// `unix:///var/run/secrets-store-csi-providers/azure.sock`, where the driver looks for the `azure` provider.
    /// Off when unset.
    #[arg(long, env = "WISP_PROVIDER_ENDPOINT")]
    pub provider_endpoint: Option<String>,

    /// The kubelet plugin registration socket the agent serves, so that kubelet registers the CSI driver without a
    /// node-driver-registrar sidecar: `<kubelet dir>/plugins_registry/<drivername>-reg.sock`. Empty: no
    /// registration (e.g. when only the provider socket serves an upstream driver).
    #[arg(
        long,
        env = "WISP_REGISTRATION_SOCKET",
        default_value = "/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock",
        value_parser = parse_path_or_empty
    )]
    pub registration_socket: PathBuf,

    /// The CSI socket's path as kubelet sees it on the node, reported at registration. Default: the path of
    /// `--endpoint` (the chart mounts it at its host path).
    #[arg(long, env = "WISP_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<PathBuf>,

    /// Write the Kubernetes Secrets of `spec.secretObjects` (the chart's `syncSecret.enabled`, which also grants
    /// the agent access to Secrets).
    #[arg(long, env = "WISP_SYNC_SECRETS", default_value = "true", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub sync_secrets: bool,
}

/// The provider's flags, the same in wisp-agent and wisp-sync (flattened into each program's flags).
#[derive(Debug, Clone, Args)]
pub struct ProviderFlags {
    /// Cloud used when a SecretProviderClass sets neither `cloudName` nor `cloudEnvFileName`.
    #[arg(long, env = "AZURE_ENVIRONMENT", default_value = "AzurePublicCloud")]
    pub cloud_name: String,

    /// Instance Metadata Service base URL for VM managed identity (the variable the Azure SDKs honour).
    #[arg(
        long,
        env = "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,

    /// Order the certificates of a PFX secret leaf → intermediate → root.
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub construct_pem_chain: bool,

    /// Also write `<alias>.crt` and `<alias>.key` for certificate-backed secrets.
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub write_cert_and_key_in_separate_files: bool,

    /// How many Key Vault requests one mount (in wisp-sync: one SecretSync) may have in flight.
    #[arg(long, env = "WISP_MAX_PARALLEL_FETCHES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_parallel_fetches: u16,
}

impl ProviderFlags {
    /// The provider's settings; `rotation_round` is how long a round of shared Key Vault reads lasts.
    pub fn config(&self, rotation_round: Duration) -> ProviderConfig {
        ProviderConfig {
            default_cloud: self.cloud_name.clone(),
            render: RenderOptions {
                construct_pem_chain: self.construct_pem_chain,
                write_cert_and_key_in_separate_files: self.write_cert_and_key_in_separate_files,
            },
            max_parallel: usize::from(self.max_parallel_fetches),
            rotation_round,
        }
    }
}

impl Cli {
    /// The unix socket path of `--endpoint`.
    pub fn socket_path(&self) -> Result<PathBuf, String> {
        parse_endpoint(&self.endpoint)
    }

    /// The unix socket path of `--provider-endpoint`, if set.
    pub fn provider_socket_path(&self) -> Result<Option<PathBuf>, String> {
        self.provider_endpoint
            .as_deref()
            .map(|endpoint| {
                parse_endpoint(endpoint).map_err(|_| {
                    format!(
                        "--provider-endpoint {endpoint:?} is not supported: use a unix socket, e.g. \
                         unix:///var/run/secrets-store-csi-providers/azure.sock"
                    )
                })
            })
            .transpose()
    }
}

/// `unix:///csi/csi.sock` → `/csi/csi.sock`. As upstream, `unix://tmp/csi.sock` means `/tmp/csi.sock` and the
/// scheme is case-insensitive.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf, String> {
    let lower = endpoint.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("unix://").map(|_| &endpoint["unix://".len()..]) {
        if rest.is_empty() {
            return Err(format!(
                "--endpoint {endpoint:?} has no socket path; use unix:///csi/csi.sock"
            ));
        }
        let path = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        return Ok(PathBuf::from(path));
    }
    Err(format!(
        "--endpoint {endpoint:?} is not supported: wisp-agent serves CSI on a unix socket only, e.g. unix:///csi/csi.sock"
    ))
}

/// A path where an empty value is meaningful (it switches the feature off).
fn parse_path_or_empty(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true or false")),
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers, each with an optional fraction and a unit (`ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `2m`, `1h30m`, `1.5h`. Negative durations are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration; write it as Go does, e.g. 30s, 2m or 1h30m");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * seconds_per_unit;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// `:8095` (Go's "all interfaces" form) or `host:port`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|e| format!("{s:?} is not a listen address ({e}); use :8095 or 127.0.0.1:8095"))
}

#[cfg(test)]
mod tests;
