//! How the end-to-end tests, `wisp-local` and `wisp-sync-bench` start the real `wisp-sync` against the fakes: its
//! poll interval, `/metrics` and `/healthz`+`/readyz` on loopback, the fakes' kubeconfig, CA and host names, and
//! nothing inherited from the caller's environment that would send it elsewhere (`RUST_LOG`, proxies).

use std::path::Path;

use crate::process::Program;

#[derive(Debug, Clone)]
pub struct SyncLaunch<'a> {
    pub binary: &'a Path,
    /// `--rotation-poll-interval`, as Go writes durations (`20s`, `2m`).
    pub interval: &'a str,
    /// The `SYNC_CONTROLLER_POD_NAME` the downward API would give (the leader election identity), if any.
    pub pod_name: Option<&'a str>,
    pub kubeconfig: &'a Path,
    /// The test CA, trusted through `SSL_CERT_FILE`.
    pub ca_file: &'a Path,
    /// Fake host names (Entra, vaults) to resolve to 127.0.0.1 in the controller's own mount namespace.
    pub loopback_names: Vec<String>,
    /// `--log-level`.
    pub log_level: &'a str,
    /// Loopback ports of `/metrics` and of `/healthz` and `/readyz` (one port may serve both).
    pub metrics_port: u16,
    pub health_port: u16,
}

impl SyncLaunch<'_> {
    /// The controller's program. Add flags with [`Program::args`], then [`Program::spawn`].
    pub fn program(&self) -> Program {
        let program = Program::from_path("wisp-sync", self.binary)
            .args([
                format!("--rotation-poll-interval={}", self.interval),
                format!("--metrics-addr=127.0.0.1:{}", self.metrics_port),
                format!("--health-addr=127.0.0.1:{}", self.health_port),
                format!("--log-level={}", self.log_level),
            ])
            .reaching_fakes(self.kubeconfig, self.ca_file, &self.loopback_names);
        match self.pod_name {
            Some(name) => program.env("SYNC_CONTROLLER_POD_NAME", name),
            None => program,
        }
    }
}
