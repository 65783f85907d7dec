//! wisp's local fakes of the services it talks to (the Kubernetes API subset, Microsoft Entra with IMDS, Key
//! Vault), the test PKI and SA-token issuer, helpers to run the real binaries against them, and what the benchmark
//! programs share (`/proc` sampling, `/metrics` reading, report tables).

pub mod admission;
pub mod agent_harness;
pub mod bench_binary;
pub mod bench_main;
pub mod bench_report;
pub mod fake_entra;
pub mod fake_keyvault;
pub mod fake_kube;
pub mod foreign_clients;
pub mod https_server;
pub mod issuer;
pub mod kubelet;
pub mod local_cloud;
pub mod pki;
pub mod proc_usage;
pub mod process;
pub mod prometheus_text;
pub mod sync_launch;
pub mod traffic;
pub mod webhook_harness;
