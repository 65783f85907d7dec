use pretty_assertions::assert_eq;

use super::*;
use crate::doctor::observed::{ClassObserved, fixture};

fn lines(observed: &Observed) -> Vec<String> {
    checks(observed).iter().map(|check| check.line()).collect()
}

#[test]
fn a_healthy_pod_passes_every_volume_check() {
    assert_eq!(
        lines(&fixture::healthy()),
        [
            "ok: SecretProviderClass shop/shop-kv (volume kv) is in the pod's namespace and wisp-agent accepts its \
             parameters",
            "ok: CSIDriver secrets-store.csi.k8s.io requests pod tokens for api://AzureADTokenExchange",
            "ok: node node-1 lists driver secrets-store.csi.k8s.io (CSINode node-1)",
            "ok: wisp-agent pod wisp-system/wisp-agent-a on node node-1 is ready",
            "ok: SecretProviderClassPodStatus shop/web-1-shop-shop-kv: mounted, 1 objects",
        ]
    );
}

#[test]
fn volume_attributes_are_read_over_the_class_as_the_agent_does() {
    let mut observed = fixture::healthy();
    observed.volumes[0].attributes.insert("keyvaultName".into(), "k".into());
    assert_eq!(
        lines(&observed)[0],
        "FAIL: SecretProviderClass shop/shop-kv: Invalid vault name: \"k\", must be between 3 and 24 chars; set \
         parameters.keyvaultName to the name of the Key Vault, not its URL — wisp-agent fails every mount of it \
         until spec.parameters are fixed (kubectl edit secretproviderclass shop-kv -n shop)"
    );
    assert_eq!(
        lines(&observed)[4],
        "skip: nothing to mount until the class is fixed (see above)"
    );
}

#[test]
fn another_provider_a_missing_class_and_no_volume_fail() {
    let mut observed = fixture::healthy();
    observed.volumes[0].class = Ok(Some(ClassObserved {
        provider: "vault".into(),
        parameters: fixture::class_parameters(),
    }));
    assert_eq!(
        lines(&observed)[0],
        "FAIL: SecretProviderClass shop/shop-kv has provider \"vault\"; wisp serves only provider \"azure\" — set \
         spec.provider: azure (kubectl edit secretproviderclass shop-kv -n shop)"
    );
    observed.volumes[0].class = Ok(None);
    assert_eq!(
        lines(&observed)[0],
        "FAIL: SecretProviderClass shop/shop-kv does not exist — create it in the pod's namespace (kubectl wisp \
         connect -n shop --class shop-kv ...)"
    );
    observed.volumes.clear();
    assert_eq!(
        lines(&observed)[0],
        "FAIL: the pod has no secrets-store.csi.k8s.io volume, so nothing is mounted — add the volume and its mount \
         that kubectl wisp connect prints to the pod template"
    );
}

#[test]
fn an_unscheduled_pod_skips_the_node_checks() {
    let mut observed = fixture::healthy();
    observed.node = None;
    assert_eq!(
        lines(&observed)[2..4],
        [
            "skip: the pod is not scheduled to a node yet",
            "skip: the pod is not scheduled to a node yet",
        ]
    );
}

#[test]
fn an_agent_that_is_not_ready_or_absent_fails() {
    let mut observed = fixture::healthy();
    let node = observed.node.as_mut().unwrap();
    let agent = &mut node.agent_pods.as_mut().unwrap()[0];
    agent.status = None;
    assert_eq!(
        lines(&observed)[3],
        "FAIL: wisp-agent pod wisp-system/wisp-agent-a on node node-1 is not ready — read why: kubectl describe pod \
         wisp-agent-a -n wisp-system; kubectl logs wisp-agent-a -n wisp-system"
    );
    observed.node.as_mut().unwrap().agent_pods = Ok(Vec::new());
    assert_eq!(
        lines(&observed)[3],
        "FAIL: no wisp-agent pod runs on node node-1 — check the DaemonSet's nodeSelector and tolerations (kubectl \
         describe daemonset wisp-agent -n <namespace>)"
    );
}

#[test]
fn a_driver_without_pod_info_fails() {
    let mut observed = fixture::healthy();
    if let Ok(Some(driver)) = &mut observed.csi_driver {
        driver.spec.pod_info_on_mount = None;
    }
    assert_eq!(
        lines(&observed)[1],
        "FAIL: CSIDriver secrets-store.csi.k8s.io has no podInfoOnMount: true, so kubelet does not name the pod — \
         upgrade wisp's chart (it sets podInfoOnMount: true)"
    );
}

#[test]
fn without_workload_identity_the_driver_needs_no_token_request() {
    let mut observed = fixture::healthy();
    observed.pod.metadata.labels = None;
    observed.volumes[0]
        .attributes
        .insert("useVMManagedIdentity".into(), "true".into());
    if let Ok(Some(driver)) = &mut observed.csi_driver {
        driver.spec.token_requests = None;
    }
    assert_eq!(
        lines(&observed)[1],
        "ok: CSIDriver secrets-store.csi.k8s.io sends kubelet's pod information"
    );
}
