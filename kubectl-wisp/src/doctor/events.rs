//! The pod's last `FailedMount` events, each explained: the Microsoft Entra (`AADSTS…`) or Key Vault (HTTP 401,
//! 403, 404, 429) error inside wisp-agent's message, or wisp's own token-audience and namespace errors, with the
//! fix filled in from what doctor knows (issuer, subject, client ID, vault, object). Pure.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Event;
use wisp_shared::contract::provider_azure as pa;
use wisp_shared::contract::workload_identity::{self as wi, DEFAULT_AUDIENCE};

use super::observed::Observed;
use super::report::Check;
use crate::azure::{self, Issuer, ObjectKind};
use crate::names;

/// How many distinct failures are explained, newest first.
const MOST_EXPLAINED: usize = 3;

pub fn checks(observed: &Observed) -> Vec<Check> {
    let events = match &observed.failed_mounts {
        Err(e) => return vec![Check::unreadable("mount-events", e)],
        Ok(events) => events,
    };
    if events.is_empty() {
        return vec![Check::ok("mount-events", "no FailedMount events")];
    }
    let mut newest_first: Vec<&Event> = events.iter().collect();
    newest_first.sort_by_key(|event| std::cmp::Reverse(last_seen(event)));
    let mut seen = BTreeSet::new();
    newest_first
        .into_iter()
        .filter(|event| seen.insert(event.message.clone().unwrap_or_default()))
        .take(MOST_EXPLAINED)
        .map(|event| {
            let message = event.message.as_deref().unwrap_or_default();
            let when = last_seen(event).map(|t| format!(", last {t}")).unwrap_or_default();
            let times = event
                .count
                .filter(|count| *count > 1)
                .map(|count| format!("{count} times"))
                .unwrap_or_else(|| "once".into());
            // A volume mounted since (kubelet retries) makes its earlier failures history: a failed refresh
            // never becomes an event, so a failure after the first mount cannot be hiding behind the status.
            let volume = failed_volume(message);
            let pod_uid = observed.pod.metadata.uid.as_deref();
            if let Some(volume) = volume
                && observed
                    .volumes
                    .iter()
                    .any(|v| v.volume == volume && v.is_mounted(pod_uid))
            {
                return Check::ok(
                    "mount-events",
                    format!("an earlier FailedMount of volume {volume} ({times}{when}) is resolved: it is mounted now"),
                );
            }
            let explanation = explain(observed, message);
            Check::fail(
                "mount-events",
                format!("FailedMount ({times}{when}): {}", explanation.problem),
                explanation.fix,
            )
        })
        .collect()
}

fn last_seen(event: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

struct Explanation {
    problem: String,
    fix: String,
}

/// What doctor knows that the fixes need, read from the pod, its ServiceAccount and the failed volume's class.
struct Known<'a> {
    namespace: &'a str,
    service_account: &'a str,
    issuer: Issuer,
    /// The identity the mount used (the class's `clientID`, else the ServiceAccount's), if it is a GUID: it is
    /// printed into commands.
    client_id: Option<&'a str>,
    tenant: Option<&'a str>,
    vault: Option<&'a str>,
}

