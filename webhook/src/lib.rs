//! wisp's admission webhook: injects Microsoft Entra Workload ID (the upstream azure-workload-identity webhook's
//! v1.5.1 token layout) into pods, and optionally the Secrets Store CSI volume.
//!
//! [`mutate`] is the pure core; [`sa_cache`], [`tls`] (with `cert_rotation`) and [`metrics`] are its inputs and
//! outputs; `review` the AdmissionReview wire types; [`api`] the HTTP handlers; [`serve`] the listeners; [`app`] the
//! runtime wiring that `main` calls with the [`cli::Config`]; `fuzzing` the properties the `admission` fuzz target
//! checks (`fuzz/`), not used by the program.

pub mod api;
pub mod app;
pub(crate) mod cert_rotation;
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod mutate;
pub mod pod;
pub(crate) mod review;
pub mod sa_cache;
pub mod serve;
pub mod tls;
