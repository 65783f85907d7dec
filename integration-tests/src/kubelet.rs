//! Playing kubelet against the real `wisp-agent`: the agent's command line against the fakes, the CSI Node
//! client over its unix socket, the NodePublishVolume request kubelet sends for an inline (ephemeral) volume,
//! the SecretProviderClass `objects` parameter, and looking into the agent's mount namespace.
//!
//! Shared by the end-to-end tests, `wisp-local` and `wisp-agent-bench`.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;
use wisp_shared::contract::secrets_store as ss;

#[cfg(doc)]
use crate::process::free_port;
use crate::process::{Program, RunningProgram};

/// CSI v1 client types, generated from the agent's `csi.proto` (client side only).
pub mod csi {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("csi.v1");
}

/// kubelet plugin registration client types, generated from the agent's `pluginregistration.proto`.
pub mod registration {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("pluginregistration");
}

/// The Secrets Store provider protocol's client types (`v1alpha1`), generated from the agent's `provider.proto`:
/// what the upstream driver calls.
pub mod provider {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("v1alpha1");
}

use csi::node_client::NodeClient;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("wisp-agent exited ({status}) before serving CSI on {socket}")]
    AgentExited {
        status: std::process::ExitStatus,
        socket: PathBuf,
    },
    #[error("wisp-agent's socket {socket} did not appear within {patience:?}")]
    NoSocket { socket: PathBuf, patience: Duration },
    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
}

/// How to start `wisp-agent` against the fakes.
#[derive(Debug, Clone)]
pub struct AgentLaunch<'a> {
    pub binary: &'a Path,
    pub socket: &'a Path,
    pub node_id: &'a str,
    /// `--mount-mode=tmpfs` (as in production; needs mount permission) or `directory`.
    pub tmpfs: bool,
    pub kubeconfig: &'a Path,
    /// The test CA, trusted through `SSL_CERT_FILE`.
    pub ca_file: &'a Path,
    /// Fake host names (Entra, vaults) to resolve to 127.0.0.1 in the agent's own mount namespace.
    pub loopback_names: Vec<String>,
    /// `--log-level`.
    pub log_level: &'a str,
    /// Loopback ports of `/metrics` and `/healthz` (e.g. [`free_port`]).
    pub metrics_port: u16,
    pub health_port: u16,
}

impl AgentLaunch<'_> {
    /// Where the agent serves kubelet's plugin registration: a `plugins_registry` directory beside the socket.
    pub fn registration_socket(&self) -> PathBuf {
        self.socket
            .with_file_name("plugins_registry")
            .join(format!("{}-reg.sock", ss::DRIVER_NAME))
    }

    /// The agent's program: CSI endpoint, node id, mount mode, metrics and health on loopback, a state directory
    /// and kubelet's registration directory beside the socket, the kubeconfig, CA and host names above, and no proxy or `RUST_LOG` inherited from the
    /// caller's environment.
    /// Add flags with [`Program::args`], then [`Program::spawn`].
    pub fn program(&self) -> Program {
        Program::from_path("wisp-agent", self.binary)
            .args([
                format!("--endpoint=unix://{}", self.socket.display()),
                format!("--nodeid={}", self.node_id),
                format!("--mount-mode={}", if self.tmpfs { "tmpfs" } else { "directory" }),
                format!("--metrics-addr=127.0.0.1:{}", self.metrics_port),
                format!("--health-addr=127.0.0.1:{}", self.health_port),
                format!("--log-level={}", self.log_level),
                // Beside the socket: each test's agent keeps its own record of mounted volumes.
                format!(
                    "--state-dir={}",
                    self.socket.with_file_name("wisp-agent-state").display()
                ),
                // kubelet's plugins_registry, beside the socket too.
                format!("--registration-socket={}", self.registration_socket().display()),
            ])
            .reaching_fakes(self.kubeconfig, self.ca_file, &self.loopback_names)
    }
}

/// Waits (up to `patience`) for the agent's socket, then connects a CSI Node client to it.
pub async fn connect(
    agent: &mut RunningProgram,
    socket: &Path,
    patience: Duration,
) -> Result<NodeClient<Channel>, KubeletError> {
    unix_channel(agent, socket, patience).await.map(NodeClient::new)
}

