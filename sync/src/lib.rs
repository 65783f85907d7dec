//! wisp-sync: the SecretSync controller. Serves `secret-sync.x-k8s.io/v1alpha1` `SecretSync` objects as
//! kubernetes-sigs/secrets-store-sync-controller defines them, with wisp-agent's in-process Azure provider: a
//! Kubernetes Secret from Key Vault without any pod mounting a volume.
//!
//! Modules from the top down (each uses only those below it):
//! - [`app`] — the wiring: flags to the provider, the Kubernetes client, HTTP endpoints and the controller.
//! - [`cli`] — the flags ([`cli::Cli`]).
//! - [`metrics`] — upstream's metric names, plus the provider's `keyvault_request`.
//! - [`leader`] — leader election over a Lease (kube-lease-manager).
//! - [`controller`] — the kube-runtime controller: watches, concurrency, requeues.
//! - [`readiness`] — `/healthz` and `/readyz` by start-up phase.
//! - [`reconcile`] — one SecretSync: identity, class, provider, Secret, status, Events.
//! - [`identity`] — who a SecretSync acts as: its ServiceAccount's token and annotations, or a service
//!   principal's credentials Secret (cached).
//! - [`secret`] — SecretSync + rendered files → the Secret (pure).
//! - [`conditions`] — the status's conditions, upstream's reasons and texts (pure).
//! - [`hash`] — `syncHash` (pure).
//! - [`secretsync`] — the typed SecretSync and SecretProviderClass views (pure).

pub mod app;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod hash;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod readiness;
pub mod reconcile;
pub mod secret;
pub mod secretsync;
