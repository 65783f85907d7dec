//! What `connect` writes and prints, as pure functions of the validated [`Connection`]: the ServiceAccount and
//! SecretProviderClass apply configurations, the pod snippet, the Azure CLI commands that remain, and the whole
//! output text. The class is checked with wisp-agent's own parser before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wisp_agent::ParamError;
use wisp_shared::contract::provider_azure as pa;
use wisp_shared::contract::secrets_store::{API_VERSION, CTX_SECRET_PROVIDER_CLASS, DRIVER_NAME, PROVIDER_AZURE};
use wisp_shared::contract::workload_identity as wi;

pub use crate::azure::ObjectKind;
use crate::azure::{self, Issuer};
use crate::names;

/// Field manager of every server-side apply `connect` makes.
pub const FIELD_MANAGER: &str = "kubectl-wisp";

/// How the pods' mounts reach the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// The pod's own ServiceAccount token, federated with the identity (`clientID`).
    WorkloadIdentity { service_account: String },
    /// A user-assigned managed identity on the nodes (`useVMManagedIdentity`, `userAssignedIdentityID`).
    NodeManagedIdentity,
}

/// One Key Vault object to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultObject {
    pub kind: ObjectKind,
    pub name: String,
    /// The file name in the volume, when not the object's name.
    pub alias: Option<String>,
}

/// A validated `connect` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    namespace: String,
    identity: IdentityKind,
    client_id: String,
    tenant_id: String,
    vault: String,
    objects: Vec<VaultObject>,
    class: String,
}

/// Why a `connect` request cannot be carried out: the flag, what is wrong and how to get it right.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("namespace {0:?} is not a namespace name (lower-case letters, digits and '-', at most 63); pass -n NAME")]
    Namespace(String),
    #[error("--service-account {0:?} is not a ServiceAccount name (lower-case letters, digits, '-' and '.')")]
    ServiceAccount(String),
    #[error(
        "--client-id {0:?} is not a client ID (a GUID); read it with: az identity show -g <resource-group> -n \
         <identity> --query clientId -o tsv"
    )]
    ClientId(String),
    #[error(
        "--tenant-id {0:?} is not a tenant (its GUID or a domain such as contoso.onmicrosoft.com); read it with: az \
         account show --query tenantId -o tsv"
    )]
    Tenant(String),
    #[error("nothing to mount: give at least one --secret NAME[=FILE], --key NAME or --cert NAME")]
    NoObjects,
    #[error("--{kind} {name:?} is not a Key Vault object name (1 to 127 letters, digits and '-')", kind = kind.as_str())]
    ObjectName { kind: ObjectKind, name: String },
    #[error("--secret {name}={alias}: the file name is empty; write --secret NAME or --secret NAME=FILE")]
    EmptyAlias { name: String, alias: String },
    #[error(
        "--class {0:?} is not a SecretProviderClass name (lower-case letters, digits, '-' and '.'); pass --class \
         NAME"
    )]
    Class(String),
    #[error("wisp-agent would refuse this SecretProviderClass (check --vault and the file names)")]
    ClassRefused(#[source] ParamError),
}

