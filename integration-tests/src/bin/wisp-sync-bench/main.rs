//! `wisp-sync-bench`: Key Vault requests, time and memory per rotation round of the real `wisp-sync` serving many
//! SecretSyncs, against the local fakes of Kubernetes, Entra and Key Vault with latency injected at Entra and Key
//! Vault (issue 8: 1,000 SecretSyncs over 50 distinct objects; target 50 Key Vault requests per round and a
//! controller under 40 MiB).
//!
//! The fakes are seeded with the [`layout`]: `--objects` secrets, `--namespaces` namespaces of one ServiceAccount
//! each (federated with one workload identity), `--classes-per-namespace` SecretProviderClasses each. wisp-sync
//! starts with `--rotation-poll-interval` `--interval-secs`; once it is ready, `--syncs` SecretSyncs are created
//! at once. Then, each phase read every 100 ms until done:
//!
//! 1. First syncs: until every Secret holds its objects' bytes and every status is written.
//! 2. A periodic round without a value change (the status of each still changes: `Update` joins `Create`).
//! 3. A periodic round after a new version of every secret: until every Secret holds the new bytes.
//! 4. `--quiet-rounds` rounds without a change (the first still writes the statuses: the reason changes back).
//!
//! Each phase reports the requests the fakes saw (Key Vault, Entra, the API server's Secret and status writes),
//! the syncs `rotation_reconcile_total` counted, the wall time from its first to its last sync or write, the
//! controller's CPU time (`/proc/<pid>/stat`) and memory (`/proc/<pid>/status`, sampled every 10 ms for the
//! peak); every Secret is compared byte for byte with the expected version after each.
//!
//! Everything it starts lives in a temporary directory; wisp-sync is stopped with SIGTERM, and killed on any
//! failure or Ctrl-C.

mod flags;
mod harness;
mod layout;
mod report;
mod rounds;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Parser;
use integration_tests::bench_binary::bench_binary;
use integration_tests::bench_main::run_until_signal;
use integration_tests::proc_usage::memory;

use flags::Cli;
use harness::{Bench, PATIENCE, tail};
use layout::Layout;
use report::print_report;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    wisp_shared::runtime::install_crypto_provider();
    // On a signal `run` is dropped, which kills wisp-sync and removes the work directory.
    run_until_signal("wisp-sync", run(&cli)).await
}

async fn run(cli: &Cli) -> Result<()> {
    let layout = Layout::new(cli)?;
    let binary = bench_binary("wisp-sync", "wisp-sync", &cli.binary)?;
    let mut bench = Bench::start(cli, &binary, layout).await?;
    let started = memory(bench.sync.pid())?;
    let interval = Duration::from_secs(cli.interval_secs);
    // Generous: a round waits up to one interval, then takes as long as the controller needs on a busy machine.
    let patience = interval * 3 + Duration::from_secs(180);

    eprintln!("creating {} SecretSyncs", bench.layout.syncs.len());
    let first = bench.first_syncs(patience).await?;
    eprintln!(
        "first syncs done; waiting for the rounds ({} s apart)",
        cli.interval_secs
    );
    let mut rounds = vec![
        bench
            .round("no change, after the first syncs", patience, 0, false)
            .await?,
    ];
    eprintln!("rotating every secret");
    rounds.push(bench.round("new version of every secret", patience, 1, true).await?);
    for i in 0..cli.quiet_rounds {
        let name = if i == 0 { "no change" } else { "no change, again" };
        rounds.push(bench.round(name, patience, 1, false).await?);
        eprintln!("quiet round {} of {} done", i + 1, cli.quiet_rounds);
    }
    let end = memory(bench.sync.pid())?;

    let status = bench.sync.terminate(PATIENCE).await;
    ensure!(
        status.is_some_and(|s| s.success()),
        "wisp-sync did not stop cleanly on SIGTERM ({status:?})\n{}",
        tail(&bench.sync)
    );
    print_report(cli, &bench, started, &first, &rounds, end);
    Ok(())
}
