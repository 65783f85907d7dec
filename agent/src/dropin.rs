//! The Secrets Store CSI driver's provider protocol (`v1alpha1.CSIDriverProvider`, [`crate::proto::provider`])
//! served from the in-process provider, so that an existing upstream driver install can use wisp in place of
//! provider-azure: with `--provider-endpoint unix:///var/run/secrets-store-csi-providers/azure.sock` the driver
//! finds wisp where it looks for the `azure` provider.
//!
//! `Mount` answers as provider-azure does: the request's JSON strings are parsed (errors name the field),
//! every object is fetched and rendered by [`Provider::content`], and the response carries one `File` and
//! one `ObjectVersion` per rendered file. Nothing is written to `target_path`: the driver writes the returned
//! files itself. A failure is a gRPC `Unknown` status "failed to mount objects, error: …" (provider-azure never
//! sets `MountResponse.error`). `grpc.health.v1.Health/Check` answers `SERVING` for any service name, as
//! provider-azure's does (`Watch` is not served).
//!
//! The request becomes the provider's input through [`MountData::from_attributes`], the same merge rules as
//! NodePublishVolume's.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use wisp_shared::contract::provider_azure::DEFAULT_FILE_MODE;
use wisp_shared::contract::secrets_store::{CTX_POD_NAME, CTX_POD_NAMESPACE};

use crate::error_text::{error_chain, json_problem};
use crate::grpc_socket::{self, ServeError, SocketError, grpc_timeout};
use crate::metrics::Metrics;
use crate::proto::provider::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use crate::proto::provider::{File, MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse};
use crate::provider::input::MountData;
use crate::provider::params::{self, ObjectSpec};
use crate::provider::{Freshness, MountContent, Provider};

/// The protocol version, answered in `VersionResponse.version` as provider-azure does.
pub const PROTOCOL_VERSION: &str = "v1alpha1";
/// `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "wisp-agent";

const MOUNT_METHOD: &str = "/v1alpha1.CSIDriverProvider/Mount";
const VERSION_METHOD: &str = "/v1alpha1.CSIDriverProvider/Version";
/// The deadline of a call that carries no `grpc-timeout` (the driver passes kubelet's, 2 minutes).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Time kept back from the caller's deadline for answering.
const DEADLINE_RESERVE: Duration = Duration::from_secs(1);

/// A `MountRequest` that cannot be read. The first part is provider-azure's text; the JSON problem is described
/// by position and kind only, never by content (attributes carry tokens, secrets carry client secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("failed to unmarshal {field}, error: {problem}; MountRequest.{field} must be a JSON object of strings")]
    Json { field: &'static str, problem: String },
    #[error(
        "failed to unmarshal file permission, error: {0}; MountRequest.permission must be a decimal file mode from \
         0 to 511, e.g. \"420\" (0644)"
    )]
    Permission(String),
    #[error("pod name is not provided; the driver sends {CTX_POD_NAME} when the CSIDriver sets podInfoOnMount: true")]
    PodNameMissing,
    #[error(
        "pod namespace is not provided; the driver sends {CTX_POD_NAMESPACE} when the CSIDriver sets podInfoOnMount: \
         true"
    )]
    PodNamespaceMissing,
}

/// A JSON object of strings; `null` (what the driver sends without a `nodePublishSecretRef`) is empty, as Go's
/// `json.Unmarshal` into a map makes it. `empty_is_null` also reads an unset field as `null`.
fn parse_string_map(
    field: &'static str,
    text: &str,
    empty_is_null: bool,
) -> Result<BTreeMap<String, String>, RequestError> {
    let text = if empty_is_null && text.trim().is_empty() {
        "null"
    } else {
        text
    };
    serde_json::from_str::<Option<BTreeMap<String, String>>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| RequestError::Json {
            field,
            problem: json_problem(&e),
        })
}

