//! A NodePublishVolume request as the CSI edge read it, once: the arguments checked and the pod and class taken
//! out of the volume context. Every step of a publish takes this, never kubelet's raw request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The pod a volume belongs to, as kubelet describes it in the volume context (empty where it sent nothing:
/// the driver's checks name what is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

#[derive(Clone)]
pub(crate) struct PublishRequest {
    pub volume_id: String,
    pub target: PathBuf,
    pub readonly: bool,
    pub pod: PodInfo,
    /// `secretProviderClass` of the volume attributes.
    pub secret_provider_class: String,
    /// Every volume attribute as kubelet sent it (pod info and service-account tokens included): what the
    /// class's parameters are merged with.
    pub attributes: HashMap<String, String>,
    /// `NodePublishVolumeRequest.secrets`: the `nodePublishSecretRef` data and, from kubelet 1.35 on, the tokens.
    pub secrets: HashMap<String, String>,
    /// The caller's deadline (`grpc-timeout`), if it sent one.
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: attributes carry service-account tokens, secrets carry client secrets.
        let mut attributes: Vec<&String> = self.attributes.keys().collect();
        attributes.sort();
        let mut secrets: Vec<&String> = self.secrets.keys().collect();
        secrets.sort();
        f.debug_struct("PublishRequest")
            .field("volume_id", &self.volume_id)
            .field("target", &self.target)
            .field("readonly", &self.readonly)
            .field("pod", &self.pod)
            .field("secret_provider_class", &self.secret_provider_class)
            .field("attributes", &attributes)
            .field("secrets", &secrets)
            .field("timeout", &self.timeout)
            .finish()
    }
}
