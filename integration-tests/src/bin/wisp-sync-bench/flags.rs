//! The command line of `wisp-sync-bench`.

use clap::Parser;
use integration_tests::bench_binary::BinaryFlags;

#[derive(Debug, Parser)]
#[command(
    name = "wisp-sync-bench",
    about = "Measure wisp-sync's Key Vault requests, time and memory per rotation round against the local fakes"
)]
pub(crate) struct Cli {
    /// SecretSyncs, spread evenly over the namespaces and, in each, over its classes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub syncs: u32,

    /// Distinct secrets in the fake Key Vault; each namespace's classes read its own share of them.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub objects: u32,

    /// Namespaces, each with one ServiceAccount federated with the one workload identity.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub namespaces: u32,

    /// SecretProviderClasses in each namespace.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub classes_per_namespace: u32,

    /// Objects in each class, so in each SecretSync's Secret (one key each).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub objects_per_sync: u32,

    /// wisp-sync's `--rotation-poll-interval`, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub interval_secs: u64,

    /// Rounds without a value change measured after the round with one (the first still writes every status:
    /// its condition's reason changes).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub quiet_rounds: u32,

    /// Latency injected before every Entra and Key Vault response, in milliseconds (0: none).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub latency_ms: u64,

    /// An extra flag for wisp-sync (repeatable), e.g. `--sync-arg=--max-parallel-fetches=16`.
    #[arg(long = "sync-arg", allow_hyphen_values = true)]
    pub sync_args: Vec<String>,

    #[command(flatten)]
    pub binary: BinaryFlags,
}
