//! The CSI Controller service of a node plugin.

use tonic::{Request, Response, Status};

use crate::proto::csi::controller_server::Controller;
use crate::proto::csi::*;

/// The Controller service of a node plugin: only `ControllerGetCapabilities`, answered as the upstream driver
/// answers it (one `RPC UNKNOWN` capability). csi-sanity's node suite asks it before every spec and refuses an
/// empty list (it decodes as nil); the agent does not advertise CONTROLLER_SERVICE, so nothing else asks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ControllerService;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::{Rpc, Type, rpc};
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: rpc::Type::Unknown as i32,
                })),
            }],
        }))
    }
}