impl Connection {
    /// Checks every part; `class` defaults to `wisp-<vault>`.
    pub fn new(
        namespace: &str,
        identity: IdentityKind,
        client_id: &str,
        tenant_id: &str,
        vault: &str,
        objects: Vec<VaultObject>,
        class: Option<&str>,
    ) -> Result<Self, PlanError> {
        if !names::is_dns_label(namespace) {
            return Err(PlanError::Namespace(namespace.to_string()));
        }
        if let IdentityKind::WorkloadIdentity { service_account } = &identity
            && !names::is_dns_subdomain(service_account)
        {
            return Err(PlanError::ServiceAccount(service_account.clone()));
        }
        if !names::is_guid(client_id) {
            return Err(PlanError::ClientId(client_id.to_string()));
        }
        if !names::is_tenant(tenant_id) {
            return Err(PlanError::Tenant(tenant_id.to_string()));
        }
        if objects.is_empty() {
            return Err(PlanError::NoObjects);
        }
        for object in &objects {
            if !names::is_key_vault_object_name(&object.name) {
                return Err(PlanError::ObjectName {
                    kind: object.kind,
                    name: object.name.clone(),
                });
            }
            if let Some(alias) = &object.alias
                && alias.trim().is_empty()
            {
                return Err(PlanError::EmptyAlias {
                    name: object.name.clone(),
                    alias: alias.clone(),
                });
            }
        }
        let connection = Self {
            namespace: namespace.to_string(),
            identity,
            client_id: client_id.to_string(),
            tenant_id: tenant_id.to_string(),
            vault: vault.to_string(),
            objects,
            class: class.map_or_else(|| format!("wisp-{}", vault.to_ascii_lowercase()), str::to_string),
        };
        wisp_agent::check_class_parameters(&connection.class_parameters()).map_err(PlanError::ClassRefused)?;
        if !names::is_dns_subdomain(&connection.class) {
            return Err(PlanError::Class(connection.class));
        }
        Ok(connection)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn class(&self) -> &str {
        &self.class
    }

    /// The ServiceAccount, with workload identity.
    pub fn service_account(&self) -> Option<&str> {
        match &self.identity {
            IdentityKind::WorkloadIdentity { service_account } => Some(service_account),
            IdentityKind::NodeManagedIdentity => None,
        }
    }

    /// The ServiceAccount's apply configuration (workload identity only): its name and the two annotations the
    /// webhook reads. Other fields stay as they are; server-side apply merges.
    pub fn service_account_object(&self) -> Option<Value> {
        let name = self.service_account()?;
        Some(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "annotations": {
                    wi::CLIENT_ID_ANNOTATION: self.client_id,
                    wi::TENANT_ID_ANNOTATION: self.tenant_id,
                },
            },
        }))
    }

    /// The SecretProviderClass's `spec.parameters`, as the Azure documentation writes them.
    fn class_parameters(&self) -> BTreeMap<String, String> {
        let mut parameters = BTreeMap::from([
            (pa::USE_POD_IDENTITY.to_string(), "false".to_string()),
            (pa::KEYVAULT_NAME.to_string(), self.vault.clone()),
            (pa::TENANT_ID_LEGACY.to_string(), self.tenant_id.clone()),
            (pa::OBJECTS.to_string(), self.objects_parameter()),
        ]);
        match &self.identity {
            IdentityKind::WorkloadIdentity { .. } => {
                parameters.insert(pa::CLIENT_ID.to_string(), self.client_id.clone());
            }
            IdentityKind::NodeManagedIdentity => {
                parameters.insert(pa::USE_VM_MANAGED_IDENTITY.to_string(), "true".to_string());
                parameters.insert(pa::USER_ASSIGNED_IDENTITY_ID.to_string(), self.client_id.clone());
            }
        }
        parameters
    }

    /// `objects`: an `array:` of YAML strings, one per object. Names are Key Vault names (no YAML specials); a
    /// file name is written as a double-quoted YAML (JSON) string, whatever it holds.
    fn objects_parameter(&self) -> String {
        let mut text = String::from("array:\n");
        for object in &self.objects {
            text.push_str(&format!(
                "  - |\n    {}: {}\n    {}: {}\n",
                pa::OBJECT_NAME,
                object.name,
                pa::OBJECT_TYPE,
                object.kind.as_str()
            ));
            if let Some(alias) = &object.alias {
                text.push_str(&format!("    {}: {}\n", pa::OBJECT_ALIAS, Value::from(alias.as_str())));
            }
        }
        text
    }

    /// The SecretProviderClass's apply configuration.
    pub fn class_object(&self) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": "SecretProviderClass",
            "metadata": {"name": self.class, "namespace": self.namespace},
            "spec": {"provider": PROVIDER_AZURE, "parameters": self.class_parameters()},
        })
    }

    /// Every object `connect` applies, in order.
    pub fn objects(&self) -> Vec<Value> {
        self.service_account_object()
            .into_iter()
            .chain([self.class_object()])
            .collect()
    }

    /// What the pod template needs: the label and ServiceAccount (workload identity), the CSI volume and its
    /// mount.
    pub fn pod_snippet(&self) -> String {
        let mut text = String::new();
        if let Some(service_account) = self.service_account() {
            text.push_str(&format!(
                "metadata:\n  labels:\n    {}: \"true\"\nspec:\n  serviceAccountName: {service_account}\n",
                wi::USE_LABEL
            ));
        } else {
            text.push_str("spec:\n");
        }
        let volume = wi::SECRETS_STORE_VOLUME_NAME;
        text.push_str(&format!(
            "  containers:\n    - name: app  # each container that reads the files\n      volumeMounts:\n        \
             - name: {volume}\n          mountPath: {path}\n          readOnly: true\n  volumes:\n    - name: \
             {volume}\n      csi:\n        driver: {DRIVER_NAME}\n        readOnly: true\n        \
             volumeAttributes:\n          {CTX_SECRET_PROVIDER_CLASS}: {class}\n",
            path = wi::DEFAULT_SECRETS_MOUNT_PATH,
            class = self.class,
        ));
        text
    }

    /// The Azure CLI commands that remain, filled in: the federated credential (workload identity) and one role
    /// assignment per role the objects need.
    pub fn azure_commands(&self, issuer: &Issuer) -> String {
        let mut lines = Vec::new();
        let mut step = 1;
        if let Some(service_account) = self.service_account() {
            lines.push(format!(
                "# {step}. Federate the identity with the ServiceAccount ({}):",
                match issuer {
                    Issuer::Known(_) => "the issuer is this cluster's",
                    Issuer::Unknown => "the cluster did not serve its issuer, so it is read from AKS",
                }
            ));
            lines.extend(azure::identity_lookup(&self.client_id));
            lines.extend(azure::federated_credential_command(
                issuer,
                &self.namespace,
                service_account,
            ));
            step += 1;
        } else {
            lines.push(format!(
                "# {step}. Assign the identity to the nodes' VM scale set (az vmss identity assign), if it is not yet."
            ));
            step += 1;
        }
        lines.push(format!(
            "# {step}. Let the identity read the vault (Azure RBAC; with access policies, grant get on each kind):"
        ));
        lines.push(azure::vault_id_lookup(&self.vault));
        let roles: BTreeSet<ObjectKind> = self.objects.iter().map(|object| object.kind).collect();
        for kind in roles {
            lines.push(azure::role_assignment_command(kind.reader_role(), &self.client_id));
        }
        lines.join("\n") + "\n"
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    DryRun,
}

