//! Command-line flags (each also settable through an environment variable), parsed once in `main`.
//!
//! Boolean flags take Go's `flag` forms too (`--construct-pem-chain=false`, `=1`, `=T`): the upstream charts
//! pass them that way and wisp must accept the same DaemonSet arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::volume::mount::MountMode;
use clap::{ArgAction, Parser};
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

    /// CSI driver name (the CSIDriver object's name).
    #[arg(long, env = "WISP_DRIVER_NAME", default_value = DRIVER_NAME)]
    pub drivername: String,

    /// Cloud used when a SecretProviderClass sets neither `cloudName` nor `cloudEnvFileName`.
    #[arg(long, env = "AZURE_ENVIRONMENT", default_value = "AzurePublicCloud")]
    pub cloud_name: String,

    /// Order the certificates of a PFX secret leaf → intermediate → root.
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub construct_pem_chain: bool,

    /// Also write `<alias>.crt` and `<alias>.key` for certificate-backed secrets.
    #[arg(long, default_value = "false", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub write_cert_and_key_in_separate_files: bool,

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

    /// Instance Metadata Service base URL for VM managed identity (the variable the Azure SDKs honour).
    #[arg(
        long,
        env = "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,

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

    /// How many Key Vault requests one mount may have in flight.
    #[arg(long, env = "WISP_MAX_PARALLEL_FETCHES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_parallel_fetches: u16,

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
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_go_writes_them() {
        let cases = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("+10s", Duration::from_secs(10)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "2", "-1m", "1d", "m", "1..5s", "2 m"] {
            assert_eq!(
                parse_go_duration(bad),
                Err(format!(
                    "{bad:?} is not a duration; write it as Go does, e.g. 30s, 2m or 1h30m"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn registration_and_state_can_be_switched_off_with_an_empty_value() {
        let cli = parse(&[]).unwrap();
        assert_eq!(
            cli.registration_socket,
            PathBuf::from("/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock")
        );
        assert_eq!(cli.state_dir, PathBuf::from("/run/wisp-agent"));
        let cli = parse(&["--registration-socket=", "--state-dir="]).unwrap();
        assert_eq!(cli.registration_socket, PathBuf::new());
        assert_eq!(cli.state_dir, PathBuf::new());
    }

    #[test]
    fn rotation_flags_take_upstreams_forms() {
        let cli = parse(&[]).unwrap();
        assert!(cli.enable_secret_rotation);
        assert_eq!(cli.rotation_poll_interval, Duration::from_secs(120));
        let cli = parse(&["--enable-secret-rotation=false", "--rotation-poll-interval=30s"]).unwrap();
        assert!(!cli.enable_secret_rotation);
        assert_eq!(cli.rotation_poll_interval, Duration::from_secs(30));
        assert!(parse(&["--rotation-poll-interval", "soon"]).is_err());
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut all = vec!["wisp-agent", "--nodeid", "node-1"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)
    }

    #[test]
    fn defaults_match_upstream() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.socket_path().unwrap(), PathBuf::from("/csi/csi.sock"));
        assert_eq!(cli.drivername, "secrets-store.csi.k8s.io");
        assert_eq!(cli.cloud_name, "AzurePublicCloud");
        assert!(cli.construct_pem_chain);
        assert!(!cli.write_cert_and_key_in_separate_files);
        assert_eq!(cli.mount_mode, MountMode::Tmpfs);
        assert_eq!(cli.metrics_addr, "0.0.0.0:8095".parse::<SocketAddr>().unwrap());
        assert_eq!(cli.health_addr, "0.0.0.0:9808".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn boolean_flags_accept_go_forms() {
        let cli = parse(&[
            "--construct-pem-chain=false",
            "--write-cert-and-key-in-separate-files=T",
        ])
        .unwrap();
        assert!(!cli.construct_pem_chain);
        assert!(cli.write_cert_and_key_in_separate_files);
        let cli = parse(&["--write-cert-and-key-in-separate-files", "--construct-pem-chain=0"]).unwrap();
        assert!(cli.write_cert_and_key_in_separate_files);
        assert!(!cli.construct_pem_chain);
        let err = parse(&["--construct-pem-chain=yes"]).unwrap_err().to_string();
        assert!(err.contains("\"yes\" is not a boolean; use true or false"), "{err}");
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            parse_endpoint("unix://tmp/csi.sock").unwrap(),
            PathBuf::from("/tmp/csi.sock")
        );
        assert_eq!(
            parse_endpoint("UNIX:///run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:10000").unwrap_err(),
            "--endpoint \"tcp://127.0.0.1:10000\" is not supported: wisp-agent serves CSI on a unix socket only, e.g. unix:///csi/csi.sock"
        );
        assert_eq!(
            parse_endpoint("unix://").unwrap_err(),
            "--endpoint \"unix://\" has no socket path; use unix:///csi/csi.sock"
        );
    }

    #[test]
    fn provider_endpoint_is_off_by_default_and_a_unix_socket() {
        assert_eq!(parse(&[]).unwrap().provider_socket_path(), Ok(None));
        let cli = parse(&[
            "--provider-endpoint",
            "unix:///var/run/secrets-store-csi-providers/azure.sock",
        ])
        .unwrap();
        assert_eq!(
            cli.provider_socket_path(),
            Ok(Some(PathBuf::from("/var/run/secrets-store-csi-providers/azure.sock")))
        );
        let cli = parse(&["--provider-endpoint=tcp://127.0.0.1:1"]).unwrap();
        assert_eq!(
            cli.provider_socket_path().unwrap_err(),
            "--provider-endpoint \"tcp://127.0.0.1:1\" is not supported: use a unix socket, e.g. \
             unix:///var/run/secrets-store-csi-providers/azure.sock"
        );
    }

    #[test]
    fn mount_mode_and_addresses() {
        let cli = parse(&["--mount-mode", "directory", "--metrics-addr", "127.0.0.1:0"]).unwrap();
        assert_eq!(cli.mount_mode, MountMode::Directory);
        assert_eq!(cli.metrics_addr, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert!(parse(&["--health-addr", "nonsense"]).is_err());
    }
}
