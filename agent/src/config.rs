//! Command-line flags (each also settable through an environment variable), parsed once in `main`.
//!
//! Boolean flags take Go's `flag` forms too (`--construct-pem-chain=false`, `=1`, `=T`): the upstream charts
//! pass them that way and wisp must accept the same DaemonSet arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};
use wisp_shared::contract::secrets_store::DRIVER_NAME;

/// How a volume's files reach the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MountMode {
    /// Mount a tmpfs at the target path (as the upstream driver does); needs CAP_SYS_ADMIN.
    Tmpfs,
    /// Write into the plain target directory. For unprivileged test runs only: the files then live on the
    /// node's disk instead of in memory.
    Directory,
}

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

    /// How many Key Vault requests one mount may have in flight.
    #[arg(long, env = "WISP_MAX_PARALLEL_FETCHES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_parallel_fetches: u16,

    /// Also serve the Secrets Store CSI driver's provider protocol here, for an existing upstream driver install:
    /// `unix:///var/run/secrets-store-csi-providers/azure.sock`, where the driver looks for the `azure` provider.
    /// Off when unset.
    #[arg(long, env = "WISP_PROVIDER_ENDPOINT")]
    pub provider_endpoint: Option<String>,
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

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true or false")),
    }
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
