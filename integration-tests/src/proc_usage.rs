//! What `/proc` tells about a program under benchmark (wisp-agent, wisp-sync): its resident memory and threads
//! (`status`), its CPU time (`stat`), its open file descriptors (`fd/`), and their peaks over a run, sampled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A `/proc/<pid>` file that could not be read or did not hold what Linux writes there.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path} failed (has the process exited?)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {field}")]
    Field { path: String, field: String },
}

fn read(path: String) -> Result<String, ProcError> {
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// utime + stime of process `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let stat = read(path.clone())?;
    let missing = |field: String| ProcError::Field {
        path: path.clone(),
        field,
    };
    // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| missing("command name in parentheses".to_string()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64, ProcError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| missing(format!("field {n}")))
    };
    Ok(field(14)? + field(15)?)
}

/// `sysconf(_SC_CLK_TCK)`, from `getconf CLK_TCK` (100 on every Linux this runs on).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// VmRSS (with its anonymous and file-backed parts) and VmHWM in KiB, and the thread count.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub threads: u64,
}

pub fn memory(pid: u32) -> Result<Memory, ProcError> {
    let path = format!("/proc/{pid}/status");
    let status = read(path.clone())?;
    let field = |name: &str| -> Result<u64, ProcError> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| ProcError::Field {
                path: path.clone(),
                field: name.trim_end_matches(':').to_string(),
            })
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        file_kib: field("RssFile:")?,
        threads: field("Threads:")?,
    })
}

/// Open file descriptors of process `pid`: the entries of `/proc/<pid>/fd` (sockets, pipes, files, the epoll
/// instance; a leak of any kind shows here).
pub fn open_fds(pid: u32) -> Result<usize, ProcError> {
    let path = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&path).map_err(|source| ProcError::Read { path, source })?;
    Ok(entries.count())
}

/// Memory and open descriptors at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub memory: Memory,
    pub fds: usize,
}

pub fn usage(pid: u32) -> Result<Usage, ProcError> {
    Ok(Usage {
        memory: memory(pid)?,
        fds: open_fds(pid)?,
    })
}

/// The highest VmRSS and open descriptor count seen while a [`Sampler`] ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    pub rss_kib: u64,
    pub fds: usize,
    pub samples: u64,
}

/// Reads [`usage`] every `SAMPLE_EVERY` on a thread of its own (so a busy runtime cannot skip samples) until
/// stopped: the peaks of a phase, which VmHWM (a peak since the process started) cannot give.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peak>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(10);

impl Sampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut peak = Peak::default();
                loop {
                    // Sampled once more after the stop, so the phase's last moment counts.
                    let stopping = stop.load(Ordering::SeqCst);
                    if let Ok(now) = usage(pid) {
                        peak.rss_kib = peak.rss_kib.max(now.memory.rss_kib);
                        peak.fds = peak.fds.max(now.fds);
                        peak.samples += 1;
                    }
                    if stopping {
                        return peak;
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            }
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Peak {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
