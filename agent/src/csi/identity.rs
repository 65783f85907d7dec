//! The CSI Identity service: the driver's name and version, no plugin capability (a node plugin only, so
//! csi-sanity runs none of its controller specs), and a Probe that answers while the server does.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::driver::Driver;
use crate::proto::csi::identity_server::Identity;
use crate::proto::csi::*;

/// The Identity service.
#[derive(Debug, Clone)]
pub(crate) struct IdentityService {
    driver: Arc<Driver>,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let info = &self.driver.info;
        if info.name.is_empty() {
            return Err(Status::unavailable("driver name not configured"));
        }
        if info.version.is_empty() {
            return Err(Status::unavailable("driver version not configured"));
        }
        Ok(Response::new(GetPluginInfoResponse {
            name: info.name.clone(),
            vendor_version: info.version.clone(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // No CONTROLLER_SERVICE: the agent is a node plugin only, so csi-sanity skips the controller suites.
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
