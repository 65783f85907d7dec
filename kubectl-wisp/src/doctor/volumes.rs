//! The mount half of the path: each CSI volume's SecretProviderClass (in the pod's namespace, accepted by
//! wisp-agent's own parser), the CSIDriver's token requests, the driver's registration on the pod's node, the
//! wisp-agent pod there, and each volume's SecretProviderClassPodStatus. Pure.

use k8s_openapi::api::core::v1::Pod;
use wisp_shared::contract::secrets_store::{DRIVER_NAME, PROVIDER_AZURE};
use wisp_shared::contract::workload_identity::DEFAULT_AUDIENCE;

use super::observed::{NodeObserved, Observed, VolumeObserved};
use super::report::Check;

/// The checks of the volumes, the driver and the node, in the order a mount runs: classes, CSIDriver, node,
/// agent, then what each mount left (pod status).
pub fn checks(observed: &Observed) -> Vec<Check> {
    let classes: Vec<Check> = if observed.volumes.is_empty() {
        vec![Check::fail(
            "class",
            format!("the pod has no {DRIVER_NAME} volume, so nothing is mounted"),
            "add the volume and its mount that kubectl wisp connect prints to the pod template",
        )]
    } else {
        observed.volumes.iter().map(|volume| class(observed, volume)).collect()
    };
    let mut checks = classes.clone();
    checks.push(csi_driver(observed));
    checks.extend(node_checks(observed.node.as_ref()));
    for (volume, class) in observed.volumes.iter().zip(&classes) {
        checks.push(if class.is_ok() {
            pod_status(observed, volume)
        } else {
            Check::skip("pod-status", "nothing to mount until the class is fixed (see above)")
                .for_volume(&volume.volume)
        });
    }
    checks
}

fn class(observed: &Observed, volume: &VolumeObserved) -> Check {
    let namespace = observed.pod_namespace();
    let Some(name) = volume.class_name.as_deref() else {
        return Check::fail(
            "class",
            format!("volume {} has no volumeAttributes.secretProviderClass", volume.volume),
            "set it to the name of a SecretProviderClass in the pod's namespace",
        )
        .for_volume(&volume.volume);
    };
    let edit = format!("kubectl edit secretproviderclass {name} -n {namespace}");
    let check = match &volume.class {
        Err(e) => Check::unreadable("class", e),
        Ok(None) if !volume.elsewhere.is_empty() => Check::fail(
            "class",
            format!(
                "SecretProviderClass {name} is in namespace {}, not in the pod's namespace {namespace}; wisp-agent \
                 looks only in the pod's namespace",
                volume.elsewhere.join(", ")
            ),
            format!(
                "create it in {namespace} (kubectl get secretproviderclass {name} -n {} -o yaml, change \
                 metadata.namespace, kubectl apply -f -)",
                volume.elsewhere[0]
            ),
        ),
        Ok(None) => Check::fail(
            "class",
            format!("SecretProviderClass {namespace}/{name} does not exist"),
            format!("create it in the pod's namespace (kubectl wisp connect -n {namespace} --class {name} ...)"),
        ),
        Ok(Some(class)) if class.provider != PROVIDER_AZURE => Check::fail(
            "class",
            format!(
                "SecretProviderClass {namespace}/{name} has provider {:?}; wisp serves only provider \"azure\"",
                class.provider
            ),
            format!("set spec.provider: azure ({edit})"),
        ),
        Ok(Some(class)) if class.parameters.is_empty() => Check::fail(
            "class",
            format!("parameters not set in {namespace}/{name}"),
            format!("set spec.parameters ({edit})"),
        ),
        Ok(Some(_)) => {
            // As the agent reads them: the pod's volume attributes over the class's parameters.
            match volume.identity() {
                None | Some(Ok(_)) => Check::ok(
                    "class",
                    format!(
                        "SecretProviderClass {namespace}/{name} (volume {}) is in the pod's namespace and wisp-agent \
                         accepts its parameters",
                        volume.volume
                    ),
                ),
                Some(Err(e)) => Check::fail(
                    "class",
                    format!("SecretProviderClass {namespace}/{name}: {e}"),
                    format!("wisp-agent fails every mount of it until spec.parameters are fixed ({edit})"),
                ),
            }
        }
    };
    check.for_volume(&volume.volume)
}

