//! The fakes and the agent under load: starting them, mounting as kubelet does, the memory and rotation runs, and
//! counting what the fakes saw.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use futures::{StreamExt, TryStreamExt};
use integration_tests::fake_entra::FederatedCredential;
use integration_tests::kubelet::csi::NodePublishVolumeRequest;
use integration_tests::kubelet::csi::node_client::NodeClient;
use integration_tests::kubelet::{self, AgentLaunch, PodRef};
use integration_tests::local_cloud::{ClientFiles, CloudNames, LOGIN_HOST, LocalCloud};
use integration_tests::proc_usage::{Memory, Peak, Sampler, Usage, clock_ticks_per_second, cpu_ticks, memory, usage};
use integration_tests::process::{self, RunningProgram, free_port, tmpfs_mounts_available};
use integration_tests::prometheus_text::sample_sum;
use serde_json::json;
use tonic::transport::Channel;
use wisp_shared::contract::secrets_store as ss;

use crate::flags::{Cli, MountChoice};

/// Guards against a hang only: no call of a healthy agent comes near it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);
/// kubelet's bound on every CSI call (`csiTimeout` in kubelet's `pkg/volume/csi`, 2 minutes): a NodePublishVolume
/// that takes longer fails the mount (kubelet retries it), so every call here is bounded by it.
pub(crate) const KUBELET_DEADLINE: Duration = Duration::from_secs(120);
pub(crate) const TENANT: &str = "72f988bf-0000-4000-8000-0000000be4c4";
pub(crate) const CLIENT_ID: &str = "b3b3b3b3-0000-4000-8000-000000000001";
pub(crate) const VAULT: &str = "benchkv";
pub(crate) const NAMESPACE: &str = "bench";
pub(crate) const WARM_SA: &str = "sa-warm";
pub(crate) const VOLUME_NAME: &str = "secrets-store-inline";
/// Secret objects per SecretProviderClass in the latency runs.
pub(crate) const SIZES: [usize; 3] = [1, 10, 50];
/// Objects per volume in the memory run.
pub(crate) const MEMORY_RUN_OBJECTS: usize = 10;
/// NodePublishVolume calls in flight in the memory run.
pub(crate) const MEMORY_RUN_PARALLEL: usize = 8;
/// Objects of the SecretProviderClass in the rotation run.
pub(crate) const ROTATION_OBJECTS: usize = 10;
/// Bytes of each secret's value (a connection string or a small certificate is of this order).
pub(crate) const SECRET_BYTES: usize = 512;

/// Requests seen by the fakes so far.
pub(crate) use integration_tests::local_cloud::RequestCounts as Counts;

/// One timed mount.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub publish: Duration,
    pub unpublish: Duration,
    pub requests: Counts,
}

/// The fakes, the agent and a CSI client to it. Fields drop in order: the agent (killed, if still running) before
/// the fakes and the work directory.
pub(crate) struct Bench {
    pub node: NodeClient<Channel>,
    pub agent: RunningProgram,
    pub cloud: LocalCloud,
    pub work: tempfile::TempDir,
    pub tmpfs: bool,
    pub metrics_port: u16,
    pub next_pod: u64,
    pub next_service_account: u64,
}

impl Bench {
    pub(crate) async fn start(cli: &Cli, agent_binary: &Path) -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("wisp-agent-bench-")
            .tempdir()
            .context("creating a work directory")?;
        let dir = work.path();
        let cloud = LocalCloud::start(&CloudNames::wisp_test("https://oidc.wisp.test/bench"), |config| config).await?;
        let ClientFiles {
            ca_file,
            kubeconfig,
            cloud_env,
        } = cloud.write_client_files(dir);
        let LocalCloud { kube, vault, .. } = &cloud;

