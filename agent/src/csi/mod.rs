//! What kubelet talks to: the CSI Node, Identity and Controller services on the agent's socket, kubelet's plugin
//! registration, and `/healthz`.

pub(crate) mod controller;
pub(crate) mod health;
pub(crate) mod identity;
pub(crate) mod node;
pub(crate) mod registration;