/// `kind/name (namespace ns): ...`, one line per object.
pub fn summary_line(object: &Value, outcome: Outcome) -> String {
    let kind = object["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let done = match outcome {
        Outcome::Applied => format!("server-side applied (field manager {FIELD_MANAGER})"),
        Outcome::DryRun => "not written (--dry-run)".to_string(),
    };
    format!("{kind}/{name} (namespace {namespace}): {done}\n")
}

/// The text output: a line per object, the pod snippet, the commands.
pub fn render_text(connection: &Connection, objects: &[Value], outcome: Outcome, issuer: &Issuer) -> String {
    let mut text: String = objects.iter().map(|object| summary_line(object, outcome)).collect();
    text.push_str("\n# Add to the pod template: the label, the volume and its mount.\n");
    text.push_str(&connection.pod_snippet());
    text.push_str("\n# Then, in Azure (az CLI):\n");
    text.push_str(&connection.azure_commands(issuer));
    text
}

/// `-o yaml`: the objects as a YAML stream, then the snippet and the commands as comments, so the whole output
/// stays one valid YAML stream.
pub fn render_yaml(
    connection: &Connection,
    objects: &[Value],
    issuer: &Issuer,
) -> Result<String, serde_saphyr::SerializeError> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(object)?);
    }
    let comments = format!(
        "Add to the pod template: the label, the volume and its mount.\n{}\nThen, in Azure (az CLI):\n{}",
        connection.pod_snippet(),
        connection.azure_commands(issuer)
    );
    for line in comments.lines() {
        match line {
            "" => text.push_str("#\n"),
            comment if comment.starts_with('#') => text.push_str(&format!("{comment}\n")),
            line => text.push_str(&format!("# {line}\n")),
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
