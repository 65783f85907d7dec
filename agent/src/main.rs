use std::time::Duration;

use clap::Parser;

/// Tokio worker threads. The agent waits on kubelet, Key Vault and Entra; its CPU work per mount is well under a
/// millisecond per object, so two workers keep up with hundreds of concurrent mounts (BENCHMARKS.md `## Rotation`)
/// while one per core, tokio's default, would give a 64-core node 64 threads, each with its stack and malloc arena.
const WORKER_THREADS: usize = 2;
/// Threads for `spawn_blocking`: the volume writes and mounts, which take a millisecond or two, and DNS lookups.
/// Tokio's default is 512, and a burst of republishes grew 16–20 of them; calls beyond this many wait in a queue.
const MAX_BLOCKING_THREADS: usize = 4;
/// Idle blocking threads exit after this (tokio's default is 10 s).
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let cli = wisp_agent::cli::Cli::parse();
    wisp_shared::runtime::install_crypto_provider();
    wisp_shared::runtime::init_logging(&cli.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()?;
    runtime.block_on(wisp_agent::app::run(cli))?;
    Ok(())
}
