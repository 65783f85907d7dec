//! The phases of a run, each watched from its start until done: the first syncs of every SecretSync, then
//! periodic rounds (one with a new version of every secret, the others without). While a phase runs, the fakes'
//! request counts and the controller's `rotation_reconcile_total` are read every [`TICK`]; its wall time, its
//! requests and the controller's CPU time and memory come from those readings and from `/proc`.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use integration_tests::proc_usage::{Memory, Peak, Sampler, clock_ticks_per_second, cpu_ticks, memory};

use crate::harness::{Bench, Counts, tail};

/// How often a phase is read: the resolution of its wall time.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// What the fakes and the controller had done at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    pub at: Instant,
    pub synced: u64,
    pub failed: u64,
    pub counts: Counts,
}

/// One phase, read from its start to the moment it was done.
pub(crate) struct Phase {
    pub name: &'static str,
    pub points: Vec<Point>,
    pub cpu_ms: f64,
    /// Highest VmRSS (and open descriptors) during the phase, sampled every 10 ms.
    pub peak: Peak,
    /// At its end.
    pub memory: Memory,
    /// SecretSyncs whose Secret held exactly the expected bytes at the end.
    pub checked: usize,
}

impl Phase {
    fn first(&self) -> &Point {
        &self.points[0]
    }

    fn last(&self) -> &Point {
        &self.points[self.points.len() - 1]
    }

    pub(crate) fn counts(&self) -> Counts {
        self.last().counts - self.first().counts
    }

    pub(crate) fn syncs(&self) -> u64 {
        self.last().synced - self.first().synced
    }

    pub(crate) fn failures(&self) -> u64 {
        self.last().failed - self.first().failed
    }

    /// From the phase's start to the first reading showing a sync or a write.
    pub(crate) fn first_activity(&self) -> Option<Duration> {
        let start = self.first();
        self.points.iter().find(|p| busier(p, start)).map(|p| p.at - start.at)
    }

    /// From the phase's start to the first reading with every sync and write the phase made.
    pub(crate) fn last_activity(&self) -> Option<Duration> {
        let (start, end) = (self.first(), self.last());
        self.points
            .iter()
            .find(|p| !busier(end, p))
            .filter(|p| busier(p, start))
            .map(|p| p.at - start.at)
    }

    /// From the first to the last sync or write of the phase, to [`TICK`].
    pub(crate) fn wall(&self) -> Duration {
        match (self.first_activity(), self.last_activity()) {
            (Some(first), Some(last)) => last.saturating_sub(first),
            _ => Duration::ZERO,
        }
    }

    /// From the phase's start to the first reading at which `reached` held.
    pub(crate) fn time_until(&self, reached: impl Fn(&Point) -> bool) -> Option<Duration> {
        let start = self.first();
        self.points.iter().find(|p| reached(p)).map(|p| p.at - start.at)
    }
}

/// Whether `a` shows more syncs or writes than `b`.
fn busier(a: &Point, b: &Point) -> bool {
    a.synced + a.failed > b.synced + b.failed
        || a.counts.secret_writes > b.counts.secret_writes
        || a.counts.status_writes > b.counts.status_writes
}

impl Bench {
    async fn point(&self) -> Result<Point> {
        let (synced, failed) = self.reconciles().await?;
        Ok(Point {
            at: Instant::now(),
            synced,
            failed,
            counts: self.counts(),
        })
    }

    /// Runs `begin` (e.g. creating the SecretSyncs), then reads the phase every [`TICK`] until `done(start,
    /// now)`; fails after `timeout` or if the controller exits. `generation` is the secrets' version every Secret
    /// must hold at the end.
    pub(crate) async fn phase(
        &mut self,
        name: &'static str,
        timeout: Duration,
        generation: u32,
        begin: impl FnOnce(&Bench) -> Result<()>,
        done: impl Fn(&Bench, &Point, &Point) -> bool,
    ) -> Result<Phase> {
        let pid = self.sync.pid();
        let cpu_before = cpu_ticks(pid)?;
        let sampler = Sampler::start(pid);
        let start = self.point().await?;
        begin(self)?;
        let mut points = vec![start];
        let deadline = start.at + timeout;
        loop {
            tokio::time::sleep(TICK).await;
            if let Some(status) = self.sync.try_wait() {
                sampler.stop();
                return Err(anyhow!(
                    "wisp-sync exited during {name} ({status})\n{}",
                    tail(&self.sync)
                ));
            }
            let now = self.point().await?;
            points.push(now);
            if done(self, &start, &now) {
                break;
            }
            if now.at >= deadline {
                sampler.stop();
                let seen = now.counts - start.counts;
                return Err(anyhow!(
                    "{name} not done after {timeout:?}: {} syncs, {} failed, {} of {} Secrets hold version \
                     {generation}, {seen:?}\n{}",
                    now.synced - start.synced,
                    now.failed - start.failed,
                    self.secrets_holding(generation),
                    self.layout.syncs.len(),
                    tail(&self.sync)
                ));
            }
        }
        let peak = sampler.stop();
        let cpu_after = cpu_ticks(pid)?;
        Ok(Phase {
            name,
            points,
            cpu_ms: cpu_after.saturating_sub(cpu_before) as f64 * 1000.0 / clock_ticks_per_second() as f64,
            peak,
            memory: memory(pid)?,
            checked: self.secrets_holding(generation),
        })
    }

    /// Creates every SecretSync and waits until each Secret holds the seeded bytes and each status is written.
    pub(crate) async fn first_syncs(&mut self, timeout: Duration) -> Result<Phase> {
        let n = self.layout.syncs.len() as u64;
        self.phase(
            "first syncs",
            timeout,
            0,
            |bench| {
                bench.create_syncs();
                Ok(())
            },
            move |bench, start, now| {
                now.synced - start.synced >= n
                    && (now.counts - start.counts).status_writes >= n
                    && bench.secrets_holding(0) == n as usize
            },
        )
        .await
    }

    /// Waits for the next periodic round: every SecretSync synced once more, and every Secret holding version
    /// `generation`. With `rotate`, that version of every secret is added in Key Vault first.
    pub(crate) async fn round(
        &mut self,
        name: &'static str,
        timeout: Duration,
        generation: u32,
        rotate: bool,
    ) -> Result<Phase> {
        let n = self.layout.syncs.len() as u64;
        self.phase(
            name,
            timeout,
            generation,
            |bench| if rotate { bench.rotate_all(generation) } else { Ok(()) },
            move |bench, start, now| {
                now.synced - start.synced >= n && (!rotate || bench.secrets_holding(generation) == n as usize)
            },
        )
        .await
    }
}
