//! The CSI Node service, kubelet's entry point: NodePublishVolume's argument checks in upstream's order, the
//! request parsed once into a [`PublishRequest`] and handed to the [`Driver`]; NodeUnpublishVolume likewise;
//! metrics and the failure log for each call. Staging, stats and expansion are not served (no capability).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};
use wisp_shared::contract::secrets_store::{
    CTX_POD_NAME, CTX_POD_NAMESPACE, CTX_POD_UID, CTX_SECRET_PROVIDER_CLASS, CTX_SERVICE_ACCOUNT_NAME,
    CTX_SERVICE_ACCOUNT_TOKENS,
};

use crate::driver::request::{PodInfo, PublishRequest};
use crate::driver::{Driver, PublishFailure};
use crate::grpc_socket::grpc_timeout;
use crate::metrics::Metrics;
use crate::proto::csi::node_server::Node;
use crate::proto::csi::*;

/// The Node service.
#[derive(Debug, Clone)]
pub(crate) struct NodeService {
    driver: Arc<Driver>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

fn context_value(context: &HashMap<String, String>, key: &str) -> String {
    context.get(key).cloned().unwrap_or_default()
}

/// The volume context as logged: the service-account tokens replaced, as upstream's interceptor does.
fn loggable(context: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    context
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if k == CTX_SERVICE_ACCOUNT_TOKENS {
                    "***stripped***"
                } else {
                    v.as_str()
                },
            )
        })
        .collect()
}

/// NodePublishVolume's arguments, checked in the upstream driver's order with its texts.
pub(crate) fn publish_request(
    request: NodePublishVolumeRequest,
    timeout: Option<Duration>,
) -> Result<PublishRequest, PublishFailure> {
    if request.volume_capability.is_none() {
        return Err(PublishFailure::invalid("Volume capability missing in request"));
    }
    if request.volume_id.is_empty() {
        return Err(PublishFailure::invalid("Volume ID missing in request"));
    }
    if request.target_path.is_empty() {
        return Err(PublishFailure::invalid("Target path missing in request"));
    }
    if request.volume_context.is_empty() {
        return Err(PublishFailure::invalid("Volume attributes missing in request"));
    }
    let context = &request.volume_context;
    let pod = PodInfo {
        name: context_value(context, CTX_POD_NAME),
        namespace: context_value(context, CTX_POD_NAMESPACE),
        uid: context_value(context, CTX_POD_UID),
        service_account: context_value(context, CTX_SERVICE_ACCOUNT_NAME),
    };
    let secret_provider_class = context_value(context, CTX_SECRET_PROVIDER_CLASS);
    tracing::info!(
        volume_id = %request.volume_id,
        target = %request.target_path,
        pod = %format!("{}/{}", pod.namespace, pod.name),
        secret_provider_class,
        "NodePublishVolume"
    );
    tracing::debug!(volume_context = ?loggable(context), secrets = ?request.secrets.keys().collect::<Vec<_>>(), "NodePublishVolume request");
    Ok(PublishRequest {
        volume_id: request.volume_id,
        target: PathBuf::from(request.target_path),
        readonly: request.readonly,
        pod,
        secret_provider_class,
        attributes: request.volume_context,
        secrets: request.secrets,
        timeout,
    })
}

fn observe<T>(metrics: &Metrics, method: &str, started: std::time::Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics.grpc_request(method, code, started.elapsed().as_secs_f64());
    if let Err(s) = result {
        tracing::warn!(method, code = ?s.code(), error = s.message(), "request failed");
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeStageVolume is not implemented"))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeUnstageVolume is not implemented"))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let timeout = grpc_timeout(request.metadata());
        let published = match publish_request(request.into_inner(), timeout) {
            Ok(request) => self.driver.publish(&request).await,
            Err(failure) => Err(failure),
        };
        match &published {
            Ok(()) => self.driver.metrics.node_publish_ok(),
            Err(failure) => self.driver.metrics.node_publish_error(failure.error_type),
        }
        let result = published
            .map(|()| NodePublishVolumeResponse {})
            .map_err(|failure| Status::new(failure.code, failure.message));
        observe(&self.driver.metrics, "/csi.v1.Node/NodePublishVolume", started, &result);
        result.map(Response::new)
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let request = request.into_inner();
        let result = if request.volume_id.is_empty() {
            Err(Status::invalid_argument("Volume ID missing in request"))
        } else if request.target_path.is_empty() {
            Err(Status::invalid_argument("Target path missing in request"))
        } else {
            let unpublished = self
                .driver
                .unpublish(&request.volume_id, &PathBuf::from(&request.target_path))
                .await;
            match &unpublished {
                Ok(()) => self.driver.metrics.node_unpublish_ok(),
                Err(_) => self.driver.metrics.node_unpublish_error(),
            }
            unpublished.map_err(Status::internal)
        };
        let result = result.map(|()| NodeUnpublishVolumeResponse {});
        observe(
            &self.driver.metrics,
            "/csi.v1.Node/NodeUnpublishVolume",
            started,
            &result,
        );
        result.map(Response::new)
    }

    async fn node_get_volume_stats(
        &self,
        _request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats is not implemented"))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume is not implemented"))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.driver.info.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[cfg(test)]
mod tests;
