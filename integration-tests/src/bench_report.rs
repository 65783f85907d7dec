//! What the benchmark programs (`wisp-agent-bench`, `wisp-sync-bench`) print alike: memory in MiB and the table of
//! a program's memory at named moments.

use crate::proc_usage::Memory;

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `program`'s memory at the moments named, one row each (a Markdown table, as BENCHMARKS.md records it).
pub fn print_memory_table(program: &str, rows: &[(&str, &Memory)]) {
    println!("{program} memory (/proc/<pid>/status, MiB)");
    println!("| when | VmRSS | VmHWM | RssAnon | RssFile | threads |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (when, m) in rows {
        println!(
            "| {when} | {} | {} | {} | {} | {} |",
            mib(m.rss_kib),
            mib(m.hwm_kib),
            mib(m.anon_kib),
            mib(m.file_kib),
            m.threads
        );
    }
}

/// The CPUs this process may run on (0 if unknown), for a report's first line.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}
