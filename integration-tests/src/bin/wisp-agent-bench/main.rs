//! `wisp-agent-bench`: mount latency and memory of the real `wisp-agent`, played as kubelet plays it, against the
//! local fakes of Kubernetes, Entra and Key Vault with latency injected at Entra and Key Vault.
//!
//! 1. Mount latency: NodePublishVolume wall time over the agent's unix socket for SecretProviderClasses of 1, 10
//!    and 50 secrets, with a cold token (every mount a service account the agent has never seen, so the token
//!    cache misses) and a warm one (the same service account every time). Each case runs once without injected
//!    latency and once with it; the difference of the medians divided by the injected latency is the number of
//!    sequential round trips a mount waits for. The requests each mount makes at the fakes are counted. Every
//!    mount is checked (one file per object) and unpublished before the next.
//! 2. Memory: VmRSS and VmHWM of the agent (`/proc/<pid>/status`) idle, with `--volumes` volumes published (10
//!    secrets each, distinct pods and target paths, 8 NodePublishVolume calls in flight as kubelet would for pods
//!    starting together), and after unpublishing them all.
//!
//! 3. Rotation (`--rotation`, instead of 1 and 2): the agent runs with `--rotation-poll-interval`; `--rotation-volumes`
//!    volumes of one SecretProviderClass (10 secrets, one service account) are published, a new version of every
//!    secret is added in the fake Key Vault, and once the interval has passed every volume is republished as
//!    kubelet does (`--rotation-parallel` calls in flight). Reported: the Key Vault and Entra requests of that
//!    round, its wall time, the agent's CPU time during it (utime + stime, `/proc/<pid>/stat`), its memory
//!    before and after, and that every volume shows the new bytes (`rotation_reconcile_total` from `/metrics`).
//!
//! 4. Burst (`--burst N`, instead of 1 and 2): N NodePublishVolume calls for distinct pods at once, each volume of
//!    `--burst-objects` secrets; each call's answer time against kubelet's 2-minute deadline, memory and open
//!    descriptors before, at their peak and after, and every volume's files checked byte for byte. The rotation
//!    run reports the same for its round.
//!
//! Everything it starts lives in a temporary directory and in the agent's own mount namespace (the agent runs
//! under `unshare --mount` for its hosts file): every volume is unpublished, the agent is stopped with SIGTERM,
//! and on any failure or Ctrl-C the agent is killed, which drops the namespace with any mount left in it.

mod burst;
mod flags;
mod harness;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Parser;
use integration_tests::bench_binary::bench_binary;
use integration_tests::bench_main::run_until_signal;
use integration_tests::proc_usage::{Usage, memory, usage};

use flags::Cli;
use harness::{Bench, PATIENCE, SIZES, WARM_SA, tail};
use report::{Case, print_burst_report, print_report, print_rotation_report, print_settled};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    wisp_shared::runtime::install_crypto_provider();
    // On a signal `run` is dropped, which kills the agent (and with it its mount namespace) and removes the work
    // directory.
    run_until_signal("the agent", run(&cli)).await
}

async fn run(cli: &Cli) -> Result<()> {
    let binary = bench_binary("wisp-agent", "wisp-agent", &cli.binary)?;
    let latency = Duration::from_millis(cli.latency_ms);
    let mut bench = Bench::start(cli, &binary).await?;
    let pid = bench.agent.pid();
    let started_memory = memory(pid)?;

    if cli.rotation {
        bench.set_latency(latency);
        let report = bench.rotation_run(cli).await?;
        let settled = settle(cli, pid).await?;
        stop_agent(&mut bench).await?;
        print_rotation_report(cli, &bench, latency, started_memory, &report);
        print_settled(cli, settled);
        return Ok(());
    }
    if cli.burst > 0 {
        bench.set_latency(latency);
        let mut reports = Vec::new();
        for round in 1..=cli.burst_rounds {
            reports.push(bench.burst_run(cli.burst as usize, cli.burst_objects as usize).await?);
            eprintln!("burst {round} of {} done", cli.burst_rounds);
        }
        let settled = settle(cli, pid).await?;
        stop_agent(&mut bench).await?;
        print_burst_report(cli, &bench, latency, &reports);
        print_settled(cli, settled);
        return Ok(());
    }

    // The first mount of the process pays for TLS connections and the SecretProviderClass cache; the rest reuse
    // them. Measured once, reported apart.
    bench.set_latency(latency);
    let first_sa = bench.new_service_account("first");
    let first = bench.mount_once(10, &first_sa).await?;

    bench.federate(WARM_SA);
    let mut cases = Vec::new();
    for objects in SIZES {
        for token in ["cold", "warm"] {
            let mut case = Case {
                token,
                objects,
                base: Vec::new(),
                delayed: Vec::new(),
            };
            for with_latency in [false, true] {
                bench.set_latency(if with_latency { latency } else { Duration::ZERO });
                if token == "warm" {
                    // Fills the token cache (a no-op after the first case).
                    bench.mount_once(objects, WARM_SA).await?;
                }
                for _ in 0..cli.iterations {
                    let service_account = match token {
                        "cold" => bench.new_service_account("cold"),
                        _ => WARM_SA.to_string(),
                    };
                    let sample = bench.mount_once(objects, &service_account).await?;
                    if with_latency {
                        case.delayed.push(sample);
                    } else {
                        case.base.push(sample);
                    }
                }
            }
            eprintln!("measured {token} token, {objects} objects");
            cases.push(case);
        }
    }
    let after_latency_runs = memory(pid)?;

    bench.set_latency(latency);
    let memory_report = match cli.volumes {
        0 => None,
        n => Some(bench.memory_run(n as usize).await?),
    };

    stop_agent(&mut bench).await?;
    print_report(
        cli,
        &bench,
        latency,
        &first,
        &cases,
        started_memory,
        after_latency_runs,
        memory_report.as_ref(),
    );
    Ok(())
}

/// SIGTERM, and a clean exit expected.
async fn stop_agent(bench: &mut Bench) -> Result<()> {
    let status = bench.agent.terminate(PATIENCE).await;
    ensure!(
        status.is_some_and(|s| s.success()),
        "wisp-agent did not stop cleanly on SIGTERM ({status:?})\n{}",
        tail(&bench.agent)
    );
    Ok(())
}

/// The agent's usage after `--settle-secs` idle, if asked for.
async fn settle(cli: &Cli, pid: u32) -> Result<Option<Usage>> {
    if cli.settle_secs == 0 {
        return Ok(None);
    }
    eprintln!("idle for {} s", cli.settle_secs);
    tokio::time::sleep(Duration::from_secs(cli.settle_secs)).await;
    Ok(Some(usage(pid)?))
}
