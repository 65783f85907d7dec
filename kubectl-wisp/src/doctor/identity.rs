//! The identity half of the path: the opt-in label, the webhook's mutation (or why it did not happen), the
//! ServiceAccount's client ID, the projected token's audience, and the federated credential Entra needs. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ServiceAccountTokenProjection};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use wisp_shared::contract::deploy::MUTATING_WEBHOOK_NAME;
use wisp_shared::contract::workload_identity as wi;

use super::observed::Observed;
use super::report::Check;
use crate::azure;
use crate::names;

pub fn checks(observed: &Observed) -> Vec<Check> {
    if !observed.needs_workload_identity() {
        return vec![Check::skip(
            "workload-identity",
            format!(
                "workload identity: the pod has no {} label and its classes mount with the nodes' managed identity \
                 or a service principal",
                wi::USE_LABEL
            ),
        )];
    }
    let label = label(observed);
    let webhook = if label.is_ok() {
        webhook(observed)
    } else {
        Check::skip("webhook", "the webhook mutates only pods with the label (see above)")
    };
    let audience = token_audience(observed);
    vec![
        label,
        webhook,
        service_account(observed),
        audience,
        federated_credential(observed),
    ]
}

fn label(observed: &Observed) -> Check {
    let name = observed.pod_name();
    let value = observed
        .pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(wi::USE_LABEL));
    let fix = format!(
        "add the label {}: \"true\" to the pod template's metadata.labels and recreate the pod",
        wi::USE_LABEL
    );
    match value.map(String::as_str) {
        Some("true") => Check::ok("label", format!("label {}: \"true\"", wi::USE_LABEL)),
        Some(other) => Check::fail(
            "label",
            format!(
                "pod {name} has label {}: {other:?}, which is not \"true\"",
                wi::USE_LABEL
            ),
            fix,
        ),
        None => Check::fail(
            "label",
            format!(
                "pod {name} has no label {}: \"true\", so the webhook does not inject workload identity",
                wi::USE_LABEL
            ),
            fix,
        ),
    }
}

fn containers(observed: &Observed) -> impl Iterator<Item = &Container> {
    let spec = observed.pod.spec.as_ref();
    spec.map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten())
}

/// The projected token the webhook adds, if the pod has it.
fn token_projection(observed: &Observed) -> Option<&ServiceAccountTokenProjection> {
    let volumes = observed.pod.spec.as_ref()?.volumes.as_ref()?;
    let volume = volumes.iter().find(|v| v.name == wi::TOKEN_VOLUME_NAME)?;
    volume
        .projected
        .as_ref()?
        .sources
        .as_ref()?
        .iter()
        .find_map(|source| source.service_account_token.as_ref())
}

