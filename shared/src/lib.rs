//! What wisp's programs share: the compatibility contract with the upstream projects (names and values),
//! Azure cloud environments, and small runtime helpers (TLS provider, logging, shutdown).
//!
//! Nothing in here performs I/O at import time; helpers that touch the process (signals, logging) are
//! called explicitly from the binaries' `main`.

pub mod cloud;
pub mod contract;
#[doc(hidden)]
pub mod fuzzing;
pub mod runtime;