        cloud
            .add_tenant_with_vault(TENANT, VAULT, CLIENT_ID)
            .context("seeding the tenant and its vault")?;
        let burst_objects = cli.burst_objects as usize;
        let largest = SIZES
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(MEMORY_RUN_OBJECTS)
            .max(burst_objects);
        for i in 0..largest {
            vault
                .add_secret(VAULT, &object_name(i), &secret_value(i), None)
                .context("seeding a secret")?;
        }
        let mut sizes = SIZES.to_vec();
        sizes.push(MEMORY_RUN_OBJECTS);
        if !sizes.contains(&burst_objects) {
            sizes.push(burst_objects);
        }
        for size in sizes {
            let objects: Vec<String> = (0..size)
                .map(|i| format!("objectName: {}\nobjectType: secret", object_name(i)))
                .collect();
            let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
            kube.upsert(json!({
                "apiVersion": ss::API_VERSION,
                "kind": "SecretProviderClass",
                "metadata": {"name": spc_name(size), "namespace": NAMESPACE},
                "spec": {"provider": ss::PROVIDER_AZURE, "parameters": {
                    "clientID": CLIENT_ID,
                    "keyvaultName": VAULT,
                    "tenantId": TENANT,
                    "cloudName": process::CUSTOM_CLOUD_NAME,
                    "cloudEnvFileName": cloud_env.display().to_string(),
                    "objects": kubelet::objects_parameter(&objects),
                }},
            }));
        }