/// `permission`: the JSON of Go's `os.FileMode`, a decimal number (`"420"` is 0644).
fn parse_permission(text: &str) -> Result<u32, RequestError> {
    let mode: u64 = serde_json::from_str(text)
        .map_err(|_| RequestError::Permission(format!("{text:?} is not a non-negative decimal number")))?;
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| RequestError::Permission(format!("{mode} is more than 511 (0777)")))
}

/// A request's fields, parsed.
#[derive(Debug)]
pub struct ParsedMount {
    pub data: MountData,
    pub pod_name: String,
    /// The mode of files whose object sets no `filePermission`.
    pub default_mode: u32,
}

/// Reads a `MountRequest` in provider-azure's order: attributes, secrets, permission, pod name, pod namespace.
pub fn parse_mount_request(req: &MountRequest) -> Result<ParsedMount, RequestError> {
    let attributes = parse_string_map("attributes", &req.attributes, false)?;
    let secrets = parse_string_map("secrets", &req.secrets, true)?;
    let default_mode = parse_permission(&req.permission)?;
    let pod_name = attributes.get(CTX_POD_NAME).cloned().unwrap_or_default();
    if pod_name.is_empty() {
        return Err(RequestError::PodNameMissing);
    }
    let data = MountData::from_attributes(attributes, &secrets);
    if data.pod_namespace().is_empty() {
        return Err(RequestError::PodNamespaceMissing);
    }
    Ok(ParsedMount {
        data,
        pod_name,
        default_mode,
    })
}

