//! Command-line flags (each also settable through an environment variable), parsed once in `main`. Durations,
//! booleans and listen addresses are read as the agent reads them (Go's forms).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser};
use wisp_agent::cli::{ProviderFlags, parse_go_bool, parse_go_duration, parse_listen_addr};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "wisp-sync",
    version,
    about = "SecretSync controller: Kubernetes Secrets from Azure Key Vault, no pod mounting a volume"
)]
pub struct Cli {
    /// How often every SecretSync is synced again, as Go writes durations (`30s`, `2m`, `1h30m`). A change of a
    /// SecretSync's spec (`forceSynchronization` included) or of its class syncs it at once.
    #[arg(long, env = "WISP_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = parse_go_duration)]
    pub rotation_poll_interval: Duration,

    /// This controller's name: a SecretSync whose `spec.secretSyncControllerName` is set to another name is left
    /// to that controller; an empty one is served by any.
    #[arg(long, env = "WISP_CONTROLLER_NAME", default_value = "wisp-sync")]
    pub controller_name: String,

    /// Address of the Prometheus `/metrics` endpoint (Go's `:8080` form accepted).
    #[arg(long, env = "WISP_METRICS_ADDR", default_value = ":8080", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub provider: ProviderFlags,

    /// Address of the `/healthz` and `/readyz` endpoints.
    #[arg(long, env = "WISP_HEALTH_ADDR", default_value = ":8081", value_parser = parse_listen_addr)]
    pub health_addr: SocketAddr,

    /// This pod's name (downward API), passed to the provider as a mount's pod name, as upstream does.
    #[arg(long, env = "SYNC_CONTROLLER_POD_NAME", default_value = "")]
    pub pod_name: String,

    /// This pod's uid (downward API).
    #[arg(long, env = "SYNC_CONTROLLER_POD_UID", default_value = "")]
    pub pod_uid: String,

    /// Run only while holding a `coordination.k8s.io` Lease, so that of several replicas one is active.
    #[arg(long, env = "WISP_LEADER_ELECT", default_value = "false", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub leader_elect: bool,

    /// The Lease's name.
    #[arg(long, env = "WISP_LEADER_ELECTION_ID", default_value = "wisp-sync-leader")]
    pub leader_election_id: String,

    /// The Lease's namespace (the chart passes the release's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// How long a Lease its holder stopped renewing stays held: at most this long without an active replica after
    /// a crash. The holder renews it in the last third.
    #[arg(long, env = "WISP_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_go_duration)]
    pub leader_election_lease_duration: Duration,

    /// Log filter (`info`, `debug`, `wisp_sync=trace`).
    #[arg(long, env = "WISP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn defaults_and_go_forms() {
        let cli = Cli::try_parse_from(["wisp-sync"]).unwrap();
        assert_eq!(cli.rotation_poll_interval, Duration::from_secs(120));
        assert_eq!(cli.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cli.controller_name, "wisp-sync");
        let cli =
            Cli::try_parse_from(["wisp-sync", "--rotation-poll-interval=1h30m", "--construct-pem-chain=F"]).unwrap();
        assert_eq!(cli.rotation_poll_interval, Duration::from_secs(5400));
        assert!(!cli.provider.construct_pem_chain);
        let error = Cli::try_parse_from(["wisp-sync", "--rotation-poll-interval=2 minutes"]).unwrap_err();
        assert!(error.to_string().contains("write it as Go does"), "{error}");
    }
}
