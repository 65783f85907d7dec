//! The gRPC protocols the agent serves, generated from `agent/proto/*.proto` at build time.

/// CSI v1 (package `csi.v1`): the Identity and Node services and the Controller's capabilities.
pub(crate) mod csi {
    #![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
    tonic::include_proto!("csi.v1");
}

/// kubelet plugin registration (package `pluginregistration`).
pub(crate) mod registration {
    #![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
    tonic::include_proto!("pluginregistration");
}

/// The Secrets Store CSI driver's provider protocol (package `v1alpha1`).
pub(crate) mod provider {
    #![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
    tonic::include_proto!("v1alpha1");
}