impl<'a> Known<'a> {
    fn new(observed: &'a Observed, message: &str) -> Self {
        let volume_name = failed_volume(message);
        let parameters = observed
            .volumes
            .iter()
            .find(|volume| Some(volume.volume.as_str()) == volume_name)
            .or(observed.volumes.first())
            .and_then(|volume| volume.class.as_ref().ok()?.as_ref())
            .map(|class| &class.parameters);
        let parameter = |key: &str| {
            parameters
                .and_then(|p| p.get(key))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let client_id = parameter(pa::CLIENT_ID)
            .or_else(|| parameter(pa::USER_ASSIGNED_IDENTITY_ID))
            .or_else(|| observed.service_account_annotation(wi::CLIENT_ID_ANNOTATION))
            .filter(|id| names::is_guid(id));
        Self {
            namespace: observed.pod_namespace(),
            service_account: observed.service_account_name(),
            issuer: match &observed.issuer {
                Ok(issuer) => Issuer::Known(issuer.clone()),
                Err(_) => Issuer::Unknown,
            },
            client_id,
            tenant: parameter(pa::TENANT_ID).or_else(|| parameter(pa::TENANT_ID_LEGACY)),
            vault: parameter(pa::KEYVAULT_NAME),
        }
    }

    fn subject(&self) -> String {
        azure::federated_subject(self.namespace, self.service_account)
    }

    fn create_federated_credential(&self) -> String {
        azure::federated_credential_line(&self.issuer, self.namespace, self.service_account, self.client_id)
    }

    fn client(&self) -> &str {
        self.client_id.unwrap_or("<client-id>")
    }

    fn vault(&self) -> &str {
        self.vault.unwrap_or("<vault>")
    }
}

/// The volume of kubelet's message: `MountVolume.SetUp failed for volume "<name>" : rpc error: ...`.
fn failed_volume(message: &str) -> Option<&str> {
    between(message, "for volume \"", "\"")
}

/// The text between `start` and the next `end`.
fn between<'m>(message: &'m str, start: &str, end: &str) -> Option<&'m str> {
    let rest = &message[message.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// The object a Key Vault error is about: wisp-agent writes `objectType:<type>, objectName:<name>, ...`.
fn failed_object(message: &str) -> Option<(ObjectKind, &str)> {
    let kind = ObjectKind::from_object_type(between(message, "objectType:", ",")?)?;
    Some((kind, between(message, "objectName:", ",")?))
}

fn explain(observed: &Observed, message: &str) -> Explanation {
    let known = Known::new(observed, message);
    let explanation = |problem: String, fix: String| Explanation { problem, fix };
    let issuer = match &known.issuer {
        Issuer::Known(issuer) => issuer.as_str(),
        Issuer::Unknown => "<the cluster's issuer>",
    };
    if message.contains("AADSTS700213") {
        return explanation(
            format!(
                "AADSTS700213: Entra found no federated credential of client ID {} for the pod's token (issuer \
                 {issuer}, subject {}, audience {DEFAULT_AUDIENCE})",
                known.client(),
                known.subject()
            ),
            known.create_federated_credential(),
        );
    }
    if message.contains("AADSTS700211") {
        return explanation(
            format!("AADSTS700211: Entra knows no federated credential with the token's issuer {issuer}"),
            format!(
                "create one with exactly that issuer (trailing slash included): {}",
                known.create_federated_credential()
            ),
        );
    }
    if message.contains("AADSTS700016") {
        return explanation(
            format!(
                "AADSTS700016: client ID {} is no application in tenant {}",
                known.client(),
                known.tenant.unwrap_or("<tenant>")
            ),
            "set the SecretProviderClass's clientID (and the ServiceAccount's client-id) to the identity's client ID \
             (az identity show -g <resource-group> -n <identity> --query clientId -o tsv) and tenantId to its tenant"
                .to_string(),
        );
    }
    if message.contains("AADSTS7000215") {
        return explanation(
            "AADSTS7000215: the client secret in the nodePublishSecretRef Secret is wrong or expired".to_string(),
            format!(
                "put a valid secret into its clientsecret key (az ad app credential reset --id {})",
                known.client()
            ),
        );
    }
    if message.contains("AADSTS90002") {
        return explanation(
            format!(
                "AADSTS90002: tenant {} does not exist",
                known.tenant.unwrap_or("<tenant>")
            ),
            "set the SecretProviderClass's tenantId to the vault's tenant (az account show --query tenantId -o tsv)"
                .to_string(),
        );
    }
    if message.contains(&format!("token for audience {DEFAULT_AUDIENCE} not found"))
        || message.contains("service account tokens not found")
    {
        return explanation(
            format!("kubelet sent wisp-agent no pod token for {DEFAULT_AUDIENCE}"),
            format!(
                "add {{audience: {DEFAULT_AUDIENCE}}} to the CSIDriver's tokenRequests (wisp chart value tokenRequests)"
            ),
        );
    }
    if message.contains("the SecretProviderClass must be in the pod's namespace") {
        let class = between(message, "secretproviderclasses.secrets-store.csi.x-k8s.io \"", "\"").unwrap_or("<class>");
        return explanation(
            format!(
                "SecretProviderClass {class} is not in the pod's namespace {}; wisp-agent looks only there",
                known.namespace
            ),
            format!("create it in namespace {}", known.namespace),
        );
    }
    if let Some(status) = between(message, "answered HTTP ", " ") {
        let object = failed_object(message);
        let what = object
            .map(|(kind, name)| format!("{} {name}", kind.as_str()))
            .unwrap_or_else(|| "the object".to_string());
        let vault = known.vault();
        match status {
            "401" => {
                return explanation(
                    format!("Key Vault {vault} refused the token (HTTP 401): it is for another tenant or cloud"),
                    format!(
                        "set the SecretProviderClass's tenantId to the vault's tenant (az keyvault show --name {} \
                         --query properties.tenantId -o tsv)",
                        azure::shell_word(vault)
                    ),
                );
            }
            "403" => {
                let role = object.map_or(ObjectKind::Secret, |(kind, _)| kind).reader_role();
                return explanation(
                    format!(
                        "Key Vault {vault} forbids client ID {} to read {what} (HTTP 403)",
                        known.client()
                    ),
                    azure::role_assignment_line(role, known.client(), vault),
                );
            }
            "404" => {
                return explanation(
                    format!("Key Vault {vault} has no {what} (HTTP 404)"),
                    "correct objectName (and objectVersion) in the SecretProviderClass, or create the object in the \
                     vault"
                        .to_string(),
                );
            }
            "429" => {
                return explanation(
                    format!("Key Vault {vault} throttled the reads (HTTP 429)"),
                    "raise the chart's rotationPollInterval, lower --max-parallel-fetches, or spread the objects over \
                     vaults"
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    explanation(
        message.trim().to_string(),
        "see the README's Troubleshooting and the wisp-agent log on the pod's node".to_string(),
    )
}

#[cfg(test)]
mod tests;