/// Waits (up to `patience`) for a unix socket of the agent (CSI, provider protocol), then opens a gRPC channel
/// to it.
pub async fn unix_channel(
    agent: &mut RunningProgram,
    socket: &Path,
    patience: Duration,
) -> Result<Channel, KubeletError> {
    let deadline = tokio::time::Instant::now() + patience;
    // The file appears at bind(), a moment before the agent listens: until then a connection is refused, so
    // connecting is retried (as kubelet's plugin watcher does) until the deadline.
    loop {
        if let Some(status) = agent.try_wait() {
            return Err(KubeletError::AgentExited {
                status,
                socket: socket.to_path_buf(),
            });
        }
        let attempt = if socket.exists() {
            Some(open_channel(socket).await)
        } else {
            None
        };
        match attempt {
            Some(Ok(channel)) => return Ok(channel),
            Some(Err(source)) if tokio::time::Instant::now() >= deadline => {
                return Err(KubeletError::Connect {
                    socket: socket.to_path_buf(),
                    source,
                });
            }
            None if tokio::time::Instant::now() >= deadline => {
                return Err(KubeletError::NoSocket {
                    socket: socket.to_path_buf(),
                    patience,
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn open_channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // tonic requires a URI but the connector below always dials the unix socket.
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// The pod an inline volume belongs to, as kubelet describes it in the volume_context.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub service_account: &'a str,
}

/// The volume_context kubelet sends for an inline Secrets Store volume with `podInfoOnMount` and token
/// requests: the volume's attributes, the pod's identity and `tokens_json` (see
/// [`crate::issuer::TestIssuer::csi_tokens_json`]).
pub fn volume_context(
    attributes: impl IntoIterator<Item = (String, String)>,
    pod: &PodRef<'_>,
    tokens_json: String,
) -> HashMap<String, String> {
    let mut context: HashMap<String, String> = attributes.into_iter().collect();
    context.insert(ss::CTX_POD_NAME.into(), pod.name.into());
    context.insert(ss::CTX_POD_NAMESPACE.into(), pod.namespace.into());
    context.insert(ss::CTX_POD_UID.into(), pod.uid.into());
    context.insert(ss::CTX_SERVICE_ACCOUNT_NAME.into(), pod.service_account.into());
    context.insert(ss::CTX_EPHEMERAL.into(), "true".into());
    context.insert(ss::CTX_SERVICE_ACCOUNT_TOKENS.into(), tokens_json);
    context
}

/// A read-only, single-node NodePublishVolume request for a filesystem volume, as kubelet sends it.
pub fn publish_request(
    volume_id: &str,
    target: &Path,
    volume_context: HashMap<String, String>,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(csi::VolumeCapability {
            access_type: Some(csi::volume_capability::AccessType::Mount(
                csi::volume_capability::MountVolume::default(),
            )),
            access_mode: Some(csi::volume_capability::AccessMode {
                mode: csi::volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        volume_context,
        ..Default::default()
    }
}

pub fn unpublish_request(volume_id: &str, target: &Path) -> csi::NodeUnpublishVolumeRequest {
    csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.display().to_string(),
    }
}

/// kubelet's target path for a pod's CSI volume under `root` (kubelet's `--root-dir`, e.g. `/var/lib/kubelet`).
pub fn target_path(root: &Path, pod_uid: &str, volume_name: &str) -> PathBuf {
    root.join(format!("pods/{pod_uid}/volumes/kubernetes.io~csi/{volume_name}/mount"))
}

/// The SecretProviderClass `objects` parameter: a YAML document with an `array:` of YAML strings, one per
/// object (e.g. `"objectName: s1\nobjectType: secret"`).
pub fn objects_parameter(objects: &[&str]) -> String {
    let mut yaml = String::from("array:\n");
    for object in objects {
        yaml.push_str("  - |\n");
        for line in object.lines() {
            yaml.push_str("    ");
            yaml.push_str(line);
            yaml.push('\n');
        }
    }
    yaml
}

/// What a volume shows, as a container reads it: each visible file by its path relative to `root` (the
/// top-level links into `..data` followed, the `..`-prefixed entries skipped), with its bytes and mode. Panics on
/// an unreadable tree: it is for tests that look at a volume they published.
pub fn visible_files(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().to_string();
            if dir == base && name.starts_with("..") {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).expect("metadata (following links)");
            if meta.is_dir() {
                walk(base, &path, out);
            } else {
                let relative = path
                    .strip_prefix(base)
                    .expect("under base")
                    .to_string_lossy()
                    .to_string();
                out.insert(
                    relative,
                    (std::fs::read(&path).expect("read"), meta.permissions().mode() & 0o7777),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `path` as the process `pid` sees it: the agent may run in its own mount namespace, whose tmpfs mounts only
/// show through its root.
pub fn in_namespace_of(pid: u32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

/// Whether `path` is a mount point in the mount namespace of process `pid`.
pub fn is_mount_point(pid: u32, path: &Path) -> bool {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let wanted = path.display().to_string();
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Mount points of process `pid`'s namespace under `dir`.
pub fn mount_points_under(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parameter_is_an_array_of_yaml_strings() {
        assert_eq!(
            objects_parameter(&["objectName: s1\nobjectType: secret", "objectName: k1\nobjectType: key"]),
            "array:\n  - |\n    objectName: s1\n    objectType: secret\n  - |\n    objectName: k1\n    objectType: key\n"
        );
    }

    #[test]
    fn volume_context_carries_the_pod_and_its_tokens() {
        let pod = PodRef {
            namespace: "ns",
            name: "p",
            uid: "u-1",
            service_account: "sa",
        };
        let context = volume_context(
            [("secretProviderClass".to_string(), "spc".to_string())],
            &pod,
            "{}".into(),
        );
        let mut pairs: Vec<_> = context.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                "csi.storage.k8s.io/ephemeral=true",
                "csi.storage.k8s.io/pod.name=p",
                "csi.storage.k8s.io/pod.namespace=ns",
                "csi.storage.k8s.io/pod.uid=u-1",
                "csi.storage.k8s.io/serviceAccount.name=sa",
                "csi.storage.k8s.io/serviceAccount.tokens={}",
                "secretProviderClass=spc",
            ]
        );
    }
}
