//! wisp-agent: a CSI node plugin that mounts Azure Key Vault objects with the pod's own identity.
//!
//! Pure parts (no I/O): [`params`] turns SecretProviderClass parameters into a typed mount request,
//! [`render`] turns fetched Key Vault objects into file bytes. [`writer`] writes a set of files atomically.
//!
//! Runtime: [`node`] serves the CSI Identity and Node services ([`proto`]); [`provider`] runs one mount's
//! Azure side ([`auth`] for tokens, [`keyvault`] for objects, over the shared client of [`http`]); [`spc`] finds
//! SecretProviderClasses; [`mount`] owns the target directory; [`metrics`] and [`server`] wire it together
//! from the flags in [`config`].

pub mod auth;
pub mod cluster;
pub mod config;
pub mod grpc_socket;
pub mod health;
pub mod http;
pub mod keyvault;
pub mod metrics;
pub mod mount;
pub mod mounted_files;
pub mod node;
pub mod params;
pub mod pod_status;
pub mod provider;
pub mod provider_service;
pub mod registration;
pub mod render;
pub mod round_cache;
pub mod secret_sync;
pub mod server;
pub mod spc;
pub mod state;
pub mod writer;

/// The CSI v1 messages and services (package `csi.v1`), generated from `proto/csi.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("csi.v1");
}

/// The Secrets Store CSI driver's provider protocol (package `v1alpha1`), generated from `proto/provider.proto`.
pub mod provider_proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("v1alpha1");
}

#[cfg(test)]
pub(crate) mod test_support {
    pub fn install_crypto() {
        wisp_shared::runtime::install_crypto_provider();
    }
}