fn webhook(observed: &Observed) -> Check {
    let has_env = containers(observed).any(|c| {
        c.env
            .iter()
            .flatten()
            .any(|env| env.name == wi::ENV_FEDERATED_TOKEN_FILE)
    });
    let has_token = token_projection(observed).is_some();
    if has_env && has_token {
        return Check::ok(
            "webhook",
            format!(
                "the webhook mutated the pod: {} and the {} volume",
                wi::ENV_FEDERATED_TOKEN_FILE,
                wi::TOKEN_VOLUME_NAME
            ),
        );
    }
    let namespace = observed.pod_namespace();
    let missing_env = format!("no {} env", wi::ENV_FEDERATED_TOKEN_FILE);
    let missing_token = format!("no {} volume", wi::TOKEN_VOLUME_NAME);
    let missing: Vec<&str> = [
        (!has_env).then_some(missing_env.as_str()),
        (!has_token).then_some(missing_token.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let not_mutated = format!("the webhook did not mutate the pod ({})", missing.join(", "));
    let configurations = match &observed.webhook_configurations {
        Ok(configurations) => configurations,
        Err(e) => return Check::unreadable("webhook", e),
    };
    let selecting: Vec<(&str, Option<&LabelSelector>)> = configurations
        .iter()
        .flat_map(|configuration| {
            let name = configuration.metadata.name.as_deref().unwrap_or_default();
            configuration
                .webhooks
                .iter()
                .flatten()
                .filter(|webhook| webhook.name == MUTATING_WEBHOOK_NAME)
                .map(move |webhook| (name, webhook.namespace_selector.as_ref()))
        })
        .collect();
    if selecting.is_empty() {
        return Check::fail(
            "webhook",
            format!("{not_mutated}: no MutatingWebhookConfiguration has the webhook {MUTATING_WEBHOOK_NAME}"),
            "install wisp (helm install wisp helm/wisp -n wisp-system ...), then recreate the pod",
        );
    }
    let namespace_labels = namespace_labels(observed);
    match selecting
        .iter()
        .find(|(_, selector)| selector.is_none_or(|s| selects(s, &namespace_labels)))
    {
        None => Check::fail(
            "webhook",
            format!(
                "{not_mutated}: MutatingWebhookConfiguration {}'s namespaceSelector excludes namespace {namespace}",
                selecting[0].0
            ),
            "run the workload in another namespace, or change the chart value webhook.mutatingWebhookNamespaceSelector",
        ),
        Some((configuration, _)) => Check::fail(
            "webhook",
            format!(
                "{not_mutated}, though MutatingWebhookConfiguration {configuration} selects it: the pod was created \
                 before the webhook was ready or before it had the label"
            ),
            format!(
                "recreate the pod (kubectl delete pod {} -n {namespace}; its controller creates it again)",
                observed.pod_name()
            ),
        ),
    }
}

/// The namespace's labels, with the name label the API server always sets (also when it could not be read).
fn namespace_labels(observed: &Observed) -> BTreeMap<String, String> {
    let mut labels = observed
        .namespace
        .as_ref()
        .ok()
        .and_then(|ns| ns.as_ref()?.metadata.labels.clone())
        .unwrap_or_default();
    labels
        .entry("kubernetes.io/metadata.name".to_string())
        .or_insert_with(|| observed.pod_namespace().to_string());
    labels
}

/// Whether a label selector matches `labels`, as the API server evaluates a webhook's namespaceSelector.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let equal = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions = selector.match_expressions.iter().flatten().all(|expression| {
        let value = labels.get(&expression.key);
        let listed = |v: &String| expression.values.iter().flatten().any(|candidate| candidate == v);
        match expression.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => value.is_none_or(|v| !listed(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    equal && expressions
}

fn service_account(observed: &Observed) -> Check {
    let namespace = observed.pod_namespace();
    let name = observed.service_account_name();
    let annotate = format!(
        "kubectl annotate serviceaccount {name} -n {namespace} {}=<CLIENT_ID> (or kubectl wisp connect), then \
         recreate the pod",
        wi::CLIENT_ID_ANNOTATION
    );
    match &observed.service_account {
        Err(e) => Check::unreadable("service-account", e),
        Ok(None) => Check::fail(
            "service-account",
            format!("ServiceAccount {namespace}/{name} does not exist"),
            format!("kubectl create serviceaccount {name} -n {namespace}, then {annotate}"),
        ),
        Ok(Some(_)) => match observed.service_account_annotation(wi::CLIENT_ID_ANNOTATION) {
            None => Check::fail(
                "service-account",
                format!(
                    "ServiceAccount {namespace}/{name} has no {} annotation, so the pod gets no AZURE_CLIENT_ID",
                    wi::CLIENT_ID_ANNOTATION
                ),
                annotate,
            ),
            Some(client_id) => {
                let tenant = observed
                    .service_account_annotation(wi::TENANT_ID_ANNOTATION)
                    .map(|tenant| format!(", tenant-id {tenant}"))
                    .unwrap_or_default();
                Check::ok(
                    "service-account",
                    format!("ServiceAccount {namespace}/{name} has client-id {client_id}{tenant}"),
                )
            }
        },
    }
}

fn token_audience(observed: &Observed) -> Check {
    let Some(token) = token_projection(observed) else {
        return Check::skip(
            "token-audience",
            format!(
                "the pod has no {} volume to check (see the webhook above)",
                wi::TOKEN_VOLUME_NAME
            ),
        );
    };
    let expiration = token
        .expiration_seconds
        .map(|seconds| format!(", expires after {seconds} s"))
        .unwrap_or_default();
    match token.audience.as_deref() {
        Some(wi::DEFAULT_AUDIENCE) => Check::ok(
            "token-audience",
            format!(
                "projected token {} has audience {}{expiration}",
                wi::TOKEN_VOLUME_NAME,
                wi::DEFAULT_AUDIENCE
            ),
        ),
        audience => Check::fail(
            "token-audience",
            format!(
                "projected token {} has audience {:?}, but Entra's token exchange expects {}",
                wi::TOKEN_VOLUME_NAME,
                audience.unwrap_or(""),
                wi::DEFAULT_AUDIENCE
            ),
            format!(
                "run wisp-webhook with --audience {} (the default) and recreate the pod",
                wi::DEFAULT_AUDIENCE
            ),
        ),
    }
}

fn federated_credential(observed: &Observed) -> Check {
    let namespace = observed.pod_namespace();
    let subject = azure::federated_subject(namespace, observed.service_account_name());
    match &observed.issuer {
        Err(e) => Check::fail(
            "federated-credential",
            format!("the cluster does not say its service account issuer: {e}"),
            "enable the OIDC issuer (az aks update -g <resource-group> -n <cluster> --enable-oidc-issuer) so that \
             Entra can verify the pod's token",
        ),
        Ok(issuer) => {
            let list = match observed.service_account_annotation(wi::CLIENT_ID_ANNOTATION) {
                Some(client_id) if names::is_guid(client_id) => azure::federated_credential_list_command(client_id),
                _ => "az identity federated-credential list --identity-name <identity> --resource-group <group> -o \
                      table"
                    .to_string(),
            };
            Check::ok(
                "federated-credential",
                format!(
                    "Entra needs a federated credential with issuer {issuer}, subject {subject}, audience {}; \
                     compare: {list}",
                    wi::DEFAULT_AUDIENCE
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests;
