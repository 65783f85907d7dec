//! The tables and lines `wisp-sync-bench` prints (Markdown, as BENCHMARKS.md records them).

use std::time::Duration;

use integration_tests::bench_report::{cpus, mib, print_memory_table};
use integration_tests::proc_usage::Memory;

use crate::flags::Cli;
use crate::harness::Bench;
use crate::layout::SECRET_BYTES;
use crate::rounds::{Phase, TICK};

/// RSS budget of issue 8.
const RSS_TARGET_KIB: u64 = 40 * 1024;

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn secs_or_dash(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "–".to_string())
}

pub(crate) fn print_report(cli: &Cli, bench: &Bench, started: Memory, first: &Phase, rounds: &[Phase], end: Memory) {
    let layout = &bench.layout;
    let n = layout.syncs.len();
    let expected_reads = layout.reads_per_round();
    println!();
    println!(
        "wisp-sync benchmark: {n} SecretSyncs in {} namespaces (one ServiceAccount each, one workload identity), {} \
         SecretProviderClasses of {} secrets, {} secrets of {SECRET_BYTES} bytes read, --rotation-poll-interval={}s, \
         {}ms injected at Entra and Key Vault, {} CPUs",
        layout.namespaces.len(),
        layout.classes.len(),
        cli.objects_per_sync,
        layout.objects_read(),
        cli.interval_secs,
        cli.latency_ms,
        cpus()
    );
    if !cli.sync_args.is_empty() {
        println!("wisp-sync flags: {}", cli.sync_args.join(" "));
    }
    let counts = first.counts();
    let all_exist = first.time_until(|p| (p.counts - first.points[0].counts).secret_writes >= n as u64);
    println!(
        "first syncs: all {n} Secrets written {} s after the SecretSyncs were created (first write at {} s), every \
         status at {} s; {} Key Vault requests (expected {}: a first sync reads afresh), {} Entra, {} kube \
         requests ({} Secret writes, {} status writes), {} failed syncs; controller CPU {:.0} ms; {} of {n} Secrets \
         checked byte for byte",
        secs_or_dash(all_exist),
        secs_or_dash(first.first_activity()),
        secs_or_dash(first.last_activity()),
        counts.requests.key_vault,
        layout.first_sync_reads(),
        counts.requests.entra,
        counts.requests.kube,
        counts.secret_writes,
        counts.status_writes,
        first.failures(),
        first.cpu_ms,
        first.checked,
    );
    if first.syncs() > n as u64 {
        println!(
            "  the first syncs took longer than the interval: {} periodic syncs of the SecretSyncs synced first ran \
             before the last first sync, and their reads and status writes count here",
            first.syncs() - n as u64
        );
    }
    println!();
    println!(
        "| round | syncs (failed) | Key Vault req | Entra req | Secret writes | status writes | kube req | starts after \
         | wall, first to last sync | controller CPU | CPU / sync | VmRSS at end | peak VmRSS | Secrets checked |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for round in rounds {
        let r = round.counts();
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} s | {} s | {:.0} ms | {:.1} ms | {} | {} | {} of {n} |",
            round.name,
            round.syncs(),
            round.failures(),
            r.requests.key_vault,
            r.requests.entra,
            r.secret_writes,
            r.status_writes,
            r.requests.kube,
            secs_or_dash(round.first_activity()),
            secs(round.wall()),
            round.cpu_ms,
            round.cpu_ms / round.syncs().max(1) as f64,
            mib(round.memory.rss_kib),
            mib(round.peak.rss_kib),
            round.checked,
        );
    }
    println!(
        "expected per round: {expected_reads} Key Vault requests (one per object and identity), 0 Entra requests \
         (tokens cached); times to {} ms; CPU over the whole phase (the wait for the round included)",
        TICK.as_millis()
    );
    let interval = Duration::from_secs(cli.interval_secs);
    for round in rounds.iter().filter(|r| r.wall() > interval) {
        println!(
            "  {}: the round took {} s, longer than the {} s interval: the SecretSyncs synced early in it are due \
             again before it ends, and a round of shared Key Vault reads is one interval of due times, so this \
             phase holds more than one round of syncs and reads",
            round.name,
            secs(round.wall()),
            cli.interval_secs
        );
    }
    println!();
    let mut rows = vec![
        ("started, idle (caches listed)", &started),
        ("after the first syncs", &first.memory),
    ];
    for round in rounds {
        rows.push((round.name, &round.memory));
    }
    rows.push(("at the end", &end));
    print_memory_table("wisp-sync", &rows);
    let peak = rounds
        .iter()
        .map(|r| r.peak.rss_kib)
        .chain([first.peak.rss_kib])
        .max()
        .unwrap_or(0);
    println!(
        "peak VmRSS sampled every 10 ms: {} MiB; {} samples in the first syncs",
        mib(peak),
        first.peak.samples
    );

    println!();
    println!("Targets (issue 8):");
    for round in rounds {
        let reads = round.counts().requests.key_vault;
        println!(
            "  {}: {reads} Key Vault requests (target {expected_reads}): {}",
            round.name,
            if reads == expected_reads as u64 {
                "MET"
            } else {
                "MISSED"
            }
        );
    }
    println!(
        "  controller RSS < 40 MiB (VmHWM, the peak since it started): {} MiB: {}",
        mib(end.hwm_kib),
        if end.hwm_kib < RSS_TARGET_KIB { "MET" } else { "MISSED" }
    );
    let rotated = rounds.iter().all(|r| r.checked == n);
    println!(
        "  every Secret holds exactly its objects' bytes after each round: {}",
        if rotated && first.checked == n { "yes" } else { "NO" }
    );
}
