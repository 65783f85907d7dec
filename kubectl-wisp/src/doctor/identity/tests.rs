use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use pretty_assertions::assert_eq;

use super::*;
use crate::doctor::observed::fixture;

fn lines(observed: &Observed) -> Vec<String> {
    checks(observed).iter().map(Check::line).collect()
}

#[test]
fn a_healthy_pod_passes_every_identity_check() {
    assert!(
        checks(&fixture::healthy()).iter().all(Check::is_ok),
        "{:?}",
        lines(&fixture::healthy())
    );
}

#[test]
fn a_label_that_is_not_exactly_true_fails() {
    let mut observed = fixture::healthy();
    observed.pod.metadata.labels = Some([(wi::USE_LABEL.to_string(), "True".to_string())].into());
    assert_eq!(
        lines(&observed)[..2],
        [
            "FAIL: pod web-1 has label azure.workload.identity/use: \"True\", which is not \"true\" — add the label \
             azure.workload.identity/use: \"true\" to the pod template's metadata.labels and recreate the pod",
            "skip: the webhook mutates only pods with the label (see above)",
        ]
    );
}

fn unmutated() -> Observed {
    let mut observed = fixture::healthy();
    let spec = observed.pod.spec.as_mut().unwrap();
    spec.containers[0].env = None;
    spec.volumes
        .as_mut()
        .unwrap()
        .retain(|v| v.name != wi::TOKEN_VOLUME_NAME);
    observed
}

#[test]
fn a_selected_pod_left_alone_was_created_before_the_webhook() {
    assert_eq!(
        lines(&unmutated())[1],
        "FAIL: the webhook did not mutate the pod (no AZURE_FEDERATED_TOKEN_FILE env, no azure-identity-token \
         volume), though MutatingWebhookConfiguration wisp-webhook selects it: the pod was created before the \
         webhook was ready or before it had the label — recreate the pod (kubectl delete pod web-1 -n shop; its \
         controller creates it again)"
    );
}

#[test]
fn unreadable_webhook_configurations_say_so() {
    let mut observed = unmutated();
    observed.webhook_configurations = Err("listing MutatingWebhookConfigurations: forbidden (HTTP 403)".into());
    assert_eq!(
        lines(&observed)[1],
        "FAIL: cannot check: listing MutatingWebhookConfigurations: forbidden (HTTP 403) — run doctor as a user who \
         may read it (kubectl auth can-i get <resource>)"
    );
}

#[test]
fn namespace_selectors_match_as_the_api_server_does() {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/metadata.name".to_string(), "shop".to_string()),
        ("team".to_string(), "a".to_string()),
    ]
    .into();
    let expression = |operator: &str, values: Option<Vec<&str>>| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: operator.into(),
            values: values.map(|v| v.into_iter().map(String::from).collect()),
        }]),
    };
    assert!(selects(&expression("In", Some(vec!["a", "b"])), &labels));
    assert!(!selects(&expression("NotIn", Some(vec!["a"])), &labels));
    assert!(selects(&expression("Exists", None), &labels));
    assert!(!selects(&expression("DoesNotExist", None), &labels));
    assert!(!selects(&expression("Unknown", None), &labels));
    let by_label = LabelSelector {
        match_labels: Some([("team".to_string(), "b".to_string())].into()),
        match_expressions: None,
    };
    assert!(!selects(&by_label, &labels));
    assert!(selects(&LabelSelector::default(), &labels));
}

#[test]
fn a_token_for_another_audience_fails() {
    let mut observed = fixture::healthy();
    let volumes = observed.pod.spec.as_mut().unwrap().volumes.as_mut().unwrap();
    let token = volumes[1].projected.as_mut().unwrap().sources.as_mut().unwrap()[0]
        .service_account_token
        .as_mut()
        .unwrap();
    token.audience = Some("api://other".into());
    assert_eq!(
        lines(&observed)[3],
        "FAIL: projected token azure-identity-token has audience \"api://other\", but Entra's token exchange expects \
         api://AzureADTokenExchange — run wisp-webhook with --audience api://AzureADTokenExchange (the default) and \
         recreate the pod"
    );
}

#[test]
fn a_missing_service_account_and_an_unknown_issuer_fail() {
    let mut observed = fixture::healthy();
    observed.service_account = Ok(None);
    observed.issuer = Err(
        "reading the service account issuer (/.well-known/openid-configuration): the server \
                           could not find the requested resource (HTTP 404)"
            .into(),
    );
    let lines = lines(&observed);
    assert_eq!(
        lines[2],
        "FAIL: ServiceAccount shop/web does not exist — kubectl create serviceaccount web -n shop, then kubectl \
         annotate serviceaccount web -n shop azure.workload.identity/client-id=<CLIENT_ID> (or kubectl wisp \
         connect), then recreate the pod"
    );
    assert_eq!(
        lines[4],
        "FAIL: the cluster does not say its service account issuer: reading the service account issuer \
         (/.well-known/openid-configuration): the server could not find the requested resource (HTTP 404) — enable \
         the OIDC issuer (az aks update -g <resource-group> -n <cluster> --enable-oidc-issuer) so that Entra can \
         verify the pod's token"
    );
}

#[test]
fn a_pod_mounting_with_the_nodes_identity_needs_no_workload_identity() {
    let mut observed = fixture::healthy();
    observed.pod.metadata.labels = None;
    let mut parameters = fixture::class_parameters();
    parameters.remove("clientID");
    parameters.insert("useVMManagedIdentity".into(), "true".into());
    observed.volumes[0].class = Ok(Some(crate::doctor::observed::ClassObserved {
        provider: "azure".into(),
        parameters: parameters.clone(),
    }));
    assert_eq!(
        lines(&observed),
        [
            "skip: workload identity: the pod has no azure.workload.identity/use label and its classes mount with the \
          nodes' managed identity or a service principal"
        ]
    );
    // The volume attributes can switch a class to workload identity.
    observed.volumes[0]
        .attributes
        .insert("useVMManagedIdentity".into(), "false".into());
    observed.volumes[0]
        .attributes
        .insert("clientID".into(), fixture::CLIENT_ID.into());
    assert_eq!(lines(&observed).len(), 5);
}