/// The object a rendered file came from: its path is the alias, `alias/N` (version history), either with `.crt`
/// / `.key` for split certificate files.
fn spec_of<'a>(specs: &'a [ObjectSpec], path: &str) -> Option<&'a ObjectSpec> {
    let candidates = [
        path,
        path.strip_suffix(".crt").unwrap_or(path),
        path.strip_suffix(".key").unwrap_or(path),
    ];
    let matches = |spec: &ObjectSpec, candidate: &str| {
        candidate == spec.alias
            || (spec.version_history > 1
                && candidate
                    .strip_prefix(spec.alias.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
    };
    specs
        .iter()
        .find(|s| s.alias == path)
        .or_else(|| specs.iter().find(|s| candidates.iter().any(|c| matches(s, c))))
}

/// `content` as the response: `default_mode` for the files of objects without `filePermission` (the provider
/// renders those with 0644, the driver's value; `specs` are only needed when `default_mode` differs), one
/// `ObjectVersion` per file.
pub fn mount_response(content: MountContent, specs: &[ObjectSpec], default_mode: u32) -> MountResponse {
    let files = content
        .files
        .into_iter()
        .map(|file| {
            let mode = if default_mode == DEFAULT_FILE_MODE {
                file.mode
            } else {
                spec_of(specs, &file.path)
                    .and_then(|s| s.file_permission)
                    .unwrap_or(default_mode)
            };
            File {
                path: file.path,
                // At most 0o777, which fits.
                mode: i32::try_from(mode).unwrap_or(0),
                contents: file.contents.to_vec(),
            }
        })
        .collect();
    MountResponse {
        object_version: content
            .objects
            .into_iter()
            .map(|o| ObjectVersion {
                id: o.id,
                version: o.version,
            })
            .collect(),
        error: None,
        files,
    }
}

/// The `v1alpha1.CSIDriverProvider` service.
#[derive(Debug, Clone)]
pub struct ProviderService {
    provider: Arc<Provider>,
    metrics: Arc<Metrics>,
}

impl ProviderService {
    pub fn new(provider: Arc<Provider>, metrics: Arc<Metrics>) -> Self {
        Self { provider, metrics }
    }

    /// One Mount; `timeout` is the caller's deadline, if it sent one.
    pub async fn mount(&self, req: MountRequest, timeout: Option<Duration>) -> Result<MountResponse, Status> {
        let deadline = Instant::now() + timeout.unwrap_or(DEFAULT_DEADLINE).saturating_sub(DEADLINE_RESERVE);
        let fail =
            |e: &dyn std::fmt::Display| Status::new(Code::Unknown, format!("failed to mount objects, error: {e}"));
        // As provider-azure: a field that cannot be unmarshalled is reported as such, everything after that as a
        // failed mount.
        let parsed = parse_mount_request(&req).map_err(|e| match e {
            RequestError::Json { .. } | RequestError::Permission(_) => Status::new(Code::Unknown, e.to_string()),
            RequestError::PodNameMissing | RequestError::PodNamespaceMissing => fail(&e),
        })?;
        let pod = format!("{}/{}", parsed.data.pod_namespace(), parsed.pod_name);
        tracing::info!(%pod, target = %req.target_path, "provider Mount");
        tracing::debug!(request = ?parsed.data, "provider Mount request");
        // Only for a permission other than the driver's 420 (0644, the provider's default): which objects set their
        // own filePermission. The provider parses the parameters again (and reports their errors).
        let specs = if parsed.default_mode == DEFAULT_FILE_MODE {
            Vec::new()
        } else {
            params::parse_mount_params(&parsed.data.parameters)
                .map(|p| p.objects)
                .unwrap_or_default()
        };
        // The driver sends the versions it mounted when it mounts again (rotation): such a remount shares this
        // round's Key Vault reads with the node's other refreshes, as a republish on the CSI socket does.
        let freshness = if req.current_object_version.is_empty() {
            Freshness::Fresh
        } else {
            Freshness::SharedRound { due: Instant::now() }
        };
        let content = self
            .provider
            .content(parsed.data.input(), deadline, freshness)
            .await
            .map_err(|e| {
                tracing::warn!(%pod, error = %e, "provider Mount failed");
                fail(&e)
            })?;
        tracing::info!(%pod, files = content.files.len(), "provider Mount done");
        Ok(mount_response(content, &specs, parsed.default_mode))
    }

    fn observe<T>(&self, method: &str, started: std::time::Instant, result: &Result<T, Status>) {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.grpc_request(method, code, started.elapsed().as_secs_f64());
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(&self, _request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        let started = std::time::Instant::now();
        let result = Ok(VersionResponse {
            version: PROTOCOL_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        self.observe(VERSION_METHOD, started, &result);
        result.map(Response::new)
    }

    async fn mount(&self, request: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let started = std::time::Instant::now();
        let timeout = grpc_timeout(request.metadata());
        let result = ProviderService::mount(self, request.into_inner(), timeout).await;
        self.observe(MOUNT_METHOD, started, &result);
        result.map(Response::new)
    }
}

/// `grpc.health.v1.Health`: `Check` is `SERVING` for any service while the server runs, as provider-azure's.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysServing;

#[tonic::async_trait]
impl Health for AlwaysServing {
    async fn check(&self, _request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("Watch is not implemented"))
    }
}

/// Serves the provider protocol and health on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    service: ProviderService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let path = grpc_socket::bound_path(&listener);
    tonic::transport::Server::builder()
        .add_service(CsiDriverProviderServer::new(service))
        .add_service(HealthServer::new(AlwaysServing))
        .serve_with_incoming_shutdown(grpc_socket::incoming(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve { path, source })
}

/// Binds `path` (a stale socket is replaced; owner-only, as provider-azure's under umask 0077) and serves there
/// in the background until SIGTERM/SIGINT, then removes the socket.
pub fn spawn(path: &Path, service: ProviderService) -> Result<(), SocketError> {
    let listener = grpc_socket::bind_socket(path)?;
    tracing::info!(socket = %path.display(), "provider endpoint listening (v1alpha1.CSIDriverProvider)");
    let path = path.to_path_buf();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, service, wisp_shared::runtime::shutdown_signal()).await {
            tracing::error!(socket = %path.display(), error = %error_chain(&e), "provider endpoint failed");
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

#[cfg(test)]
mod tests;
