use pretty_assertions::assert_eq;

use super::*;
use crate::doctor::observed::fixture;

/// The one line the fixture pod gets for a FailedMount event with wisp-agent's `message`.
fn explained(message: &str) -> String {
    let mut observed = fixture::healthy();
    // The mount never succeeded.
    observed.volumes[0].pod_status = Ok(None);
    observed.failed_mounts = Ok(vec![fixture::failed_mount(message)]);
    let checks = checks(&observed);
    assert_eq!(checks.len(), 1);
    checks[0].line()
}

const PREFIX: &str =
    "failed to mount secrets store objects for pod shop/web-1, err: SecretProviderClass shop/shop-kv: ";

#[test]
fn no_events_is_ok_and_unreadable_events_fail() {
    assert_eq!(checks(&fixture::healthy())[0].line(), "ok: no FailedMount events");
    let mut observed = fixture::healthy();
    observed.failed_mounts = Err("listing Events in shop: forbidden (HTTP 403)".into());
    assert!(checks(&observed)[0].failed());
}

#[test]
fn entra_errors_are_explained_with_their_fix() {
    let client = fixture::CLIENT_ID;
    assert_eq!(
        explained(&format!(
            "{PREFIX}Microsoft Entra ID refused a token for client ID {client} in tenant t (HTTP 400, invalid_request): \
             AADSTS700211: No matching federated identity record found for presented assertion issuer"
        )),
        format!(
            "FAIL: FailedMount (once, last 2026-12-02T10:00:00Z): AADSTS700211: Entra knows no federated credential \
             with the token's issuer {issuer} — create one with exactly that issuer (trailing slash included): az \
             identity federated-credential create --name wisp-shop-web --identity-name \"$(az identity list --query \
             \"[?clientId=='{client}'].name | [0]\" -o tsv)\" --resource-group \"$(az identity list --query \
             \"[?clientId=='{client}'].resourceGroup | [0]\" -o tsv)\" --issuer {issuer} --subject \
             system:serviceaccount:shop:web --audience api://AzureADTokenExchange",
            issuer = fixture::ISSUER
        )
    );
    assert_eq!(
        explained(&format!(
            "{PREFIX}... AADSTS700016: Application with identifier '{client}' was not found"
        )),
        format!(
            "FAIL: FailedMount (once, last 2026-12-02T10:00:00Z): AADSTS700016: client ID {client} is no application \
             in tenant {tenant} — set the SecretProviderClass's clientID (and the ServiceAccount's client-id) to the \
             identity's client ID (az identity show -g <resource-group> -n <identity> --query clientId -o tsv) and \
             tenantId to its tenant",
            tenant = fixture::TENANT
        )
    );
    assert!(explained("AADSTS7000215: Invalid client secret provided.").contains(
        "AADSTS7000215: the client secret in the nodePublishSecretRef Secret is wrong or expired — put a valid secret"
    ));
    assert!(explained("AADSTS90002: Tenant 'x' not found.").contains(&format!(
        "AADSTS90002: tenant {} does not exist — set the SecretProviderClass's tenantId",
        fixture::TENANT
    )));
}

#[test]
fn key_vault_errors_are_explained_with_their_fix() {
    let vault_error = |status: &str, object: &str| {
        format!(
            "{PREFIX}failed to get objectType:{object}, objectName:tls, objectVersion:: Key Vault \
             shop-kv.vault.azure.net answered HTTP {status} Whatever: details"
        )
    };
    let at = "FAIL: FailedMount (once, last 2026-12-02T10:00:00Z): ";
    assert_eq!(
        explained(&vault_error("403", "cert")),
        format!(
            "{at}Key Vault shop-kv forbids client ID {client} to read cert tls (HTTP 403) — az role assignment create \
             --role \"Key Vault Certificate User\" --assignee {client} --scope \"$(az keyvault show --name shop-kv \
             --query id -o tsv)\"",
            client = fixture::CLIENT_ID
        )
    );
    assert_eq!(
        explained(&vault_error("401", "secret")),
        format!(
            "{at}Key Vault shop-kv refused the token (HTTP 401): it is for another tenant or cloud — set the \
             SecretProviderClass's tenantId to the vault's tenant (az keyvault show --name shop-kv --query \
             properties.tenantId -o tsv)"
        )
    );
    assert!(explained(&vault_error("404", "key")).starts_with(&format!(
        "{at}Key Vault shop-kv has no key tls (HTTP 404) — correct objectName"
    )));
    assert!(
        explained(&vault_error("429", "secret"))
            .starts_with(&format!("{at}Key Vault shop-kv throttled the reads (HTTP 429) — raise"))
    );
}

#[test]
fn wisps_own_errors_are_explained() {
    assert_eq!(
        explained(&format!(
            "{PREFIX}token for audience api://AzureADTokenExchange not found"
        )),
        "FAIL: FailedMount (once, last 2026-12-02T10:00:00Z): kubelet sent wisp-agent no pod token for \
         api://AzureADTokenExchange — add {audience: api://AzureADTokenExchange} to the CSIDriver's tokenRequests \
         (wisp chart value tokenRequests)"
    );
    assert_eq!(
        explained(
            "failed to get secretproviderclass shop/other, error: secretproviderclasses.secrets-store.csi.x-k8s.io \
             \"other\" not found; the SecretProviderClass must be in the pod's namespace \"shop\""
        ),
        "FAIL: FailedMount (once, last 2026-12-02T10:00:00Z): SecretProviderClass other is not in the pod's \
         namespace shop; wisp-agent looks only there — create it in namespace shop"
    );
    assert!(
        explained("something new").ends_with(
            "desc = something new — see the README's Troubleshooting and the wisp-agent log on the pod's node"
        )
    );
}

#[test]
fn repeated_messages_are_explained_once_newest_first() {
    let mut observed = fixture::healthy();
    let mut older = fixture::failed_mount("AADSTS90002: old");
    older.last_timestamp = None;
    older.metadata.name = Some("web-1.0".into());
    let newer = fixture::failed_mount("AADSTS90002: old");
    let other = fixture::failed_mount("token for audience api://AzureADTokenExchange not found");
    observed.failed_mounts = Ok(vec![older, newer, other]);
    let checks = checks(&observed);
    assert_eq!(checks.len(), 2);
}

#[test]
fn failures_of_a_volume_mounted_since_are_history() {
    let mut observed = fixture::healthy();
    observed.failed_mounts = Ok(vec![fixture::failed_mount("AADSTS700213: not yet federated")]);
    assert_eq!(
        checks(&observed)[0].line(),
        "ok: an earlier FailedMount of volume kv (once, last 2026-12-02T10:00:00Z) is resolved: it is mounted now"
    );
    // A status an earlier pod of the same name left does not count.
    if let Ok(Some(status)) = &mut observed.volumes[0].pod_status {
        status.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "web-1".into(),
            uid: "an-earlier-pod".into(),
            ..Default::default()
        }]);
    }
    assert!(checks(&observed)[0].failed());
}
