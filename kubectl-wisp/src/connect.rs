//! `kubectl wisp connect`: Service Connector's job as a command. Reads the cluster's issuer, server-side applies
//! the ServiceAccount and the SecretProviderClass ([`plan`] builds them), and returns what to print: a line per
//! object, the pod snippet and the Azure CLI commands that remain. `--dry-run` reads but writes nothing.

pub mod plan;

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;
use wisp_shared::contract::workload_identity as wi;

use crate::azure::Issuer;
use crate::cluster::{Cluster, ClusterError};
use plan::{Connection, FIELD_MANAGER, Outcome, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "no tenant: pass --tenant-id (read it with: az account show --query tenantId -o tsv); the ServiceAccount \
         {namespace}/{service_account} has no {annotation} annotation to take it from",
        annotation = wi::TENANT_ID_ANNOTATION
    )]
    NoTenant { namespace: String, service_account: String },
    #[error("no tenant: pass --tenant-id (read it with: az account show --query tenantId -o tsv)")]
    NoTenantFlag,
    #[error("cannot write the objects as YAML: {0}")]
    Yaml(serde_saphyr::SerializeError),
}

/// How to carry out a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    pub dry_run: bool,
    pub yaml: bool,
}

/// What `connect` prints: the output, and a note for stderr when the issuer could not be read.
#[derive(Debug)]
pub struct Printed {
    pub stdout: String,
    pub note: Option<String>,
}

/// The tenant `--tenant-id` gives, else the one the existing ServiceAccount is annotated with.
pub async fn tenant(
    cluster: &Cluster,
    flag: Option<&str>,
    namespace: &str,
    service_account: Option<&str>,
) -> Result<String, ConnectError> {
    if let Some(tenant) = flag {
        return Ok(tenant.to_string());
    }
    let Some(service_account) = service_account else {
        return Err(ConnectError::NoTenantFlag);
    };
    let existing: Option<ServiceAccount> = cluster.get(namespace, service_account).await?;
    existing
        .and_then(|sa| sa.metadata.annotations?.get(wi::TENANT_ID_ANNOTATION).cloned())
        .filter(|tenant| !tenant.trim().is_empty())
        .ok_or_else(|| ConnectError::NoTenant {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
}

/// Reads the issuer, applies the objects (unless a dry run) and renders the output.
pub async fn run(cluster: &Cluster, connection: &Connection, options: ConnectOptions) -> Result<Printed, ConnectError> {
    let (issuer, note) = match cluster.issuer().await {
        Ok(url) => (Issuer::Known(url), None),
        Err(e) => (
            Issuer::Unknown,
            Some(format!(
                "note: {e}; the federated-credential command reads the issuer from AKS instead (az aks update \
                 --enable-oidc-issuer turns it on)"
            )),
        ),
    };
    let mut objects = connection.objects();
    let outcome = if options.dry_run {
        Outcome::DryRun
    } else {
        let mut applied: Vec<Value> = Vec::with_capacity(objects.len());
        for object in &objects {
            applied.push(cluster.apply(object, FIELD_MANAGER).await?);
        }
        if options.yaml {
            // The YAML shows what the server now holds; the text lines only name the objects.
            objects = applied;
        }
        Outcome::Applied
    };
    let stdout = if options.yaml {
        plan::render_yaml(connection, &objects, &issuer).map_err(ConnectError::Yaml)?
    } else {
        plan::render_text(connection, &objects, outcome, &issuer)
    };
    Ok(Printed { stdout, note })
}
