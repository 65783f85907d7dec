//! `kubectl wisp`: connect a workload to Key Vault in one command ([`connect`]), and explain why a pod gets no
//! secret ([`doctor`]).
//!
//! Modules from the top down, each using only those below it: [`app`] (what `main` runs), [`cli`] (the flags),
//! [`connect`] and [`doctor`] (the two commands, each a pure core beside its I/O), [`cluster`] (the Kubernetes
//! API), [`azure`] (the federated-credential subject and the Azure CLI commands), [`names`] (naming rules).
//! SecretProviderClasses are checked with wisp-agent's own parser, so doctor and connect say exactly what a
//! mount would.

pub mod app;
pub mod azure;
pub mod cli;
pub mod cluster;
pub mod connect;
pub mod doctor;
pub mod names;
