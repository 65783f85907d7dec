//! wisp-agent: a CSI node plugin that mounts Azure Key Vault objects with the pod's own identity.
//!
//! Pure parts (no I/O): [`params`] turns SecretProviderClass parameters into a typed mount request,
//! [`render`] turns fetched Key Vault objects into file bytes. [`writer`] writes a set of files atomically.

pub mod params;
pub mod render;
pub mod writer;
