//! `wisp-local`: the whole wisp stack on loopback, with no cluster and no Azure.
//!
//! Starts the fake Kubernetes API, fake Entra (with IMDS) and fake Key Vault, then the real `wisp-webhook` and
//! `wisp-agent` binaries, seeds the documented workload identity scenario, admits its pod through the webhook
//! and plays kubelet (projected token, CSI NodePublishVolume), printing what the pod would see in
//! `/mnt/secrets-store`. It repeats the mount for a user-assigned managed identity (through the fake IMDS) and
//! for a Service Connector style class (the add-on identity), then runs `wisp-sync` and shows one SecretSync
//! producing a Secret with no pod. `--keep-running` leaves everything up.
//!
//! The programs reach the fakes as they would reach a private cloud: the test CA through `SSL_CERT_FILE`, the
//! fake host names through a hosts file in the agent's own mount namespace, the cloud's endpoints through a
//! cloud environment file (`AzureStackCloud`), the API server through a kubeconfig.

mod scenario;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::Notify;

#[derive(Debug, Parser)]
#[command(
    name = "wisp-local",
    about = "Run wisp's webhook, agent and SecretSync controller against local fakes of Kubernetes, Entra and Key Vault"
)]
struct Cli {
    /// After the scenario, keep every server running and print how to reach them; Ctrl-C stops them.
    #[arg(long)]
    keep_running: bool,

    /// How the agent writes volumes: `auto` (a tmpfs when this machine permits mounts, else a directory),
    /// `tmpfs` or `directory`.
    #[arg(long, value_enum, default_value = "auto")]
    mount_mode: scenario::MountChoice,

    /// Directory holding `wisp-webhook`, `wisp-agent` and `wisp-sync` (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,

    /// When started by `cargo run`, do not build `wisp-webhook`, `wisp-agent` and `wisp-sync` first.
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    wisp_shared::runtime::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("FAILED: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = scenario::Options {
        keep_running: cli.keep_running,
        no_build: cli.no_build,
        mount: cli.mount_mode,
        bin_dir: cli.bin_dir,
    };
    let interrupt = Arc::new(Notify::new());
    let notifier = interrupt.clone();
    // Installed before anything starts, so a Ctrl-C at any point leads to an orderly stop rather than the
    // default exit, which would leave the child processes (in their own process groups) running.
    runtime.spawn(async move {
        loop {
            wisp_shared::runtime::shutdown_signal().await;
            notifier.notify_one();
        }
    });
    match runtime.block_on(scenario::run(options, interrupt)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
