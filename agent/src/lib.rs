//! wisp-agent: a CSI node plugin that mounts Azure Key Vault objects with the pod's own identity.
//!
//! Start reading at [`app`] (what `main` runs), then [`csi::node`] (kubelet's NodePublishVolume) and [`driver`]
//! (what a publish does). Modules are listed from the top down: each uses only modules listed below it.
//!
//! - [`fuzzing`] — the properties the fuzz targets (`fuzz/`) check on every input from outside; not used by
//!   the program.
//! - [`app`] — the wiring: flags to sockets, servers and the driver; [`app::RunError`].
//! - [`cli`] — the flags ([`cli::Cli`]).
//! - [`library`] — the provider as a library for `wisp-sync` (re-exports and one constructor; the agent does not
//!   use it).
//! - [`csi`] — what kubelet talks to: the Node, Identity and Controller services, plugin registration, `/healthz`.
//! - [`dropin`] — the upstream driver's `v1alpha1.CSIDriverProvider`, served from the in-process provider.
//! - [`driver`] — what a publish does on this node: first mount, rotation, unpublish, the volume registry.
//! - [`cluster`] — what the agent reads from and writes back to the Kubernetes API: SecretProviderClasses, pod
//!   status, synced Secrets.
//! - [`volume`] — the target directory: mounting, the atomic writer, reading mounted files back, the state file.
//! - [`provider`] — the Azure side: parameters, tokens, the Key Vault client, the round cache, rendering files.
//! - The floor, used by all of the above: [`metrics`], [`content`] (rendered files, object versions, the file-path
//!   rule), [`pem`] and [`private_key`] (Go-compatible encodings), [`error_text`] (an error with its causes on one
//!   line), [`http_endpoint`] (`/metrics` and background HTTP listeners), [`grpc_socket`] (unix sockets that take
//!   any `:authority`), [`proto`] (the generated gRPC code).
//!
//! For other programs (`kubectl wisp`), [`check_class_parameters`] checks a SecretProviderClass's parameters
//! exactly as a mount does, with the same messages, and says which identity the mount would use.

// The map above links the crate-private modules: it is read with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod cli;
pub(crate) mod cluster;
pub(crate) mod content;
pub(crate) mod csi;
pub(crate) mod driver;
pub(crate) mod dropin;
pub(crate) mod error_text;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod grpc_socket;
pub(crate) mod http_endpoint;
pub mod library;
pub(crate) mod metrics;
pub(crate) mod pem;
pub(crate) mod private_key;
pub(crate) mod proto;
pub(crate) mod provider;
pub(crate) mod volume;

pub use provider::params::{IdentityMode, ObjectProblem, ParamError};

/// Checks a SecretProviderClass's `parameters` (with the pod's volume attributes already merged over them) as
/// every mount does before it fetches anything: the identity the mount would use, or the first problem, with the
/// text the mount would fail with.
pub fn check_class_parameters(
    parameters: &std::collections::BTreeMap<String, String>,
) -> Result<IdentityMode, ParamError> {
    provider::params::parse_mount_params(parameters).map(|params| params.identity)
}

#[cfg(test)]
pub(crate) mod test_support {
    pub fn install_crypto() {
        wisp_shared::runtime::install_crypto_provider();
    }
}