fn csi_driver(observed: &Observed) -> Check {
    let upgrade = "upgrade wisp's chart with tokenRequests: [{audience: api://AzureADTokenExchange}] (its default)";
    match &observed.csi_driver {
        Err(e) => Check::unreadable("csi-driver", e),
        Ok(None) => Check::fail(
            "csi-driver",
            format!("CSIDriver {DRIVER_NAME} does not exist, so kubelet cannot mount the volume"),
            "install wisp's chart (agent.csiDriver.enabled=true)",
        ),
        Ok(Some(driver)) => {
            // kubelet's token is what workload identity exchanges; other identities need none.
            let has_audience = !observed.needs_workload_identity()
                || driver
                    .spec
                    .token_requests
                    .iter()
                    .flatten()
                    .any(|request| request.audience == DEFAULT_AUDIENCE);
            if !has_audience {
                Check::fail(
                    "csi-driver",
                    format!(
                        "CSIDriver {DRIVER_NAME} has no tokenRequests entry for {DEFAULT_AUDIENCE}, so kubelet sends \
                         wisp-agent no pod token (mounts fail with \"token for audience {DEFAULT_AUDIENCE} not found\")"
                    ),
                    upgrade,
                )
            } else if driver.spec.pod_info_on_mount != Some(true) {
                Check::fail(
                    "csi-driver",
                    format!("CSIDriver {DRIVER_NAME} has no podInfoOnMount: true, so kubelet does not name the pod"),
                    "upgrade wisp's chart (it sets podInfoOnMount: true)",
                )
            } else if observed.needs_workload_identity() {
                Check::ok(
                    "csi-driver",
                    format!("CSIDriver {DRIVER_NAME} requests pod tokens for {DEFAULT_AUDIENCE}"),
                )
            } else {
                Check::ok(
                    "csi-driver",
                    format!("CSIDriver {DRIVER_NAME} sends kubelet's pod information"),
                )
            }
        }
    }
}

fn node_checks(node: Option<&NodeObserved>) -> Vec<Check> {
    let Some(node) = node else {
        let reason = "the pod is not scheduled to a node yet";
        return vec![
            Check::skip("node-registration", reason),
            Check::skip("agent-pod", reason),
        ];
    };
    vec![registration(node), agent_pod(node)]
}

fn registration(node: &NodeObserved) -> Check {
    let name = &node.name;
    let registered = match &node.csi_node {
        Err(e) => return Check::unreadable("node-registration", e),
        Ok(csi_node) => csi_node
            .as_ref()
            .and_then(|csi_node| csi_node.spec.drivers.iter().find(|driver| driver.name == DRIVER_NAME))
            .is_some(),
    };
    if registered {
        Check::ok(
            "node-registration",
            format!("node {name} lists driver {DRIVER_NAME} (CSINode {name})"),
        )
    } else {
        Check::fail(
            "node-registration",
            format!(
                "node {name} does not list driver {DRIVER_NAME} (CSINode {name}), so kubelet cannot reach wisp-agent \
                 there"
            ),
            "check that wisp-agent runs on the node and logs \"registered with kubelet\"; its --registration-socket \
             must be under kubelet's root directory (chart value agent.kubeletRootDir)",
        )
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

fn agent_pod(node: &NodeObserved) -> Check {
    let name = &node.name;
    let pods = match &node.agent_pods {
        Err(e) => return Check::unreadable("agent-pod", e),
        Ok(pods) => pods,
    };
    let describe = |pod: &Pod| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        )
    };
    match (pods.iter().find(|pod| is_ready(pod)), pods.first()) {
        (Some(ready), _) => Check::ok(
            "agent-pod",
            format!("wisp-agent pod {} on node {name} is ready", describe(ready)),
        ),
        (None, Some(pod)) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            Check::fail(
                "agent-pod",
                format!("wisp-agent pod {} on node {name} is not ready", describe(pod)),
                format!(
                    "read why: kubectl describe pod {pod_name} -n {namespace}; kubectl logs {pod_name} -n {namespace}"
                ),
            )
        }
        (None, None) => Check::fail(
            "agent-pod",
            format!("no wisp-agent pod runs on node {name}"),
            "check the DaemonSet's nodeSelector and tolerations (kubectl describe daemonset wisp-agent -n <namespace>)",
        ),
    }
}

fn pod_status(observed: &Observed, volume: &VolumeObserved) -> Check {
    let namespace = observed.pod_namespace();
    let pod = observed.pod_name();
    let class = volume.class_name.as_deref().unwrap_or_default();
    // The driver's name for it.
    let name = format!("{pod}-{namespace}-{class}");
    let check = match &volume.pod_status {
        Err(e) => Check::unreadable("pod-status", e),
        Ok(None) => Check::fail(
            "pod-status",
            format!("no SecretProviderClassPodStatus {namespace}/{name}: the volume has not been mounted"),
            "the FailedMount events below say why",
        ),
        Ok(Some(status)) => {
            let objects = status.data["status"]["objects"].as_array().map_or(0, Vec::len);
            if volume.is_mounted(observed.pod.metadata.uid.as_deref()) {
                Check::ok(
                    "pod-status",
                    format!("SecretProviderClassPodStatus {namespace}/{name}: mounted, {objects} objects"),
                )
            } else {
                Check::fail(
                    "pod-status",
                    format!(
                        "SecretProviderClassPodStatus {namespace}/{name} does not say this pod's volume is mounted"
                    ),
                    "the FailedMount events below say why",
                )
            }
        }
    };
    check.for_volume(&volume.volume)
}

#[cfg(test)]
mod tests;