        let tmpfs = match cli.mount_mode {
            MountChoice::Auto => tmpfs_mounts_available(),
            MountChoice::Tmpfs => true,
            MountChoice::Directory => false,
        };
        // Short: the registration socket goes beside it, and unix socket paths are limited to 107 bytes.
        let socket = dir.join("csi/csi.sock");
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).context("creating the plugin directory")?;
        }
        let metrics_port = free_port();
        let mut agent_args = cli.agent_args.clone();
        if cli.rotation {
            agent_args.push("--enable-secret-rotation=true".to_string());
            agent_args.push(format!("--rotation-poll-interval={}s", cli.rotation_interval_secs));
        }
        let mut agent = AgentLaunch {
            binary: agent_binary,
            socket: &socket,
            node_id: "bench-node",
            tmpfs,
            kubeconfig: &kubeconfig,
            ca_file: &ca_file,
            loopback_names: vec![LOGIN_HOST.to_string(), vault.vault_host(VAULT)],
            log_level: "info",
            metrics_port,
            health_port: free_port(),
        }
        .program()
        .args(&agent_args)
        .spawn();
        let node = kubelet::connect(&mut agent, &socket, PATIENCE)
            .await
            .map_err(|e| anyhow!("{e}\n{}", tail(&agent)))?;
        Ok(Self {
            cloud,
            work,
            agent,
            node,
            tmpfs,
            metrics_port,
            next_pod: 0,
            next_service_account: 0,
        })
    }

    pub(crate) fn kubelet_root(&self) -> PathBuf {
        self.work.path().join("kubelet")
    }

    pub(crate) fn counts(&self) -> Counts {
        self.cloud.request_counts()
    }

    /// Injects `latency` before every Entra and Key Vault response (zero: none).
    pub(crate) fn set_latency(&self, latency: Duration) {
        self.cloud.set_azure_latency(VAULT, latency);
    }

    /// A new pod using `service_account`: its NodePublishVolume request for `spc`, as kubelet sends it.
    pub(crate) fn pod_volume(
        &mut self,
        spc: &str,
        service_account: &str,
    ) -> Result<(PathBuf, kubelet::csi::NodePublishVolumeRequest)> {
        self.next_pod += 1;
        let name = format!("pod-{}", self.next_pod);
        let uid = format!("6f1e0c1e-0000-4000-8000-{:012}", self.next_pod);
        let tokens = self
            .cloud
            .issuer
            .csi_tokens_json(NAMESPACE, service_account, &name, &uid, Duration::from_secs(3600))
            .context("minting the pod's service account token")?;
        let pod = PodRef {
            namespace: NAMESPACE,
            name: &name,
            uid: &uid,
            service_account,
        };
        let context = kubelet::volume_context(
            [(ss::CTX_SECRET_PROVIDER_CLASS.to_string(), spc.to_string())],
            &pod,
            tokens,
        );
        let target = kubelet::target_path(&self.kubelet_root(), &uid, VOLUME_NAME);
        let request = kubelet::publish_request(&format!("csi-{uid}"), &target, context);
        Ok((target, request))
    }

    /// A service account the agent has never mounted for, federated with the app.
    pub(crate) fn new_service_account(&mut self, label: &str) -> String {
        self.next_service_account += 1;
        let name = format!("sa-{label}-{}", self.next_service_account);
        self.federate(&name);
        name
    }

    pub(crate) fn federate(&self, service_account: &str) {
        self.cloud.entra.add_federated_credential(
            TENANT,
            CLIENT_ID,
            FederatedCredential::for_service_account(self.cloud.issuer.issuer(), NAMESPACE, service_account),
        );
    }

    /// Publishes, checks the volume holds `objects` files, unpublishes; the two calls timed.
    pub(crate) async fn mount_once(&mut self, objects: usize, service_account: &str) -> Result<Sample> {
        let (target, request) = self.pod_volume(&spc_name(objects), service_account)?;
        let volume_id = request.volume_id.clone();
        let before = self.counts();
        let started = Instant::now();
        bounded(self.node.node_publish_volume(request))
            .await
            .map_err(|e| anyhow!("NodePublishVolume {}: {e}\n{}", target.display(), tail(&self.agent)))?;
        let publish = started.elapsed();
        let requests = self.counts() - before;
        let files = self.visible_files(&target)?;
        ensure!(
            files == objects,
            "{} shows {files} files, expected {objects}",
            target.display()
        );
        let started = Instant::now();
        bounded(
            self.node
                .node_unpublish_volume(kubelet::unpublish_request(&volume_id, &target)),
        )
        .await
        .map_err(|e| anyhow!("NodeUnpublishVolume {}: {e}\n{}", target.display(), tail(&self.agent)))?;
        let unpublish = started.elapsed();
        Ok(Sample {
            publish,
            unpublish,
            requests,
        })
    }

    pub(crate) fn visible_files(&self, target: &Path) -> Result<usize> {
        let seen = kubelet::in_namespace_of(self.agent.pid(), target);
        let entries = std::fs::read_dir(&seen).with_context(|| format!("reading {}", seen.display()))?;
        Ok(entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count())
    }

    /// Makes `call` for every volume, `parallel` at a time: the time each call took to answer (as kubelet
    /// measures it against its deadline), or the first error.
    pub(crate) async fn in_parallel(
        &self,
        volumes: &[(PathBuf, NodePublishVolumeRequest)],
        call: Call,
        parallel: usize,
    ) -> Result<Vec<Duration>> {
        let calls: Vec<_> = volumes
            .iter()
            .map(|(target, request)| {
                let mut node = self.node.clone();
                async move {
                    let started = Instant::now();
                    let answer = match call {
                        Call::Publish => bounded(node.node_publish_volume(request.clone())).await.map(drop),
                        Call::Unpublish => {
                            let request = kubelet::unpublish_request(&request.volume_id, target);
                            bounded(node.node_unpublish_volume(request)).await.map(drop)
                        }
                    };
                    answer
                        .map(|()| started.elapsed())
                        .map_err(|e| anyhow!("{call:?} {}: {e}", target.display()))
                }
            })
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(parallel)
            .try_collect::<Vec<Duration>>()
            .await
    }

    /// Whether the volume at `target` shows exactly the first `objects` secrets with `value(i)` as their bytes
    /// (every file, nothing more); the differences otherwise.
    pub(crate) fn check_volume(&self, target: &Path, objects: usize, value: impl Fn(usize) -> String) -> Result<()> {
        let seen = kubelet::in_namespace_of(self.agent.pid(), target);
        ensure!(seen.is_dir(), "{} does not exist", target.display());
        let shown: Vec<(String, Vec<u8>)> = kubelet::visible_files(&seen)
            .into_iter()
            .map(|(name, (bytes, _mode))| (name, bytes))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = (0..objects).map(|i| (object_name(i), value(i).into_bytes())).collect();
        if shown != expected {
            let names: Vec<&String> = shown.iter().map(|(n, _)| n).collect();
            let wrong: Vec<&String> = shown
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .map(|(a, _)| &a.0)
                .collect();
            return Err(anyhow!(
                "{} shows {} files {names:?}, expected {objects}; differing: {wrong:?}",
                target.display(),
                shown.len()
            ));
        }
        Ok(())
    }

    /// Publishes `count` volumes of [`MEMORY_RUN_OBJECTS`] secrets, reads the agent's memory, unpublishes them.
    pub(crate) async fn memory_run(&mut self, count: usize) -> Result<MemoryReport> {
        let mut volumes = Vec::with_capacity(count);
        for _ in 0..count {
            volumes.push(self.pod_volume(&spc_name(MEMORY_RUN_OBJECTS), WARM_SA)?);
        }
        let started = Instant::now();
        let published = self
            .in_parallel(&volumes, Call::Publish, MEMORY_RUN_PARALLEL)
            .await
            .map(drop);
        let publish_time = started.elapsed();
        // Whatever happened, unpublish every target before reporting.
        let loaded = memory(self.agent.pid());
        let mounts = kubelet::mount_points_under(self.agent.pid(), &self.kubelet_root()).len();
        let mut spot_checked = 0;
        if published.is_ok() {
            for (target, _) in volumes.iter().step_by((count / 10).max(1)) {
                ensure!(
                    self.visible_files(target)? == MEMORY_RUN_OBJECTS,
                    "{} is incomplete",
                    target.display()
                );
                spot_checked += 1;
            }
        }
        let started = Instant::now();
        let unpublished = self
            .in_parallel(&volumes, Call::Unpublish, MEMORY_RUN_PARALLEL)
            .await
            .map(drop);
        let unpublish_time = started.elapsed();
        published.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        unpublished.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        let after = memory(self.agent.pid())?;
        let left: Vec<_> = volumes
            .iter()
            .map(|(target, _)| target)
            .filter(|t| kubelet::in_namespace_of(self.agent.pid(), t).exists())
            .collect();
        ensure!(
            left.is_empty(),
            "{} target paths still exist after unpublishing",
            left.len()
        );
        let left_mounts = kubelet::mount_points_under(self.agent.pid(), &self.kubelet_root());
        ensure!(
            left_mounts.is_empty(),
            "mounts left after unpublishing: {left_mounts:?}"
        );
        Ok(MemoryReport {
            count,
            mounts,
            spot_checked,
            loaded: loaded?,
            after,
            publish_time,
            unpublish_time,
        })
    }
}

