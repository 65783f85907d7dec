//! The command line: `kubectl wisp connect ...` and `kubectl wisp doctor ...` (kubectl runs `kubectl-wisp` from
//! `PATH` with the words after `wisp`). Parsed once here into the typed requests of [`crate::connect`] and
//! [`crate::doctor`]; the cluster is found the way kubectl finds it (`KUBECONFIG`, `~/.kube/config`, in-cluster).

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::connect::plan::{Connection, IdentityKind, ObjectKind, PlanError, VaultObject};
use crate::doctor::target::{Target, TargetError};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-wisp",
    bin_name = "kubectl wisp",
    version,
    about = "Connect a workload to Azure Key Vault through wisp, and explain why a pod gets no secret"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server-side apply the ServiceAccount and the SecretProviderClass, then print the pod snippet and the
    /// Azure CLI commands that remain.
    Connect(ConnectArgs),
    /// Check, in the order a mount runs, everything a pod needs to get its secrets; exit 1 if a check fails.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Namespace of the ServiceAccount, the SecretProviderClass and the pods (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The workload's ServiceAccount (created or annotated). Not used with --managed-identity.
    #[arg(long, required_unless_present = "managed_identity")]
    pub service_account: Option<String>,
    /// Client ID of the user-assigned managed identity (or app registration) that reads the vault.
    #[arg(long)]
    pub client_id: String,
    /// Microsoft Entra tenant of the identity and the vault (default: the ServiceAccount's tenant-id annotation).
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// Key Vault name (not its URL).
    #[arg(long)]
    pub vault: String,
    /// A secret to mount, NAME or NAME=FILE (the file name in the volume); repeatable.
    #[arg(long = "secret", value_name = "NAME[=FILE]")]
    pub secrets: Vec<String>,
    /// A key to mount (its public key as PEM); repeatable.
    #[arg(long = "key", value_name = "NAME")]
    pub keys: Vec<String>,
    /// A certificate to mount (the certificate as PEM); repeatable.
    #[arg(long = "cert", value_name = "NAME")]
    pub certs: Vec<String>,
    /// Name of the SecretProviderClass (default: wisp-<vault>).
    #[arg(long)]
    pub class: Option<String>,
    /// Read the vault with the node's user-assigned managed identity --client-id (useVMManagedIdentity) instead
    /// of the pod's workload identity: no ServiceAccount, label or federated credential.
    #[arg(long)]
    pub managed_identity: bool,
    /// Print everything, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `yaml`: print the objects as a YAML stream, with the snippet and the commands as comments.
    #[arg(short = 'o', long)]
    pub output: Option<ConnectOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnectOutput {
    Yaml,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// `pod/NAME` (or just NAME) or `deployment/NAME` (each of its pods).
    pub target: String,
    /// Namespace of the pod or deployment (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// `json`: the same checks as data.
    #[arg(short = 'o', long)]
    pub output: Option<DoctorOutput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DoctorOutput {
    Json,
}

impl ConnectArgs {
    /// The validated connection; `namespace` and `tenant_id` are those the caller resolved (flag, kubeconfig,
    /// existing ServiceAccount).
    pub fn connection(&self, namespace: &str, tenant_id: &str) -> Result<Connection, PlanError> {
        let mut objects = Vec::new();
        for secret in &self.secrets {
            let (name, alias) = match secret.split_once('=') {
                Some((name, alias)) => (name, Some(alias.to_string())),
                None => (secret.as_str(), None),
            };
            objects.push(VaultObject {
                kind: ObjectKind::Secret,
                name: name.to_string(),
                alias,
            });
        }
        for (kind, names) in [(ObjectKind::Key, &self.keys), (ObjectKind::Cert, &self.certs)] {
            objects.extend(names.iter().map(|name| VaultObject {
                kind,
                name: name.clone(),
                alias: None,
            }));
        }
        let identity = if self.managed_identity {
            IdentityKind::NodeManagedIdentity
        } else {
            IdentityKind::WorkloadIdentity {
                service_account: self.service_account.clone().unwrap_or_default(),
            }
        };
        Connection::new(
            namespace,
            identity,
            &self.client_id,
            tenant_id,
            &self.vault,
            objects,
            self.class.as_deref(),
        )
    }
}

impl DoctorArgs {
    pub fn target(&self) -> Result<Target, TargetError> {
        Target::parse(&self.target)
    }
}
