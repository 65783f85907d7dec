//! What kubelet talks to: the CSI services on the agent's socket, kubelet's plugin registration and `/healthz`.

pub(crate) mod health;
pub(crate) mod registration;