impl Bench {
    /// The agent's `/metrics` text.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let response = tokio::time::timeout(PATIENCE, reqwest::get(&url))
            .await
            .map_err(|_| anyhow!("no answer from {url} within {PATIENCE:?}"))?
            .with_context(|| format!("GET {url}"))?;
        ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        response.text().await.with_context(|| format!("reading {url}"))
    }

    /// Publishes `--rotation-volumes` volumes, rotates every secret in Key Vault, waits for the poll interval,
    /// republishes them all as kubelet does and measures that round; unpublishes everything.
    pub(crate) async fn rotation_run(&mut self, cli: &Cli) -> Result<RotationReport> {
        let count = cli.rotation_volumes as usize;
        let parallel = cli.rotation_parallel as usize;
        let interval = Duration::from_secs(cli.rotation_interval_secs);
        let pid = self.agent.pid();
        self.federate(WARM_SA);
        let mut volumes = Vec::with_capacity(count);
        for _ in 0..count {
            volumes.push(self.pod_volume(&spc_name(ROTATION_OBJECTS), WARM_SA)?);
        }
        let before_publish = self.counts();
        let started = Instant::now();
        let published = self.in_parallel(&volumes, Call::Publish, parallel).await.map(drop);
        // Every volume's last refresh is before this instant.
        let published_at = Instant::now();
        let publish_time = published_at - started;
        let publish_requests = self.counts() - before_publish;

        // Whatever happens from here, every target is unpublished before reporting.
        let round = async {
            published?;
            let vault = &self.cloud.vault;
            for i in 0..ROTATION_OBJECTS {
                vault
                    .add_secret(VAULT, &object_name(i), &rotated_value(i), None)
                    .context("adding a secret version")?;
            }
            let before_round = usage(pid)?;
            // Past the interval for every volume and for the round of the first mounts' reads.
            let due = published_at + interval + Duration::from_millis(500);
            eprintln!(
                "{count} volumes published in {:.2} s; republishing in {:.1} s",
                publish_time.as_secs_f64(),
                due.saturating_duration_since(Instant::now()).as_secs_f64()
            );
            tokio::time::sleep_until(due.into()).await;

            let requests_before = self.counts();
            let cpu_before = cpu_ticks(pid)?;
            let sampler = Sampler::start(pid);
            let started = Instant::now();
            let answered = self.in_parallel(&volumes, Call::Publish, parallel).await;
            let wall = started.elapsed();
            let peak = sampler.stop();
            let latencies = answered?;
            let cpu_after = cpu_ticks(pid)?;
            let requests = self.counts() - requests_before;
            let after_round = usage(pid)?;

            // Every volume shows exactly the new bytes of every object, and nothing else.
            let mut checked_files = 0;
            for (target, _) in &volumes {
                self.check_volume(target, ROTATION_OBJECTS, rotated_value)?;
                checked_files += ROTATION_OBJECTS;
            }
            let metrics = self.metrics().await?;
            Ok::<_, anyhow::Error>(RotationRound {
                requests,
                wall,
                cpu_ms: (cpu_after.saturating_sub(cpu_before)) as f64 * 1000.0 / clock_ticks_per_second() as f64,
                before_round,
                after_round,
                peak,
                latencies,
                checked_files,
                rotated: sample_sum(&metrics, "rotation_reconcile_total", "rotated=\"true\""),
                not_rotated: sample_sum(&metrics, "rotation_reconcile_total", "rotated=\"false\""),
                errors: sample_sum(&metrics, "rotation_reconcile_error_total", ""),
            })
        }
        .await;
        let unpublished = self.in_parallel(&volumes, Call::Unpublish, parallel).await;
        let round = round.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        unpublished.map_err(|e| anyhow!("{e:#}\n{}", tail(&self.agent)))?;
        let after_unpublish = usage(pid)?;
        let left_mounts = kubelet::mount_points_under(pid, &self.kubelet_root());
        ensure!(
            left_mounts.is_empty(),
            "mounts left after unpublishing: {left_mounts:?}"
        );
        Ok(RotationReport {
            count,
            parallel,
            interval,
            publish_time,
            publish_requests,
            round,
            after_unpublish,
        })
    }
}

