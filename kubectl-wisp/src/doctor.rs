//! `kubectl wisp doctor`: for a pod (or each pod of a deployment), one check per step of the path its secrets
//! take, in that order: [`identity`] (label, webhook, ServiceAccount, token audience, federated credential), then
//! [`volumes`] (classes, CSIDriver, node registration, agent, pod status), then [`events`] (FailedMount errors
//! explained). [`gather`] reads the cluster into an [`observed::Observed`]; the checks are pure functions of it;
//! [`report`] renders them.

pub mod events;
pub mod gather;
pub mod identity;
pub mod observed;
pub mod report;
pub mod target;
pub mod volumes;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::ListParams;

use crate::cluster::{Cluster, ClusterError};
use observed::Observed;
use report::{Check, Report, Section};
use target::Target;

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("pod {namespace}/{name} does not exist; list the pods with kubectl get pods -n {namespace}")]
    PodNotFound { namespace: String, name: String },
    #[error("deployment {namespace}/{name} does not exist; list them with kubectl get deployments -n {namespace}")]
    DeploymentNotFound { namespace: String, name: String },
}

/// Checks `target` in `namespace`.
pub async fn run(cluster: &Cluster, target: &Target, namespace: &str) -> Result<Report, DoctorError> {
    let sections = match target {
        Target::Pod(name) => {
            let pod: Pod = cluster
                .get(namespace, name)
                .await?
                .ok_or_else(|| DoctorError::PodNotFound {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                })?;
            vec![section(&gather::observe(cluster, pod).await)]
        }
        Target::Deployment(name) => {
            let deployment: Deployment =
                cluster
                    .get(namespace, name)
                    .await?
                    .ok_or_else(|| DoctorError::DeploymentNotFound {
                        namespace: namespace.to_string(),
                        name: name.clone(),
                    })?;
            let pods = pods_of(cluster, &deployment).await?;
            if pods.is_empty() {
                vec![Section {
                    kind: "deployment",
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    node: None,
                    checks: vec![Check::fail(
                        "pods",
                        format!("deployment {namespace}/{name} has no pods"),
                        format!(
                            "kubectl describe deployment {name} -n {namespace} (its ReplicaSet's events say why no \
                             pod was created)"
                        ),
                    )],
                }]
            } else {
                let mut sections = Vec::with_capacity(pods.len());
                for pod in pods {
                    sections.push(section(&gather::observe(cluster, pod).await));
                }
                sections
            }
        }
    };
    Ok(Report::new(sections))
}

/// Every check of one pod, in the order of the path.
pub fn section(observed: &Observed) -> Section {
    let mut checks = identity::checks(observed);
    checks.extend(volumes::checks(observed));
    checks.extend(events::checks(observed));
    Section {
        kind: "pod",
        namespace: observed.pod_namespace().to_string(),
        name: observed.pod_name().to_string(),
        node: observed.node.as_ref().map(|node| node.name.clone()),
        checks,
    }
}

fn owned_by(meta: &ObjectMeta, owner: &ObjectMeta) -> bool {
    let owner_uid = owner.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|reference| Some(reference.uid.as_str()) == owner_uid)
}

/// The deployment's pods: those of its ReplicaSets, by owner, ordered by name.
async fn pods_of(cluster: &Cluster, deployment: &Deployment) -> Result<Vec<Pod>, ClusterError> {
    let namespace = deployment.metadata.namespace.as_deref().unwrap_or_default();
    let selector = deployment
        .spec
        .as_ref()
        .map(|spec| selector_text(&spec.selector))
        .unwrap_or_default();
    let params = ListParams::default().labels(&selector);
    let replica_sets: Vec<ReplicaSet> = cluster.list(Some(namespace), &params).await?;
    let owners: BTreeSet<String> = replica_sets
        .iter()
        .filter(|replica_set| owned_by(&replica_set.metadata, &deployment.metadata))
        .filter_map(|replica_set| replica_set.metadata.uid.clone())
        .collect();
    let pods: Vec<Pod> = cluster.list(Some(namespace), &params).await?;
    let mut pods: Vec<Pod> = pods
        .into_iter()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|reference| owners.contains(&reference.uid))
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(pods)
}

/// A label selector in the API's `labelSelector` syntax.
fn selector_text(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        let key = &expression.key;
        terms.push(match expression.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        });
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn selectors_in_the_apis_syntax() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_text(&selector), "app=web,tier in (a,b),!canary");
    }
}
