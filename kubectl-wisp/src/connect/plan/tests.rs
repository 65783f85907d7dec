use pretty_assertions::assert_eq;

use super::*;

const CLIENT: &str = "a1b2c3d4-0000-4000-8000-000000000001";
const TENANT: &str = "72f988bf-0000-4000-8000-00000000aaaa";

fn secret(name: &str, alias: Option<&str>) -> VaultObject {
    VaultObject {
        kind: ObjectKind::Secret,
        name: name.into(),
        alias: alias.map(String::from),
    }
}

fn workload(service_account: &str) -> IdentityKind {
    IdentityKind::WorkloadIdentity {
        service_account: service_account.into(),
    }
}

fn connection(identity: IdentityKind, objects: Vec<VaultObject>) -> Result<Connection, PlanError> {
    Connection::new("shop", identity, CLIENT, TENANT, "shop-kv", objects, None)
}

/// A workload identity connection of `web` mounting one secret, with the given flags.
fn flags(
    namespace: &str,
    client_id: &str,
    tenant: &str,
    vault: &str,
    class: Option<&str>,
) -> Result<Connection, PlanError> {
    let objects = vec![secret("api-key", None)];
    Connection::new(namespace, workload("web"), client_id, tenant, vault, objects, class)
}

fn error(result: Result<Connection, PlanError>) -> String {
    let error = result.expect_err("refused");
    let mut text = error.to_string();
    if let Some(source) = std::error::Error::source(&error) {
        text.push_str(&format!(": {source}"));
    }
    text
}

#[test]
fn every_flag_is_checked_and_named() {
    assert_eq!(
        error(flags("Shop", CLIENT, TENANT, "shop-kv", None)),
        "namespace \"Shop\" is not a namespace name (lower-case letters, digits and '-', at most 63); pass -n NAME"
    );
    assert_eq!(
        error(connection(workload("Web"), vec![secret("api-key", None)])),
        "--service-account \"Web\" is not a ServiceAccount name (lower-case letters, digits, '-' and '.')"
    );
    assert_eq!(
        error(flags("shop", "web-identity", TENANT, "shop-kv", None)),
        "--client-id \"web-identity\" is not a client ID (a GUID); read it with: az identity show -g \
         <resource-group> -n <identity> --query clientId -o tsv"
    );
    assert_eq!(
        error(flags("shop", CLIENT, "contoso", "shop-kv", None)),
        "--tenant-id \"contoso\" is not a tenant (its GUID or a domain such as contoso.onmicrosoft.com); read it \
         with: az account show --query tenantId -o tsv"
    );
    assert_eq!(
        error(connection(workload("web"), Vec::new())),
        "nothing to mount: give at least one --secret NAME[=FILE], --key NAME or --cert NAME"
    );
    assert_eq!(
        error(connection(workload("web"), vec![secret("api_key", None)])),
        "--secret \"api_key\" is not a Key Vault object name (1 to 127 letters, digits and '-')"
    );
    assert_eq!(
        error(connection(workload("web"), vec![secret("api-key", Some(" "))])),
        "--secret api-key= : the file name is empty; write --secret NAME or --secret NAME=FILE"
    );
    assert_eq!(
        error(flags("shop", CLIENT, TENANT, "k", None)),
        "wisp-agent would refuse this SecretProviderClass (check --vault and the file names): Invalid vault name: \
         \"k\", must be between 3 and 24 chars; set parameters.keyvaultName to the name of the Key Vault, not its URL"
    );
    assert_eq!(
        error(flags("shop", CLIENT, TENANT, "shop-kv", Some("Shop"))),
        "--class \"Shop\" is not a SecretProviderClass name (lower-case letters, digits, '-' and '.'); pass --class \
         NAME"
    );
    assert_eq!(
        error(connection(
            workload("web"),
            vec![secret("a", Some("x")), secret("b", Some("x"))]
        )),
        "wisp-agent would refuse this SecretProviderClass (check --vault and the file names): objects array index 1 \
         (objectName \"b\"): file name \"x\" is also used by objects array index 0; give one of them a different \
         objectAlias"
    );
}

#[test]
fn file_names_are_quoted_whatever_they_hold() {
    let connection = connection(workload("web"), vec![secret("api-key", Some("a: b #c"))]).unwrap();
    assert_eq!(
        connection.class_object()["spec"]["parameters"]["objects"],
        "array:\n  - |\n    objectName: api-key\n    objectType: secret\n    objectAlias: \"a: b #c\"\n"
    );
}

#[test]
fn the_node_managed_identity_needs_no_service_account_label_or_federation() {
    let connection = connection(IdentityKind::NodeManagedIdentity, vec![secret("api-key", None)]).unwrap();
    assert_eq!(connection.service_account_object(), None);
    assert_eq!(
        connection.objects(),
        vec![json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "wisp-shop-kv", "namespace": "shop"},
            "spec": {"provider": "azure", "parameters": {
                "usePodIdentity": "false",
                "useVMManagedIdentity": "true",
                "userAssignedIdentityID": CLIENT,
                "keyvaultName": "shop-kv",
                "tenantId": TENANT,
                "objects": "array:\n  - |\n    objectName: api-key\n    objectType: secret\n",
            }},
        })]
    );
    assert!(connection.pod_snippet().starts_with("spec:\n  containers:\n"));
    assert_eq!(
        connection.azure_commands(&Issuer::Unknown),
        format!(
            "# 1. Assign the identity to the nodes' VM scale set (az vmss identity assign), if it is not yet.\n\
             # 2. Let the identity read the vault (Azure RBAC; with access policies, grant get on each kind):\n\
             VAULT_ID=\"$(az keyvault show --name shop-kv --query id -o tsv)\"\n\
             az role assignment create --role \"Key Vault Secrets User\" --assignee {CLIENT} --scope \"$VAULT_ID\"\n"
        )
    );
}

#[test]
fn without_the_clusters_issuer_the_command_reads_it_from_aks() {
    let connection = connection(workload("web"), vec![secret("api-key", None)]).unwrap();
    let commands = connection.azure_commands(&Issuer::Unknown);
    assert!(commands.starts_with(
        "# 1. Federate the identity with the ServiceAccount (the cluster did not serve its issuer, so it is read \
         from AKS):\n"
    ));
    assert!(commands.contains(
        "  --issuer \"$(az aks show -g <resource-group> -n <cluster> --query oidcIssuerProfile.issuerUrl -o tsv)\" \\\n"
    ));
}