pub(crate) struct RotationRound {
    pub requests: Counts,
    pub wall: Duration,
    pub cpu_ms: f64,
    pub before_round: Usage,
    pub after_round: Usage,
    /// Highest RSS and open descriptors during the round.
    pub peak: Peak,
    /// How long each republish took to answer.
    pub latencies: Vec<Duration>,
    pub checked_files: usize,
    pub rotated: f64,
    pub not_rotated: f64,
    pub errors: f64,
}

pub(crate) struct RotationReport {
    pub count: usize,
    pub parallel: usize,
    pub interval: Duration,
    pub publish_time: Duration,
    pub publish_requests: Counts,
    pub round: RotationRound,
    pub after_unpublish: Usage,
}

/// The bytes of secret `i` as seeded ([`SECRET_BYTES`] of them).
pub(crate) fn secret_value(i: usize) -> String {
    format!("secret-{i:02}-").chars().cycle().take(SECRET_BYTES).collect()
}

/// Its bytes after the rotation run's new version.
pub(crate) fn rotated_value(i: usize) -> String {
    format!("rotated-{i:02}-").chars().cycle().take(SECRET_BYTES).collect()
}

pub(crate) fn object_name(i: usize) -> String {
    format!("bench-secret-{i:02}")
}

pub(crate) fn spc_name(objects: usize) -> String {
    format!("bench-{objects}")
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    Publish,
    Unpublish,
}

/// A CSI call bounded by [`KUBELET_DEADLINE`], as kubelet bounds it.
pub(crate) async fn bounded<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(KUBELET_DEADLINE, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within kubelet's deadline ({KUBELET_DEADLINE:?})")),
    }
}

/// The last lines of a program's output, for failure reports.
pub(crate) fn tail(program: &RunningProgram) -> String {
    program.log_tail(20)
}

pub(crate) struct MemoryReport {
    pub count: usize,
    pub mounts: usize,
    pub spot_checked: usize,
    pub loaded: Memory,
    pub after: Memory,
    pub publish_time: Duration,
    pub unpublish_time: Duration,
}
