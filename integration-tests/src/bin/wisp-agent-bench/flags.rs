//! The command line of `wisp-agent-bench`.

use clap::Parser;
use integration_tests::bench_binary::BinaryFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MountChoice {
    Auto,
    Tmpfs,
    Directory,
}

#[derive(Debug, Parser)]
#[command(
    name = "wisp-agent-bench",
    about = "Measure wisp-agent's NodePublishVolume latency and memory against the local fakes"
)]
pub(crate) struct Cli {
    /// Timed mounts per case (objects × cold/warm × with/without latency).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub iterations: u32,

    /// Volumes published at once for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub volumes: u32,

    /// Latency injected before every Entra and Key Vault response, in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub latency_ms: u64,

    /// How the agent writes volumes: `auto` (a tmpfs when this machine permits mounts, else a directory),
    /// `tmpfs` or `directory`.
    #[arg(long, value_enum, default_value = "auto")]
    pub mount_mode: MountChoice,

    /// Run the rotation benchmark instead of the latency and memory runs: publish `--rotation-volumes` volumes,
    /// add a new version of every secret, wait `--rotation-interval-secs`, republish them all and count.
    #[arg(long)]
    pub rotation: bool,

    /// Volumes republished in the rotation round.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub rotation_volumes: u32,

    /// Run the burst benchmark instead of the latency and memory runs: this many NodePublishVolume calls for
    /// distinct pods (and service accounts) at once (0: off).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=2000))]
    pub burst: u32,

    /// Bursts in a row (new pods each time): memory and descriptors that do not grow from one to the next are
    /// bounded, not leaked.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub burst_rounds: u32,

    /// After the burst or rotation run, wait this long with nothing mounted and read the agent's RSS and open
    /// descriptors once more: idle pooled connections close after 90 s (the agent's pool idle timeout).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle_secs: u64,

    /// Secrets in each volume of the burst run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub burst_objects: u32,

    /// The agent's `--rotation-poll-interval` in the rotation run, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub rotation_interval_secs: u64,

    /// NodePublishVolume calls in flight in the rotation run (publish and republish); kubelet's pod workers
    /// republish every pod's volumes independently, so up to one per pod.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub rotation_parallel: u32,

    /// An extra flag for wisp-agent (repeatable), e.g. `--agent-arg=--max-parallel-fetches=16`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,

    #[command(flatten)]
    pub binary: BinaryFlags,
}
