//! The burst run (`--burst N`): N pods of N distinct service accounts start on the node at once, so kubelet sends
//! all their NodePublishVolume calls together; each volume holds `--burst-objects` secrets. Measured: how long
//! each call took to answer (against kubelet's deadline), the agent's memory and open descriptors before, at
//! their peak and after; checked: every volume shows exactly its files, and none is left after unpublishing.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use integration_tests::kubelet;
use integration_tests::proc_usage::{Peak, Sampler, Usage, usage};

use crate::harness::{Bench, Call, Counts, secret_value, spc_name, tail};

pub(crate) struct BurstReport {
    pub count: usize,
    pub objects: usize,
    /// From the first call sent to the last answer.
    pub wall: Duration,
    /// How long each NodePublishVolume took to answer.
    pub latencies: Vec<Duration>,
    pub requests: Counts,
    pub before: Usage,
    pub peak: Peak,
    /// With every volume mounted.
    pub loaded: Usage,
    /// After unpublishing them all.
    pub after: Usage,
    pub checked_files: usize,
}

impl Bench {
    pub(crate) async fn burst_run(&mut self, count: usize, objects: usize) -> Result<BurstReport> {
        let pid = self.agent.pid();
        let mut volumes = Vec::with_capacity(count);
        for _ in 0..count {
            let service_account = self.new_service_account("burst");
            volumes.push(self.pod_volume(&spc_name(objects), &service_account)?);
        }
        let before = usage(pid)?;
        let requests_before = self.counts();
        let sampler = Sampler::start(pid);
        let started = Instant::now();
        let published = self.in_parallel(&volumes, Call::Publish, count).await;
        let wall = started.elapsed();
        let peak = sampler.stop();
        let requests = self.counts() - requests_before;
        let loaded = usage(pid)?;

        // Whatever happens from here, every target is unpublished before reporting.
        let checked = async {
            let latencies = published?;
            for (target, _) in &volumes {
                self.check_volume(target, objects, secret_value)?;
            }
            Ok::<_, anyhow::Error>(latencies)
        }
        .await;
        let unpublished = self.in_parallel(&volumes, Call::Unpublish, count).await;
        let latencies = checked.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        unpublished.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        let after = usage(pid)?;
        let left_mounts = kubelet::mount_points_under(pid, &self.kubelet_root());
        ensure!(
            left_mounts.is_empty(),
            "mounts left after unpublishing: {left_mounts:?}"
        );
        Ok(BurstReport {
            count,
            objects,
            wall,
            latencies,
            requests,
            before,
            peak,
            loaded,
            after,
            checked_files: count * objects,
        })
    }
}
