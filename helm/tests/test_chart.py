"""Tests of the wisp Helm chart: render and lint it offline with Helm's own Go SDK (helm-python-sdk), validate every
rendered object strictly against the Kubernetes 1.33 schemas (kubernetes-validate), pin the values the
compatibility contract depends on (issue 5) to exact expected objects, and evaluate the CEL of wisp-sync's
ValidatingAdmissionPolicies against admission requests (cel-python)."""

from __future__ import annotations

import copy
import pathlib
import re

import celpy
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "wisp"
CONTRACT_RS = REPO / "shared" / "src" / "contract.rs"

KUBERNETES_VERSION = "1.33.0"
RELEASE = "wisp"
NAMESPACE = "wisp-system"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CHART_VERSION = "0.1.0"
APP_VERSION = "0.1.0"

DEFAULT_VALUES = {"azureTenantID": TENANT}

# Every value that changes the rendering, set away from its default.
CUSTOM_VALUES = {
    "azureTenantID": TENANT,
    "azureEnvironment": "AzureUSGovernmentCloud",
    "logLevel": "debug",
    "imagePullSecrets": [{"name": "regcred"}],
    "syncSecret": {"enabled": True},
    "enableSecretRotation": False,
    "rotationPollInterval": "1h30m",
    "tokenRequests": [
        {"audience": "api://AzureADTokenExchange"},
        {"audience": "api://AKSIdentityBinding", "expirationSeconds": 3600},
    ],
    "webhook": {
        "replicaCount": 3,
        "image": {"repository": "registry.example/wisp-webhook", "tag": "v9.9.9", "pullPolicy": "Always"},
        "tlsMinVersion": "1.2",
        "audience": "api://custom",
        "proxyImage": "registry.example/proxy:v1",
        "proxyInitImage": "registry.example/proxy-init:v1",
        "certRotation": {"enabled": False},
        "certSecretName": "wisp-webhook-cert-manager",
        "caBundle": "Q0EgUEVN",
        "failurePolicy": "Ignore",
        "timeoutSeconds": 5,
        "mutatingWebhookAnnotations": {"cert-manager.io/inject-ca-from": "wisp-system/wisp-webhook"},
        "mutatingWebhookNamespaceSelector": {
            "matchLabels": {"team": "payments"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}],
        },
        "podDisruptionBudget": {"enabled": False},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}
                    ]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "webhook"}},
            }
        ],
        "podLabels": {"team": "platform"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "extraArgs": ["--extra=1"],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    },
    "agent": {
        "image": {"repository": "registry.example/wisp-agent", "tag": "v9.9.9", "pullPolicy": "Always"},
        "kubeletRootDir": "/var/lib/k0s/kubelet",
        "cloudName": "AzureChinaCloud",
        "constructPEMChain": False,
        "writeCertAndKeyInSeparateFiles": True,
        "providerEndpoint": {"enabled": True},
        "mountMode": "directory",
        "metricsPort": 18898,
        "healthPort": 19808,
        "hostNetwork": False,
        "tolerations": [{"operator": "Exists"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["virtual-kubelet"]}]}
                    ]
                }
            }
        },
        "podLabels": {"team": "platform"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "extraArgs": ["--extra=2"],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    },
}


DROP_IN_VALUES = {
    "webhook": {"enabled": False},
    "agent": {"csiDriver": {"enabled": False}, "providerEndpoint": {"enabled": True}},
}

VALUE_SETS = {
    "default": DEFAULT_VALUES,
    "custom": CUSTOM_VALUES,
    "drop-in": DROP_IN_VALUES,
    "webhook-only": {**DEFAULT_VALUES, "agent": {"enabled": False}},
    "secret-sync": {**DEFAULT_VALUES, "secretSync": {"enabled": True}},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart, values, namespace=NAMESPACE):
    """All objects the chart renders, in template order, NOTES.txt excluded."""
    manifests = chart.render(values=values, name=RELEASE, namespace=namespace, is_install=True)
    objects = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(manifests[path]) if doc is not None)
    return objects


def by_kind_name(objects):
    indexed = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in indexed, f"rendered twice: {key}"
        indexed[key] = obj
    return indexed


def crd_objects(chart):
    return [yaml.safe_load(crd["data"]) for crd in chart.crds]


def labels(component):
    return {
        "helm.sh/chart": f"wisp-{CHART_VERSION}",
        "app.kubernetes.io/name": "wisp",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": APP_VERSION,
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/component": component,
    }


def selector(component):
    return {
        "app.kubernetes.io/name": "wisp",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


# ---------------------------------------------------------------------------------------------------------------
# Lint and schema validation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_strict_reports_only_the_missing_icon(value_set):
    report = helm.lint(
        CHART_DIR, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version="v" + KUBERNETES_VERSION
    )
    assert report == {
        "total_charts_linted": 1,
        "messages": [{"severity": 1, "path": "Chart.yaml", "error": "icon is recommended"}],
        "errors": [],
    }


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes_1_33_strict(chart, value_set):
    objects = render(chart, VALUE_SETS[value_set])
    assert objects
    for obj in objects:
        # Raises ValidationError (unknown or mistyped field) or SchemaNotFoundError (a kind 1.33 does not have).
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == "1.33"


def test_crds_are_valid_apiextensions_v1_strict(chart):
    crds = crd_objects(chart)
    assert sorted(crd["metadata"]["name"] for crd in crds) == [
        "secretproviderclasses.secrets-store.csi.x-k8s.io",
        "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
    ]
    for crd in crds:
        assert kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True) == "1.33"


def test_strict_validation_catches_a_misspelled_field(chart):
    # Guards the validation test above: it must fail on an object Kubernetes would reject.
    deployment = copy.deepcopy(by_kind_name(render(chart, DEFAULT_VALUES))[("Deployment", "wisp-webhook")])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    assert "imagePullPolicyy" in caught.value.message


# ---------------------------------------------------------------------------------------------------------------
# What gets installed
# ---------------------------------------------------------------------------------------------------------------


def inventory(objects):
    return sorted((obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) for obj in objects)


def test_default_values_install_these_objects(chart):
    assert inventory(render(chart, DEFAULT_VALUES)) == [
        ("CSIDriver", "", "secrets-store.csi.k8s.io"),
        ("ClusterRole", "", "wisp-agent"),
        ("ClusterRole", "", "wisp-webhook"),
        ("ClusterRoleBinding", "", "wisp-agent"),
        ("ClusterRoleBinding", "", "wisp-webhook"),
        ("DaemonSet", NAMESPACE, "wisp-agent"),
        ("Deployment", NAMESPACE, "wisp-webhook"),
        ("MutatingWebhookConfiguration", "", "wisp-webhook"),
        ("PodDisruptionBudget", NAMESPACE, "wisp-webhook"),
        ("Role", NAMESPACE, "wisp-webhook"),
        ("RoleBinding", NAMESPACE, "wisp-webhook"),
        ("Secret", NAMESPACE, "wisp-webhook-server-cert"),
        ("Service", NAMESPACE, "wisp-webhook"),
        ("ServiceAccount", NAMESPACE, "wisp-agent"),
        ("ServiceAccount", NAMESPACE, "wisp-webhook"),
    ]


def test_custom_values_install_these_objects(chart):
    # Secret sync adds its ClusterRole; external certificates drop the cert Secret and its Role; no PDB.
    assert inventory(render(chart, CUSTOM_VALUES)) == [
        ("CSIDriver", "", "secrets-store.csi.k8s.io"),
        ("ClusterRole", "", "wisp-agent"),
        ("ClusterRole", "", "wisp-agent-syncsecret"),
        ("ClusterRole", "", "wisp-webhook"),
        ("ClusterRoleBinding", "", "wisp-agent"),
        ("ClusterRoleBinding", "", "wisp-agent-syncsecret"),
        ("ClusterRoleBinding", "", "wisp-webhook"),
        ("DaemonSet", NAMESPACE, "wisp-agent"),
        ("Deployment", NAMESPACE, "wisp-webhook"),
        ("MutatingWebhookConfiguration", "", "wisp-webhook"),
        ("Service", NAMESPACE, "wisp-webhook"),
        ("ServiceAccount", NAMESPACE, "wisp-agent"),
        ("ServiceAccount", NAMESPACE, "wisp-webhook"),
    ]


def test_webhook_only_install(chart):
    objects = render(chart, {**DEFAULT_VALUES, "agent": {"enabled": False}})
    assert inventory(objects) == [
        ("ClusterRole", "", "wisp-webhook"),
        ("ClusterRoleBinding", "", "wisp-webhook"),
        ("Deployment", NAMESPACE, "wisp-webhook"),
        ("MutatingWebhookConfiguration", "", "wisp-webhook"),
        ("PodDisruptionBudget", NAMESPACE, "wisp-webhook"),
        ("Role", NAMESPACE, "wisp-webhook"),
        ("RoleBinding", NAMESPACE, "wisp-webhook"),
        ("Secret", NAMESPACE, "wisp-webhook-server-cert"),
        ("Service", NAMESPACE, "wisp-webhook"),
        ("ServiceAccount", NAMESPACE, "wisp-webhook"),
    ]


def test_agent_only_install_needs_no_tenant(chart):
    objects = render(chart, {"webhook": {"enabled": False}})
    assert inventory(objects) == [
        ("CSIDriver", "", "secrets-store.csi.k8s.io"),
        ("ClusterRole", "", "wisp-agent"),
        ("ClusterRoleBinding", "", "wisp-agent"),
        ("DaemonSet", NAMESPACE, "wisp-agent"),
        ("ServiceAccount", NAMESPACE, "wisp-agent"),
    ]


def test_drop_in_provider_mode_leaves_the_upstream_driver_alone(chart):
    objects = render(chart, DROP_IN_VALUES)
    # No CSIDriver object and no kubelet registration: the upstream driver owns secrets-store.csi.k8s.io.
    assert inventory(objects) == [
        ("ClusterRole", "", "wisp-agent"),
        ("ClusterRoleBinding", "", "wisp-agent"),
        ("DaemonSet", NAMESPACE, "wisp-agent"),
        ("ServiceAccount", NAMESPACE, "wisp-agent"),
    ]
    for obj in objects:
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == "1.33"
    pod = by_kind_name(objects)[("DaemonSet", "wisp-agent")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == [
        "--endpoint=unix:///var/lib/kubelet/plugins/wisp-agent/csi.sock",
        "--nodeid=$(KUBE_NODE_NAME)",
        "--drivername=secrets-store.csi.k8s.io",
        "--registration-socket=",
        "--cloud-name=AzurePublicCloud",
        "--construct-pem-chain=true",
        "--write-cert-and-key-in-separate-files=false",
        "--enable-secret-rotation=true",
        "--rotation-poll-interval=2m",
        "--sync-secrets=false",
        "--provider-endpoint=unix:///var/run/secrets-store-csi-providers/azure.sock",
        "--mount-mode=tmpfs",
        "--state-dir=/run/wisp-agent",
        "--metrics-addr=:8898",
        "--health-addr=:9808",
        "--log-level=info",
    ]
    assert container["volumeMounts"] == [
        {"name": "plugin-dir", "mountPath": "/var/lib/kubelet/plugins/wisp-agent"},
        {"name": "mountpoint-dir", "mountPath": "/var/lib/kubelet/pods", "mountPropagation": "Bidirectional"},
        {"name": "providers-dir", "mountPath": "/var/run/secrets-store-csi-providers"},
        {"name": "state-dir", "mountPath": "/run/wisp-agent"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert [volume["name"] for volume in pod["volumes"]] == ["plugin-dir", "mountpoint-dir", "providers-dir", "state-dir", "tmp"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_carries_the_chart_labels(chart, value_set):
    for obj in render(chart, VALUE_SETS[value_set]):
        name = obj["metadata"]["name"]
        if "agent" in name or obj["kind"] == "CSIDriver":
            component = "agent"
        elif name.startswith("wisp-sync") or name.startswith("secretsyncs."):
            component = "sync"
        else:
            component = "webhook"
        assert obj["metadata"]["labels"] == labels(component), obj["metadata"]["name"]


def test_missing_tenant_id_fails_with_upstreams_message(chart):
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, {})
    assert re.fullmatch(
        r"execution error at \(wisp/templates/webhook-deployment\.yaml:\d+:\d+\): "
        r"A valid \.Values\.azureTenantID entry required!",
        str(caught.value),
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"syncSecrets": True}, "at '': additional properties 'syncSecrets' not allowed"),
        ({"enableSecretRotation": "yes"}, "at '/enableSecretRotation': got string, want boolean"),
        ({"rotationPollInterval": "2 minutes"}, "at '/rotationPollInterval': '2 minutes' does not match pattern"),
        ({"agent": {"mountMode": "bind"}}, "at '/agent/mountMode': value must be one of 'tmpfs', 'directory'"),
        ({"webhook": {"tlsMinVersion": "1.1"}}, "at '/webhook/tlsMinVersion': value must be one of '1.2', '1.3'"),
        ({"webhook": {"timeoutSeconds": 31}}, "at '/webhook/timeoutSeconds': maximum: got 31, want 30"),
    ],
    ids=["typo", "bool", "duration", "mount-mode", "tls", "timeout"],
)
def test_values_schema_rejects_bad_values(chart, values, message):
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, {**DEFAULT_VALUES, **values})
    assert message in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Webhook
# ---------------------------------------------------------------------------------------------------------------

WEBHOOK_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def expected_webhook_container(**overrides):
    container = {
        "name": "webhook",
        "image": f"wisp-webhook:{APP_VERSION}",
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "--tls-min-version=1.3",
            "--port=9443",
            "--health-addr=:9440",
            "--metrics-addr=:8095",
            "--log-level=info",
            "--cert-rotation=true",
        ],
        "env": [
            {"name": "AZURE_TENANT_ID", "value": TENANT},
            {"name": "AZURE_ENVIRONMENT", "value": "AzurePublicCloud"},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [
            {"name": "webhook-server", "containerPort": 9443, "protocol": "TCP"},
            {"name": "healthz", "containerPort": 9440, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8095, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "healthz"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "healthz"},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "20Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": WEBHOOK_SECURITY_CONTEXT,
    }
    container.update(overrides)
    return container


def test_webhook_deployment_default(chart):
    deployment = by_kind_name(render(chart, DEFAULT_VALUES))[("Deployment", "wisp-webhook")]
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"] == {
        "replicas": 2,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": selector("webhook")},
        "template": {
            "metadata": {"labels": selector("webhook")},
            "spec": {
                "serviceAccountName": "wisp-webhook",
                "priorityClassName": "system-cluster-critical",
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                # With cert rotation the certificate comes from the Secret through the API: no volume.
                "containers": [expected_webhook_container()],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": selector("webhook")},
                                },
                            }
                        ]
                    }
                },
            },
        },
    }


def test_webhook_deployment_custom(chart):
    deployment = by_kind_name(render(chart, CUSTOM_VALUES))[("Deployment", "wisp-webhook")]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]
    assert pod["metadata"] == {
        "labels": {**selector("webhook"), "team": "platform"},
        "annotations": {"prometheus.io/scrape": "true"},
    }
    assert pod["spec"]["containers"] == [
        expected_webhook_container(
            image="registry.example/wisp-webhook:v9.9.9",
            imagePullPolicy="Always",
            args=[
                "--webhook-cert-dir=/certs",
                "--tls-min-version=1.2",
                "--port=9443",
                "--health-addr=:9440",
                "--metrics-addr=:8095",
                "--log-level=debug",
                "--cert-rotation=false",
                "--audience=api://custom",
                "--extra=1",
            ],
            volumeMounts=[{"name": "cert", "mountPath": "/certs", "readOnly": True}],
            env=[
                {"name": "AZURE_TENANT_ID", "value": TENANT},
                {"name": "AZURE_ENVIRONMENT", "value": "AzureUSGovernmentCloud"},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "PROXY_IMAGE", "value": "registry.example/proxy:v1"},
                {"name": "PROXY_INIT_IMAGE", "value": "registry.example/proxy-init:v1"},
                {"name": "RUST_BACKTRACE", "value": "1"},
            ],
        )
    ]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["volumes"] == [
        {"name": "cert", "secret": {"secretName": "wisp-webhook-cert-manager", "defaultMode": 420}}
    ]
    assert pod["spec"]["tolerations"] == CUSTOM_VALUES["webhook"]["tolerations"]
    assert pod["spec"]["affinity"] == CUSTOM_VALUES["webhook"]["affinity"]
    assert pod["spec"]["topologySpreadConstraints"] == CUSTOM_VALUES["webhook"]["topologySpreadConstraints"]


def test_webhook_service_maps_443_to_the_webhook_port(chart):
    service = by_kind_name(render(chart, DEFAULT_VALUES))[("Service", "wisp-webhook")]
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": selector("webhook"),
        "ports": [{"name": "https", "port": 443, "targetPort": "webhook-server", "protocol": "TCP"}],
    }


def test_webhook_pod_disruption_budget(chart):
    pdb = by_kind_name(render(chart, DEFAULT_VALUES))[("PodDisruptionBudget", "wisp-webhook")]
    assert pdb["metadata"]["namespace"] == NAMESPACE
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector("webhook")}}


def expected_webhook(namespace, **overrides):
    webhook = {
        "name": "mutation.azure-workload-identity.io",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {"name": "wisp-webhook", "namespace": namespace, "path": "/mutate-v1-pod", "port": 443}
        },
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",
        "sideEffects": "None",
        "timeoutSeconds": 10,
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [namespace]}]
        },
        "objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
    }
    webhook.update(overrides)
    return webhook


def test_mutating_webhook_configuration_default(chart):
    mwc = by_kind_name(render(chart, DEFAULT_VALUES))[("MutatingWebhookConfiguration", "wisp-webhook")]
    assert "annotations" not in mwc["metadata"]
    assert mwc["webhooks"] == [expected_webhook(NAMESPACE)]


def test_mutating_webhook_configuration_excludes_the_release_namespace(chart):
    objects = by_kind_name(render(chart, DEFAULT_VALUES, namespace="identity"))
    assert objects[("MutatingWebhookConfiguration", "wisp-webhook")]["webhooks"] == [expected_webhook("identity")]


def test_mutating_webhook_configuration_custom(chart):
    mwc = by_kind_name(render(chart, CUSTOM_VALUES))[("MutatingWebhookConfiguration", "wisp-webhook")]
    assert mwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "wisp-system/wisp-webhook"}
    # The user's selector is kept and the release namespace exclusion is appended to it.
    assert mwc["webhooks"] == [
        expected_webhook(
            NAMESPACE,
            clientConfig={
                "service": {"name": "wisp-webhook", "namespace": NAMESPACE, "path": "/mutate-v1-pod", "port": 443},
                "caBundle": "Q0EgUEVN",
            },
            failurePolicy="Ignore",
            timeoutSeconds=5,
            namespaceSelector={
                "matchLabels": {"team": "payments"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["prod"]},
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]},
                ],
            },
        )
    ]


def test_ca_bundle_is_not_rendered_when_the_webhook_manages_certificates(chart):
    values = {**DEFAULT_VALUES, "webhook": {"caBundle": "Q0EgUEVN"}}
    mwc = by_kind_name(render(chart, values))[("MutatingWebhookConfiguration", "wisp-webhook")]
    assert mwc["webhooks"][0]["clientConfig"] == {
        "service": {"name": "wisp-webhook", "namespace": NAMESPACE, "path": "/mutate-v1-pod", "port": 443}
    }


def test_webhook_rbac_with_cert_rotation(chart):
    objects = by_kind_name(render(chart, DEFAULT_VALUES))
    # Exactly what webhook/src/cert_rotation.rs calls: GET and a JSON PATCH of its own MutatingWebhookConfiguration;
    # GET, POST (create) and PUT (update) of its Secret.
    assert objects[("ClusterRole", "wisp-webhook")]["rules"] == [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["wisp-webhook"],
            "verbs": ["get", "patch"],
        },
    ]
    assert objects[("Role", "wisp-webhook")]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["wisp-webhook-server-cert"],
            "verbs": ["get", "update"],
        },
    ]
    subjects = [{"kind": "ServiceAccount", "name": "wisp-webhook", "namespace": NAMESPACE}]
    binding = objects[("ClusterRoleBinding", "wisp-webhook")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "wisp-webhook",
    }
    assert binding["subjects"] == subjects
    role_binding = objects[("RoleBinding", "wisp-webhook")]
    assert role_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "wisp-webhook"}
    assert role_binding["subjects"] == subjects
    assert objects[("Secret", "wisp-webhook-server-cert")].keys() == {"apiVersion", "kind", "metadata"}


def test_webhook_rbac_without_cert_rotation_only_reads_service_accounts(chart):
    objects = by_kind_name(render(chart, CUSTOM_VALUES))
    assert objects[("ClusterRole", "wisp-webhook")]["rules"] == [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch"]},
    ]


# ---------------------------------------------------------------------------------------------------------------
# Agent
# ---------------------------------------------------------------------------------------------------------------


def test_agent_daemonset_default(chart):
    daemonset = by_kind_name(render(chart, DEFAULT_VALUES))[("DaemonSet", "wisp-agent")]
    assert daemonset["metadata"]["namespace"] == NAMESPACE
    assert daemonset["spec"] == {
        "selector": {"matchLabels": selector("agent")},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": selector("agent")},
            "spec": {
                "serviceAccountName": "wisp-agent",
                "priorityClassName": "system-node-critical",
                "hostNetwork": True,
                "dnsPolicy": "ClusterFirstWithHostNet",
                "containers": [
                    {
                        "name": "agent",
                        "image": f"wisp-agent:{APP_VERSION}",
                        "imagePullPolicy": "IfNotPresent",
                        "args": [
                            "--endpoint=unix:///var/lib/kubelet/plugins/wisp-agent/csi.sock",
                            "--nodeid=$(KUBE_NODE_NAME)",
                            "--drivername=secrets-store.csi.k8s.io",
                            "--registration-socket=/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock",
                            "--cloud-name=AzurePublicCloud",
                            "--construct-pem-chain=true",
                            "--write-cert-and-key-in-separate-files=false",
                            "--enable-secret-rotation=true",
                            "--rotation-poll-interval=2m",
                            "--sync-secrets=false",
                            "--mount-mode=tmpfs",
                            "--state-dir=/run/wisp-agent",
                            "--metrics-addr=:8898",
                            "--health-addr=:9808",
                            "--log-level=info",
                        ],
                        "env": [
                            {
                                "name": "KUBE_NODE_NAME",
                                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
                            }
                        ],
                        "ports": [
                            {"name": "metrics", "containerPort": 8898, "protocol": "TCP"},
                            {"name": "healthz", "containerPort": 9808, "protocol": "TCP"},
                        ],
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "healthz"},
                            "initialDelaySeconds": 30,
                            "timeoutSeconds": 10,
                            "periodSeconds": 15,
                            "failureThreshold": 5,
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "100Mi"},
                            "limits": {"cpu": "200m", "memory": "200Mi"},
                        },
                        "securityContext": {"privileged": True, "readOnlyRootFilesystem": True},
                        "volumeMounts": [
                            {"name": "plugin-dir", "mountPath": "/var/lib/kubelet/plugins/wisp-agent"},
                            {"name": "registration-dir", "mountPath": "/var/lib/kubelet/plugins_registry"},
                            {
                                "name": "mountpoint-dir",
                                "mountPath": "/var/lib/kubelet/pods",
                                "mountPropagation": "Bidirectional",
                            },
                            {"name": "state-dir", "mountPath": "/run/wisp-agent"},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "plugin-dir",
                        "hostPath": {"path": "/var/lib/kubelet/plugins/wisp-agent", "type": "DirectoryOrCreate"},
                    },
                    {
                        "name": "registration-dir",
                        "hostPath": {"path": "/var/lib/kubelet/plugins_registry", "type": "Directory"},
                    },
                    {
                        "name": "mountpoint-dir",
                        "hostPath": {"path": "/var/lib/kubelet/pods", "type": "DirectoryOrCreate"},
                    },
                    {"name": "state-dir", "hostPath": {"path": "/run/wisp-agent", "type": "DirectoryOrCreate"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
                "nodeSelector": {"kubernetes.io/os": "linux"},
            },
        },
    }


def test_agent_daemonset_custom(chart):
    daemonset = by_kind_name(render(chart, CUSTOM_VALUES))[("DaemonSet", "wisp-agent")]
    pod = daemonset["spec"]["template"]
    assert pod["metadata"] == {
        "labels": {**selector("agent"), "team": "platform"},
        "annotations": {"prometheus.io/scrape": "true"},
    }
    spec = pod["spec"]
    assert spec["hostNetwork"] is False
    assert "dnsPolicy" not in spec
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["affinity"] == CUSTOM_VALUES["agent"]["affinity"]
    [container] = spec["containers"]
    assert container["image"] == "registry.example/wisp-agent:v9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == [
        "--endpoint=unix:///var/lib/k0s/kubelet/plugins/wisp-agent/csi.sock",
        "--nodeid=$(KUBE_NODE_NAME)",
        "--drivername=secrets-store.csi.k8s.io",
        "--registration-socket=/var/lib/k0s/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock",
        "--cloud-name=AzureChinaCloud",
        "--construct-pem-chain=false",
        "--write-cert-and-key-in-separate-files=true",
        "--enable-secret-rotation=false",
        "--rotation-poll-interval=1h30m",
        "--sync-secrets=true",
        "--provider-endpoint=unix:///var/run/secrets-store-csi-providers/azure.sock",
        "--mount-mode=directory",
        "--state-dir=/run/wisp-agent",
        "--metrics-addr=:18898",
        "--health-addr=:19808",
        "--log-level=debug",
        "--extra=2",
    ]
    assert container["env"][1:] == [{"name": "RUST_BACKTRACE", "value": "1"}]
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 18898, "protocol": "TCP"},
        {"name": "healthz", "containerPort": 19808, "protocol": "TCP"},
    ]
    assert container["volumeMounts"] == [
        {"name": "plugin-dir", "mountPath": "/var/lib/k0s/kubelet/plugins/wisp-agent"},
        {"name": "registration-dir", "mountPath": "/var/lib/k0s/kubelet/plugins_registry"},
        {"name": "mountpoint-dir", "mountPath": "/var/lib/k0s/kubelet/pods", "mountPropagation": "Bidirectional"},
        {"name": "providers-dir", "mountPath": "/var/run/secrets-store-csi-providers"},
        {"name": "state-dir", "mountPath": "/run/wisp-agent"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert spec["volumes"] == [
        {
            "name": "plugin-dir",
            "hostPath": {"path": "/var/lib/k0s/kubelet/plugins/wisp-agent", "type": "DirectoryOrCreate"},
        },
        {
            "name": "registration-dir",
            "hostPath": {"path": "/var/lib/k0s/kubelet/plugins_registry", "type": "Directory"},
        },
        {"name": "mountpoint-dir", "hostPath": {"path": "/var/lib/k0s/kubelet/pods", "type": "DirectoryOrCreate"}},
        {
            "name": "providers-dir",
            "hostPath": {"path": "/var/run/secrets-store-csi-providers", "type": "DirectoryOrCreate"},
        },
        {"name": "state-dir", "hostPath": {"path": "/run/wisp-agent", "type": "DirectoryOrCreate"}},
        {"name": "tmp", "emptyDir": {}},
    ]


def test_free_text_flag_values_are_quoted(chart):
    values = {**DEFAULT_VALUES, "webhook": {"audience": 'api://x: "y" #z'}, "agent": {"cloudName": "a: b"}}
    objects = by_kind_name(render(chart, values))
    webhook_args = objects[("Deployment", "wisp-webhook")]["spec"]["template"]["spec"]["containers"][0]["args"]
    agent_args = objects[("DaemonSet", "wisp-agent")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert webhook_args[-1] == '--audience=api://x: "y" #z'
    assert [arg for arg in agent_args if arg.startswith("--cloud-name=")] == ["--cloud-name=a: b"]


def test_agent_cloud_name_follows_azure_environment_when_unset(chart):
    values = {**DEFAULT_VALUES, "azureEnvironment": "AzureUSGovernmentCloud"}
    daemonset = by_kind_name(render(chart, values))[("DaemonSet", "wisp-agent")]
    args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [arg for arg in args if arg.startswith("--cloud-name=")] == ["--cloud-name=AzureUSGovernmentCloud"]


def test_csidriver_default(chart):
    driver = by_kind_name(render(chart, DEFAULT_VALUES))[("CSIDriver", "secrets-store.csi.k8s.io")]
    assert driver["apiVersion"] == "storage.k8s.io/v1"
    assert driver["spec"] == {
        "podInfoOnMount": True,
        "attachRequired": False,
        "volumeLifecycleModes": ["Ephemeral"],
        "requiresRepublish": True,
        "tokenRequests": [{"audience": "api://AzureADTokenExchange"}],
    }


def test_csidriver_custom_token_requests_and_rotation_off(chart):
    driver = by_kind_name(render(chart, CUSTOM_VALUES))[("CSIDriver", "secrets-store.csi.k8s.io")]
    assert driver["spec"] == {
        "podInfoOnMount": True,
        "attachRequired": False,
        "volumeLifecycleModes": ["Ephemeral"],
        "requiresRepublish": True,
        "tokenRequests": [
            {"audience": "api://AzureADTokenExchange"},
            {"audience": "api://AKSIdentityBinding", "expirationSeconds": 3600},
        ],
    }


AGENT_RULES = [
    {
        "apiGroups": ["secrets-store.csi.x-k8s.io"],
        "resources": ["secretproviderclasses"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["secrets-store.csi.x-k8s.io"],
        "resources": ["secretproviderclasspodstatuses"],
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
    },
    {
        "apiGroups": ["secrets-store.csi.x-k8s.io"],
        "resources": ["secretproviderclasspodstatuses/status"],
        "verbs": ["get", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["storage.k8s.io"],
        "resources": ["csidrivers"],
        "resourceNames": ["secrets-store.csi.k8s.io"],
        "verbs": ["get", "list", "watch"],
    },
]


def test_agent_rbac_default_has_no_secret_access(chart):
    objects = by_kind_name(render(chart, DEFAULT_VALUES))
    assert objects[("ClusterRole", "wisp-agent")]["rules"] == AGENT_RULES
    binding = objects[("ClusterRoleBinding", "wisp-agent")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "wisp-agent"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "wisp-agent", "namespace": NAMESPACE}]
    for obj in objects.values():
        for rule in obj.get("rules", []):
            assert "secrets" not in rule["resources"] or obj["metadata"]["name"] == "wisp-webhook"


def test_agent_rbac_with_secret_sync(chart):
    objects = by_kind_name(render(chart, CUSTOM_VALUES))
    assert objects[("ClusterRole", "wisp-agent")]["rules"] == AGENT_RULES
    assert objects[("ClusterRole", "wisp-agent-syncsecret")]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }
    ]
    binding = objects[("ClusterRoleBinding", "wisp-agent-syncsecret")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "wisp-agent-syncsecret",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "wisp-agent", "namespace": NAMESPACE}]


# ---------------------------------------------------------------------------------------------------------------
# CRDs: upstream's structural schemas (descriptions are documentation and are not compared)
# ---------------------------------------------------------------------------------------------------------------


def strip_descriptions(node):
    if isinstance(node, dict):
        return {key: strip_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
TYPE_META = {"apiVersion": STRING, "kind": STRING, "metadata": {"type": "object"}}

SPC_SCHEMA = {
    "type": "object",
    "properties": {
        **TYPE_META,
        "spec": {
            "type": "object",
            "properties": {
                "provider": STRING,
                "parameters": STRING_MAP,
                "secretObjects": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "secretName": STRING,
                            "type": STRING,
                            "labels": STRING_MAP,
                            "annotations": STRING_MAP,
                            "data": {
                                "type": "array",
                                "items": {"type": "object", "properties": {"objectName": STRING, "key": STRING}},
                            },
                        },
                    },
                },
            },
        },
        "status": {"type": "object"},
    },
}

SPCPS_SCHEMA = {
    "type": "object",
    "properties": {
        **TYPE_META,
        "status": {
            "type": "object",
            "properties": {
                "podName": STRING,
                "secretProviderClassName": STRING,
                "mounted": {"type": "boolean"},
                "targetPath": STRING,
                "objects": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"id": STRING, "version": STRING}},
                },
            },
        },
    },
}

DEPRECATION = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead."


@pytest.mark.parametrize(
    ("kind", "plural", "schema"),
    [
        ("SecretProviderClass", "secretproviderclasses", SPC_SCHEMA),
        ("SecretProviderClassPodStatus", "secretproviderclasspodstatuses", SPCPS_SCHEMA),
    ],
)
def test_crd_matches_upstream(chart, kind, plural, schema):
    crds = {crd["metadata"]["name"]: crd for crd in crd_objects(chart)}
    crd = strip_descriptions(crds[f"{plural}.secrets-store.csi.x-k8s.io"])
    assert crd == {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.secrets-store.csi.x-k8s.io"},
        "spec": {
            "group": "secrets-store.csi.x-k8s.io",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}},
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": False,
                    "deprecated": True,
                    "deprecationWarning": DEPRECATION,
                    "schema": {"openAPIV3Schema": schema},
                },
            ],
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Names the Rust programs rely on
# ---------------------------------------------------------------------------------------------------------------


def rust_constants():
    """`{(module, NAME): value}` for every `pub const NAME: &str` in shared/src/contract.rs."""
    constants = {}
    module = None
    for line in CONTRACT_RS.read_text().splitlines():
        if opened := re.fullmatch(r"pub mod (\w+) \{", line.strip()):
            module = opened.group(1)
        elif const := re.fullmatch(r'pub const ([A-Z0-9_]+): &str = "([^"]*)";', line.strip()):
            constants[(module, const.group(1))] = const.group(2)
    return constants


def test_chart_uses_the_names_in_the_shared_contract(chart):
    rust = rust_constants()
    deploy = {name: value for (module, name), value in rust.items() if module == "deploy"}
    assert deploy == {
        "WEBHOOK_SERVICE_NAME": "wisp-webhook",
        "WEBHOOK_CERT_SECRET_NAME": "wisp-webhook-server-cert",
        "MUTATING_WEBHOOK_CONFIGURATION_NAME": "wisp-webhook",
        "MUTATING_WEBHOOK_NAME": "mutation.azure-workload-identity.io",
        "WEBHOOK_PATH": "/mutate-v1-pod",
    }
    objects = by_kind_name(render(chart, DEFAULT_VALUES))
    mwc = objects[("MutatingWebhookConfiguration", deploy["MUTATING_WEBHOOK_CONFIGURATION_NAME"])]
    [webhook] = mwc["webhooks"]
    assert webhook["name"] == deploy["MUTATING_WEBHOOK_NAME"]
    assert webhook["clientConfig"]["service"]["name"] == deploy["WEBHOOK_SERVICE_NAME"]
    assert webhook["clientConfig"]["service"]["path"] == deploy["WEBHOOK_PATH"]
    assert webhook["objectSelector"] == {"matchLabels": {rust[("workload_identity", "USE_LABEL")]: "true"}}
    assert ("Service", deploy["WEBHOOK_SERVICE_NAME"]) in objects
    assert ("Secret", deploy["WEBHOOK_CERT_SECRET_NAME"]) in objects
    driver = objects[("CSIDriver", rust[("secrets_store", "DRIVER_NAME")])]
    assert driver["spec"]["tokenRequests"] == [{"audience": rust[("workload_identity", "DEFAULT_AUDIENCE")]}]
    assert {crd["spec"]["group"] for crd in crd_objects(chart)} == {rust[("secrets_store", "API_GROUP")]}


# ---------------------------------------------------------------------------------------------------------------
# Images (they cannot be built on this machine: no Docker engine; these checks keep them in step with the chart)
# ---------------------------------------------------------------------------------------------------------------


def dockerfile_final_stage(component):
    lines = (REPO / component / "Dockerfile").read_text().splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(index for index, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def test_webhook_image_runs_as_the_user_the_chart_requires(chart):
    assert dockerfile_final_stage("webhook") == [
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "COPY --from=builder /out/wisp-webhook /usr/local/bin/wisp-webhook",
        "USER 65532:65532",
        "EXPOSE 9443 9440 8095",
        'ENTRYPOINT ["/usr/local/bin/wisp-webhook"]',
    ]
    pod = by_kind_name(render(chart, DEFAULT_VALUES))[("Deployment", "wisp-webhook")]["spec"]["template"]["spec"]
    # The chart passes only args, so the image's ENTRYPOINT must be the binary.
    assert "command" not in pod["containers"][0]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (65532, 65532)
    assert [port["containerPort"] for port in pod["containers"][0]["ports"]] == [9443, 9440, 8095]


def test_agent_image_entrypoint_and_ports_match_the_chart(chart):
    assert dockerfile_final_stage("agent") == [
        "FROM gcr.io/distroless/cc-debian12",
        "COPY --from=builder /out/wisp-agent /usr/local/bin/wisp-agent",
        "ENV MALLOC_ARENA_MAX=2",
        "EXPOSE 8898 9808",
        'ENTRYPOINT ["/usr/local/bin/wisp-agent"]',
    ]
    pod = by_kind_name(render(chart, DEFAULT_VALUES))[("DaemonSet", "wisp-agent")]["spec"]["template"]["spec"]
    assert "command" not in pod["containers"][0]
    assert [port["containerPort"] for port in pod["containers"][0]["ports"]] == [8898, 9808]


# The agent's image is built with the workspace's `dist` profile (fat LTO, opt-level "s"): its resident code is what
# keeps a node's agent small.
@pytest.mark.parametrize(("component", "profile"), [("webhook", "release"), ("agent", "dist")])
def test_dockerfile_builds_the_binary_of_its_package(component, profile):
    text = (REPO / component / "Dockerfile").read_text()
    flag = "--release" if profile == "release" else f"--profile {profile}"
    assert f"cargo build {flag} --locked -p wisp-{component} --bin wisp-{component}" in text
    assert f"install -D -m 0755 target/{profile}/wisp-{component} /out/wisp-{component}" in text


# ---------------------------------------------------------------------------------------------------------------
# wisp-sync (secretSync.enabled)
# ---------------------------------------------------------------------------------------------------------------

SYNC_VALUES = {**DEFAULT_VALUES, "secretSync": {"enabled": True}}


def test_secret_sync_is_off_by_default_and_adds_these_objects(chart):
    default = set(inventory(render(chart, DEFAULT_VALUES)))
    assert not any(name.startswith("wisp-sync") or "secretsync" in name for _, _, name in default)
    added = sorted(set(inventory(render(chart, SYNC_VALUES))) - default)
    assert added == [
        ("ClusterRole", "", "wisp-sync"),
        ("ClusterRoleBinding", "", "wisp-sync"),
        ("CustomResourceDefinition", "", "secretsyncs.secret-sync.x-k8s.io"),
        ("Deployment", NAMESPACE, "wisp-sync"),
        ("Role", NAMESPACE, "wisp-sync"),
        ("RoleBinding", NAMESPACE, "wisp-sync"),
        ("ServiceAccount", NAMESPACE, "wisp-sync"),
        *sorted((kind, "", name) for name in SYNC_POLICIES for kind in ADMISSION_KINDS),
    ]
    without_policy = {**DEFAULT_VALUES, "secretSync": {"enabled": True, "validatingAdmissionPolicy": {"enabled": False}}}
    kinds = {kind for kind, _, _ in inventory(render(chart, without_policy))}
    assert not kinds & set(ADMISSION_KINDS)


def test_secret_sync_rbac_is_what_it_uses(chart):
    objects = by_kind_name(render(chart, SYNC_VALUES))
    assert objects[("ClusterRole", "wisp-sync")]["rules"] == [
        {"apiGroups": ["secret-sync.x-k8s.io"], "resources": ["secretsyncs"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["secret-sync.x-k8s.io"], "resources": ["secretsyncs/status"], "verbs": ["get", "patch", "update"]},
        {
            "apiGroups": ["secrets-store.csi.x-k8s.io"],
            "resources": ["secretproviderclasses"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    assert objects[("Role", "wisp-sync")]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["wisp-sync-leader"],
            "verbs": ["get", "patch"],
        },
    ]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert objects[(kind, "wisp-sync")]["subjects"] == [
            {"kind": "ServiceAccount", "name": "wisp-sync", "namespace": NAMESPACE}
        ]


def test_secret_sync_deployment(chart):
    deployment = by_kind_name(render(chart, SYNC_VALUES))[("Deployment", "wisp-sync")]
    assert deployment["metadata"]["labels"] == labels("sync")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"] == {"matchLabels": selector("sync")}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "wisp-sync"
    container = pod["containers"][0]
    assert "command" not in container
    assert container["image"] == f"wisp-sync:{APP_VERSION}"
    assert container["args"] == [
        "--rotation-poll-interval=2m",
        "--controller-name=wisp-sync",
        "--metrics-addr=:8080",
        "--health-addr=:8081",
        "--log-level=info",
        "--leader-elect=true",
        "--leader-election-id=wisp-sync-leader",
        "--leader-election-lease-duration=15s",
    ]
    assert [(e["name"], e.get("value", e.get("valueFrom"))) for e in container["env"]] == [
        ("AZURE_ENVIRONMENT", "AzurePublicCloud"),
        ("POD_NAMESPACE", {"fieldRef": {"fieldPath": "metadata.namespace"}}),
        ("SYNC_CONTROLLER_POD_NAME", {"fieldRef": {"fieldPath": "metadata.name"}}),
        ("SYNC_CONTROLLER_POD_UID", {"fieldRef": {"fieldPath": "metadata.uid"}}),
    ]
    assert [port["containerPort"] for port in container["ports"]] == [8080, 8081]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}
    assert dockerfile_final_stage("sync") == [
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "COPY --from=builder /out/wisp-sync /usr/local/bin/wisp-sync",
        "USER 65532:65532",
        "EXPOSE 8080 8081",
        'ENTRYPOINT ["/usr/local/bin/wisp-sync"]',
    ]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (65532, 65532)
    text = (REPO / "sync" / "Dockerfile").read_text()
    assert "cargo build --release --locked -p wisp-sync --bin wisp-sync" in text


def test_secret_sync_crd_has_the_upstream_api(chart):
    crd = by_kind_name(render(chart, SYNC_VALUES))[("CustomResourceDefinition", "secretsyncs.secret-sync.x-k8s.io")]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"], version["subresources"]) == (
        "v1alpha1",
        True,
        True,
        {"status": {}},
    )
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["secretObject", "secretProviderClassName", "serviceAccountName"]
    assert sorted(spec["properties"]) == [
        "forceSynchronization",
        "secretObject",
        "secretProviderClassName",
        "secretSyncControllerName",
        "serviceAccountName",
    ]
    secret_object = spec["properties"]["secretObject"]["properties"]
    assert secret_object["type"]["default"] == "Opaque"
    assert secret_object["data"]["minItems"] == 1
    assert secret_object["data"]["x-kubernetes-list-map-keys"] == ["targetKey"]
    for field in ("labels", "annotations"):
        rules = [r["rule"] for r in secret_object[field]["x-kubernetes-validations"]]
        assert "(self.all(x, x.startsWith('secrets-store.sync.x-k8s.io') == false))" in rules
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert sorted(status) == ["conditions", "lastSuccessfulSyncTime", "syncHash"]
    assert status["conditions"]["maxItems"] == 16


# ---------------------------------------------------------------------------------------------------------------
# wisp-sync's ValidatingAdmissionPolicies, their CEL evaluated (cel-python) against admission requests
# ---------------------------------------------------------------------------------------------------------------
#
# The harness evaluates a policy as the API server's validating admission policy plugin does: matchConstraints
# (resource rules, with subresources), then matchConditions (any false: skipped), then variables in order (each
# sees those before it), then every validation; a false one denies with its reason (default Invalid) and the
# result of its messageExpression. Where cel-python and Kubernetes' cel-go differ, the harness is the stricter:
# - An expression error (a missing field selected without has(), a missing map key) fails the test: the API server
#   would deny with "expression ... resulted in error" under failurePolicy Fail, which is never what a policy here
#   means. Likewise a messageExpression error or a message with a line break (Kubernetes would fall back to the
#   static message silently).
# - cel-python's has() on a null object is false; in cel-go selecting a field of null is an error. The policies
#   select fields of oldObject only where the operation is UPDATE, and of object never on DELETE (where it is null);
#   test_policies_never_select_fields_of_a_null_object checks that.
# - Variables are evaluated eagerly, in order, not lazily; equivalent while no variable errors (see the first point).
# - Map iteration order: cel-go's over an object's map is unspecified, so a message names *one* bad key; the cases
#   below have one each.
# - Only standard CEL is used (has, size, in, all, filter, matches, startsWith, contains, string +): no Kubernetes
#   extension function (no split/join/format/isQualifiedName), so cel-python needs no stand-ins. Regular
#   expressions are RE2 on both sides (cel-python uses google-re2), anchored with ^ and $.

SYNC_RS = REPO / "sync" / "src"
AGENT_SECRET_SYNC_RS = REPO / "agent" / "src" / "cluster" / "secret_sync.rs"
SYNC_USER = f"system:serviceaccount:{NAMESPACE}:wisp-sync"
ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
# Upstream's policies, in wisp's names (upstream: create-update, create-update-token-deny, update-check-oldobject,
# update-label, delete, validate-token, validate-label, validate-annotation).
SYNC_POLICIES = (
    "wisp-sync-create-update",
    "wisp-sync-denied-types",
    "wisp-sync-update-old-owner",
    "wisp-sync-update-old-label",
    "wisp-sync-delete",
    "wisp-sync-token-request",
    "wisp-sync-secretsync-labels",
    "wisp-sync-secretsync-annotations",
)
SECRETSYNC_FORMAT_POLICIES = ("wisp-sync-secretsync-labels", "wisp-sync-secretsync-annotations")
UPSTREAM_ALLOWED_TYPES = [
    "Opaque",
    "kubernetes.io/basic-auth",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
]
UPSTREAM_DENIED_TYPES = ["kubernetes.io/service-account-token"]
CEL = celpy.Environment()


def rust_str_consts(path):
    """`{NAME: value}` of every `const NAME: &str = "...";` (pub or not) in a Rust file."""
    return dict(re.findall(r'const ([A-Z0-9_]+): &str = "([^"]*)";', path.read_text()))


def rust_int_const(path, name):
    return int(re.search(rf"const {name}: i64 = (\d+);", path.read_text()).group(1))


def types_wisp_sync_writes():
    """Kubernetes' built-in Secret types (agent/src/cluster/secret_sync.rs `KNOWN_SECRET_TYPES`) but the one
    sync/src/secret.rs refuses before writing (`SERVICE_ACCOUNT_TOKEN_TYPE`); other types are written as given."""
    text = AGENT_SECRET_SYNC_RS.read_text()
    consts = rust_str_consts(AGENT_SECRET_SYNC_RS)
    body = re.search(r"const KNOWN_SECRET_TYPES: \[&str; \d+\] = \[(.*?)\];", text, re.DOTALL).group(1)
    items = [item.strip() for item in body.split(",") if item.strip()]
    known = [item.strip('"') if item.startswith('"') else consts[item] for item in items]
    refused = rust_str_consts(SYNC_RS / "secret.rs")["SERVICE_ACCOUNT_TOKEN_TYPE"]
    return [t for t in known if t != refused]


def sync_policies(chart, values=None):
    """`{name: (policy spec, binding spec)}` of the rendered policies."""
    objects = render(chart, values or SYNC_VALUES)
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert set(policies) == set(bindings)
    return {name: (policies[name], bindings[name]) for name in policies}


def cel(expression, activation):
    """The value of a CEL expression; an evaluation error fails the test (see above)."""
    try:
        return CEL.program(CEL.compile(expression)).evaluate(activation)
    except celpy.CELEvalError as error:  # pragma: no cover - a failing test shows it
        pytest.fail(f"CEL error in {expression!r}: {error}")


def rule_matches(rule, request):
    resource = request["resource"]
    wanted = resource["resource"] + (f"/{request['subResource']}" if request["subResource"] else "")
    return (
        (resource["group"] in rule["apiGroups"] or "*" in rule["apiGroups"])
        and (resource["version"] in rule["apiVersions"] or "*" in rule["apiVersions"])
        and (request["operation"] in rule["operations"] or "*" in rule["operations"])
        and (wanted in rule["resources"] or ("*" in rule["resources"] and not request["subResource"]))
    )


def decide(policy, binding, request):
    """None if the policy does not apply or allows; else (reason, message) of its first failed validation."""
    assert binding["validationActions"] == ["Deny"]
    if not any(rule_matches(rule, request) for rule in policy["matchConstraints"]["resourceRules"]):
        return None
    activation = {name: celpy.json_to_cel(request[name]) for name in ("object", "oldObject")}
    activation["request"] = celpy.json_to_cel({k: v for k, v in request.items() if k not in activation})
    for condition in policy.get("matchConditions", []):
        if not cel(condition["expression"], activation):
            return None
    variables = celtypes.MapType({})
    activation["variables"] = variables
    for variable in policy.get("variables", []):
        variables[celtypes.StringType(variable["name"])] = cel(variable["expression"], activation)
    for validation in policy["validations"]:
        if cel(validation["expression"], activation):
            continue
        message = cel(validation["messageExpression"], activation)
        assert isinstance(message, str) and message.strip() and "\n" not in message, message
        return (validation.get("reason", "Invalid"), str(message))
    return None


def refusals(policies, request):
    """`{policy: (reason, message)}` of every policy that refuses the request (the API server reports one)."""
    found = {}
    for name, (policy, binding) in policies.items():
        if decision := decide(policy, binding, request):
            found[name] = decision
    return found


def admission(
    operation,
    obj=None,
    old=None,
    *,
    user=SYNC_USER,
    namespace="ns-a",
    name=None,
    resource="secrets",
    group="",
    version="v1",
    subresource="",
):
    """An admission request as a validating admission policy sees it (`request`, `object`, `oldObject`)."""
    name = name or (obj or old)["metadata"]["name"]
    return {
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:serviceaccounts", "system:authenticated"]},
        "namespace": namespace,
        "name": name,
        "resource": {"group": group, "version": version, "resource": resource},
        "subResource": subresource,
        "object": obj,
        "oldObject": old,
    }


def secret_as_wisp_sync_writes(
    name="app-secret",
    namespace="ns-a",
    secret_type="Opaque",
    labels=None,
    annotations=None,
    uid="0b0b0b0b-0000-0000-0000-00000000000b",
):
    """sync/src/secret.rs `build_secret`, plus what the API server adds before admission."""
    consts = {**rust_str_consts(SYNC_RS / "secret.rs"), **rust_str_consts(SYNC_RS / "secretsync.rs")}
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": {**(labels or {}), consts["SECRET_SYNC_LABEL"]: name},
        "ownerReferences": [{"apiVersion": consts["API_VERSION"], "kind": consts["KIND"], "name": name, "uid": uid}],
        "uid": "5ec5ec5e-0000-0000-0000-000000000001",
        "managedFields": [{"manager": consts["FIELD_MANAGER"], "operation": "Apply", "apiVersion": "v1"}],
    }
    if annotations:
        metadata["annotations"] = annotations
    data = {"tls.crt": "Y2VydA==", "tls.key": "a2V5"} if secret_type == "kubernetes.io/tls" else {"password": "cA=="}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": secret_type, "data": data}


def with_metadata(obj, **changes):
    changed = copy.deepcopy(obj)
    for key, value in changes.items():
        if value is None:
            changed["metadata"].pop(key, None)
        else:
            changed["metadata"][key] = value
    return changed


def token_request(audiences=None, expiration_seconds=None, name="sa-a", namespace="ns-a"):
    """The TokenRequest sync/src/identity.rs sends, with the audience and lifetime of its constants by default."""
    spec = {
        "audiences": [rust_constants()[("workload_identity", "DEFAULT_AUDIENCE")]] if audiences is None else audiences,
        "expirationSeconds": expiration_seconds or rust_int_const(SYNC_RS / "identity.rs", "TOKEN_LIFETIME_SECONDS"),
    }
    if spec["expirationSeconds"] == -1:
        del spec["expirationSeconds"]
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def secret_sync(labels=None, annotations=None, name="app-secret", namespace="ns-a"):
    """The README's SecretSync."""
    secret_object = {"type": "Opaque", "data": [{"sourcePath": "db-password", "targetKey": "password"}]}
    if labels is not None:
        secret_object["labels"] = labels
    if annotations is not None:
        secret_object["annotations"] = annotations
    return {
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"secretProviderClassName": "kv", "serviceAccountName": "sa-a", "secretObject": secret_object},
    }


def secret_sync_request(operation, obj, old=None, user="alice@example.com"):
    return admission(
        operation, obj, old, user=user, resource="secretsyncs", group="secret-sync.x-k8s.io", version="v1alpha1"
    )


def refused(request, how, *, operation=None):
    """The refusal texts of the policy messages below, for one request."""
    op = operation or request["operation"]
    who = f"wisp-sync may not {op} Secret {request['namespace']}/{request['name']}: "
    name = request["name"]
    allowed = ", ".join(UPSTREAM_ALLOWED_TYPES)
    obj = request["object"] or {}
    return {
        "owner": f"{who}it must have exactly one owner reference, to the SecretSync {name} (secret-sync.x-k8s.io)",
        "label": f"{who}it must carry the label secrets-store.sync.x-k8s.io/secretsync={name}",
        "type": f"{who}its type {obj.get('type')} is not one of secretSync.validatingAdmissionPolicy.allowedSecretTypes"
        f" ({allowed})",
        "denied": f"{who}its type {obj.get('type')} is one of secretSync.validatingAdmissionPolicy.deniedSecretTypes"
        " (kubernetes.io/service-account-token)",
        "old-owner": f"{who}it may update only a Secret whose one owner reference is already to the SecretSync {name},"
        " and takes over no other Secret",
        "old-label": f"{who}it does not carry the label secrets-store.sync.x-k8s.io/secretsync={name}; delete the"
        " Secret and wisp-sync creates it anew",
        "delete": f"{who}it never deletes Secrets; a synced Secret is deleted with its SecretSync (garbage collection)",
    }[how]


@pytest.fixture(scope="module")
def policies(chart):
    return sync_policies(chart)


def test_policies_are_upstreams_set_each_bound_to_deny(policies):
    assert sorted(policies) == sorted(SYNC_POLICIES)
    wisp_sync_only = [{"name": "wisp-sync-only", "expression": f"request.userInfo.username == '{SYNC_USER}'"}]
    for name, (policy, binding) in policies.items():
        assert binding == {"policyName": name, "validationActions": ["Deny"]}
        assert policy["failurePolicy"] == "Fail"
        # Only the SecretSync format policies apply to every user; the others to wisp-sync's ServiceAccount alone.
        assert policy.get("matchConditions") == (None if name in SECRETSYNC_FORMAT_POLICIES else wisp_sync_only)
        for validation in policy["validations"]:
            assert validation["reason"] == ("Invalid" if name in SECRETSYNC_FORMAT_POLICIES else "Forbidden")
            assert validation["message"] and "\n" not in validation["message"]
            assert validation["messageExpression"]
    rules = {name: policy["matchConstraints"]["resourceRules"] for name, (policy, _) in policies.items()}

    def rule(group, operations, resource, versions=("v1",)):
        return [
            {"apiGroups": [group], "apiVersions": list(versions), "operations": operations, "resources": [resource]}
        ]

    assert rules == {
        "wisp-sync-create-update": rule("", ["CREATE", "UPDATE"], "secrets"),
        "wisp-sync-denied-types": rule("", ["CREATE", "UPDATE"], "secrets"),
        "wisp-sync-update-old-owner": rule("", ["UPDATE"], "secrets"),
        "wisp-sync-update-old-label": rule("", ["UPDATE"], "secrets"),
        "wisp-sync-delete": rule("", ["DELETE"], "secrets"),
        "wisp-sync-token-request": rule("", ["CREATE"], "serviceaccounts/token"),
        # Not secretsyncs/status, which wisp-sync writes.
        "wisp-sync-secretsync-labels": rule("secret-sync.x-k8s.io", ["CREATE", "UPDATE"], "secretsyncs", ["*"]),
        "wisp-sync-secretsync-annotations": rule("secret-sync.x-k8s.io", ["CREATE", "UPDATE"], "secretsyncs", ["*"]),
    }


def all_expressions(policies):
    for name, (policy, _) in policies.items():
        for condition in policy.get("matchConditions", []):
            yield name, condition["expression"]
        for variable in policy.get("variables", []):
            yield name, variable["expression"]
        for validation in policy["validations"]:
            yield name, validation["expression"]
            yield name, validation["messageExpression"]


def test_every_expression_is_standard_cel(policies):
    extension_functions = re.compile(
        r"\.(split|join|lowerAscii|upperAscii|replace|format|indexOf|sort|isSorted|"
        r"sum|min|max|quantity|url|ip|cidr|isQualifiedName)\(|\bformat\.|\bauthorizer\b"
    )
    for name, expression in all_expressions(policies):
        CEL.compile(expression)  # raises on a parse error
        assert not extension_functions.search(expression), (name, expression)


def test_policies_never_select_fields_of_a_null_object(policies):
    for name, (policy, _) in policies.items():
        operations = {op for rule in policy["matchConstraints"]["resourceRules"] for op in rule["operations"]}
        for _, expression in all_expressions({name: (policy, None)}):
            if "oldObject." in expression and operations != {"UPDATE"}:
                # Every oldObject selection is behind `request.operation == 'UPDATE' &&`.
                assert expression.startswith("request.operation == 'UPDATE' && "), (name, expression)
            if "DELETE" in operations:
                assert "object." not in expression.replace("oldObject.", ""), (name, expression)


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
@pytest.mark.parametrize("secret_type", types_wisp_sync_writes())
def test_the_secret_wisp_sync_writes_passes_every_policy(policies, secret_type, operation):
    labels, annotations = {"app": "web"}, {"team": "blue", "description": "free text, with spaces"}
    secret = secret_as_wisp_sync_writes(secret_type=secret_type, labels=labels, annotations=annotations)
    old = secret_as_wisp_sync_writes(secret_type=secret_type) if operation == "UPDATE" else None
    assert refusals(policies, admission(operation, secret, old)) == {}


def test_every_built_in_type_wisp_sync_writes_is_allowed(policies):
    """The denied type never reaches the API server: wisp-sync refuses it first (the policies refuse it too, see
    the write cases)."""
    assert sorted(types_wisp_sync_writes()) == sorted(UPSTREAM_ALLOWED_TYPES)


def test_a_secret_upstream_wrote_is_taken_over(policies):
    """Upstream's controller labels its Secrets with an empty `secrets-store.sync.x-k8s.io`; wisp-sync's force apply
    of such a Secret (same owner) passes, and afterwards carries wisp's label."""
    upstream = with_metadata(secret_as_wisp_sync_writes(), labels={"secrets-store.sync.x-k8s.io": ""})
    assert refusals(policies, admission("UPDATE", secret_as_wisp_sync_writes(), upstream)) == {}


SYNCED = secret_as_wisp_sync_writes()
OWNER = SYNCED["metadata"]["ownerReferences"][0]
FOREIGN_OWNER = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app-secret", "uid": "d"}


def secret_write_cases():
    """(id, request, {policy: refusal kind}); the refusal texts are `refused`'s."""

    def owners(*refs):
        return with_metadata(SYNCED, ownerReferences=list(refs))

    def label(value):
        return with_metadata(SYNCED, labels={"secrets-store.sync.x-k8s.io/secretsync": value})

    def typed(secret_type):
        return {**copy.deepcopy(SYNCED), "type": secret_type}

    create, update = "wisp-sync-create-update", "wisp-sync-update-old-owner"
    return [
        ("no-owner", admission("CREATE", with_metadata(SYNCED, ownerReferences=None)), {create: "owner"}),
        ("foreign-owner", admission("CREATE", owners(FOREIGN_OWNER)), {create: "owner"}),
        ("two-owners", admission("CREATE", owners(OWNER, FOREIGN_OWNER)), {create: "owner"}),
        ("two-secretsync-owners", admission("CREATE", owners(OWNER, {**OWNER, "uid": "other"})), {create: "owner"}),
        ("secretsync-of-another-name", admission("CREATE", owners({**OWNER, "name": "other"})), {create: "owner"}),
        (
            "secretsync-of-another-group",
            admission("CREATE", owners({**OWNER, "apiVersion": "evil.io/v1"})),
            {create: "owner"},
        ),
        ("no-label", admission("CREATE", with_metadata(SYNCED, labels=None)), {create: "label"}),
        ("wrong-label", admission("CREATE", label("other")), {create: "label"}),
        (
            "upstream-label-only",
            admission("CREATE", with_metadata(SYNCED, labels={"secrets-store.sync.x-k8s.io": ""})),
            {create: "label"},
        ),
        ("custom-type", admission("CREATE", typed("very.random/custom-type")), {create: "type"}),
        (
            "service-account-token",
            admission("UPDATE", typed("kubernetes.io/service-account-token"), SYNCED),
            {create: "type", "wisp-sync-denied-types": "denied"},
        ),
        ("update-gives-away-ownership", admission("UPDATE", owners(FOREIGN_OWNER), SYNCED), {create: "owner"}),
        (
            "update-of-a-secret-not-owned",
            admission("UPDATE", SYNCED, with_metadata(SYNCED, ownerReferences=None)),
            {update: "old-owner"},
        ),
        (
            "update-of-a-secret-owned-by-another",
            admission("UPDATE", SYNCED, owners(FOREIGN_OWNER)),
            {update: "old-owner"},
        ),
        (
            "update-of-a-secret-with-two-owners",
            admission("UPDATE", SYNCED, owners(OWNER, FOREIGN_OWNER)),
            {update: "old-owner"},
        ),
        (
            "update-of-a-foreign-secret",
            admission("UPDATE", SYNCED, with_metadata(SYNCED, ownerReferences=None, labels={"app": "web"})),
            {update: "old-owner", "wisp-sync-update-old-label": "old-label"},
        ),
        (
            "update-of-a-secret-whose-label-was-removed",
            admission("UPDATE", SYNCED, with_metadata(SYNCED, labels=None)),
            {"wisp-sync-update-old-label": "old-label"},
        ),
        (
            "update-of-a-secret-relabelled",
            admission("UPDATE", SYNCED, label("other")),
            {"wisp-sync-update-old-label": "old-label"},
        ),
        ("delete", admission("DELETE", None, SYNCED), {"wisp-sync-delete": "delete"}),
        (
            "delete-of-any-secret",
            admission("DELETE", None, with_metadata(SYNCED, ownerReferences=None, name="x")),
            {"wisp-sync-delete": "delete"},
        ),
    ]


@pytest.mark.parametrize(
    ("request_", "expected"), [c[1:] for c in secret_write_cases()], ids=[c[0] for c in secret_write_cases()]
)
def test_secret_writes_refused_with_these_messages(policies, request_, expected):
    assert refusals(policies, request_) == {
        policy: ("Forbidden", refused(request_, how)) for policy, how in expected.items()
    }


@pytest.mark.parametrize(
    "user",
    [
        "alice@example.com",
        "system:serviceaccount:other-namespace:wisp-sync",
        f"system:serviceaccount:{NAMESPACE}:wisp-agent",
        "system:serviceaccount:kube-system:generic-garbage-collector",
    ],
)
def test_other_users_are_not_matched(policies, user):
    foreign = with_metadata(SYNCED, ownerReferences=None, labels=None)
    for request in (
        admission("CREATE", {**foreign, "type": "kubernetes.io/service-account-token"}, user=user),
        admission("UPDATE", foreign, foreign, user=user),
        admission("DELETE", None, SYNCED, user=user),
        admission(
            "CREATE",
            token_request(["https://kubernetes.default.svc"], 86400),
            user=user,
            resource="serviceaccounts",
            subresource="token",
        ),
    ):
        assert refusals(policies, request) == {}


def token_case(audiences=None, expiration_seconds=None):
    return admission(
        "CREATE", token_request(audiences, expiration_seconds), resource="serviceaccounts", subresource="token"
    )


AUDIENCE_REFUSAL = (
    "wisp-sync may not request a token of ServiceAccount ns-a/sa-a: its audiences must be exactly"
    " [api://AzureADTokenExchange]"
)
LIFETIME_REFUSAL = (
    "wisp-sync may not request a token of ServiceAccount ns-a/sa-a: its expirationSeconds must be at most 3600"
)


@pytest.mark.parametrize(
    ("audiences", "expiration_seconds", "message"),
    [
        (None, None, None),  # what sync/src/identity.rs asks
        (None, 600, None),
        (["api://AKSIdentityBinding"], None, AUDIENCE_REFUSAL),
        (["https://kubernetes.default.svc"], None, AUDIENCE_REFUSAL),
        (["api://AzureADTokenExchange", "https://kubernetes.default.svc"], None, AUDIENCE_REFUSAL),
        (["https://kubernetes.default.svc", "api://AzureADTokenExchange"], None, AUDIENCE_REFUSAL),
        ([], None, AUDIENCE_REFUSAL),  # the API server's own audiences, which it fills in after admission
        (None, 7200, LIFETIME_REFUSAL),
        (None, -1, LIFETIME_REFUSAL),  # no expirationSeconds (the API server defaults it before admission)
        (["https://kubernetes.default.svc"], 86400, AUDIENCE_REFUSAL),  # the first failed validation is reported
    ],
    ids=[
        "wisp-sync",
        "ten-minutes",
        "other-audience",
        "api-server",
        "two-audiences",
        "two-audiences-reversed",
        "no-audience",
        "two-hours",
        "no-lifetime",
        "both",
    ],
)
def test_token_requests(policies, audiences, expiration_seconds, message):
    found = refusals(policies, token_case(audiences, expiration_seconds))
    assert found == ({} if message is None else {"wisp-sync-token-request": ("Forbidden", message)})


def test_the_token_policy_pins_wisp_syncs_audience_and_lifetime(policies):
    policy = policies["wisp-sync-token-request"][0]
    audience = rust_constants()[("workload_identity", "DEFAULT_AUDIENCE")]
    lifetime = rust_int_const(SYNC_RS / "identity.rs", "TOKEN_LIFETIME_SECONDS")
    audiences, expiration = (v["expression"] for v in policy["validations"])
    assert f"variables.audiences[0] == '{audience}'" in audiences
    assert expiration.endswith(f"object.spec.expirationSeconds <= {lifetime}")


# Kubernetes' own rules (apimachinery validation.IsQualifiedName, IsValidLabelValue; annotation keys are checked
# lowercased), to compare the policies' regular expressions with.
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def kubernetes_qualified_name(key):
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.fullmatch(name))


def kubernetes_label_value(value):
    return value == "" or (len(value) <= 63 and bool(QUALIFIED_NAME.fullmatch(value)))


KEYS = [
    "app",
    "a",
    "A",
    "app.kubernetes.io/name",
    "example.com/x",
    "x" * 63,
    "x" * 64,
    "p/" + "x" * 63,
    ("p" * 61 + ".") * 4 + "p" * 5 + "/x",
    ("p" * 61 + ".") * 4 + "p" * 6 + "/x",
    "Example.COM/Key",
    "Example.com/x",
    "_x.io/y",
    "example_com/x",
    "-bad",
    "bad-",
    "bad key",
    "a/b/c",
    "/x",
    "x/",
    "",
    "under_score",
    "dot.",
    ".dot",
    "ünïcode",
    "with:colon",
]
VALUES = ["", "web", "a", "x" * 63, "x" * 64, "has space", "-x", "x-", "a.b_c-d", "free text, with spaces", "ü"]


def label_refusal(key, bad_value=False):
    if bad_value:
        return (
            "Invalid",
            (
                f'SecretSync ns-a/app-secret: spec.secretObject.labels["{key}"] is not a valid label value:'
                " empty, or 1 to 63 letters, digits, -, _ or ., beginning and ending with a letter or digit"
            ),
        )
    return (
        "Invalid",
        (
            f'SecretSync ns-a/app-secret: spec.secretObject.labels key "{key}" is not a valid label key:'
            " an optional prefix (a DNS subdomain of at most 253 characters) and a slash, then 1 to 63 letters,"
            " digits, -, _ or ., beginning and ending with a letter or digit"
        ),
    )


def annotation_refusal(key):
    return (
        "Invalid",
        (
            f'SecretSync ns-a/app-secret: spec.secretObject.annotations key "{key}" is not a valid'
            " annotation key: an optional prefix (a DNS subdomain of at most 253 characters, any case) and a slash,"
            " then 1 to 63 letters, digits, -, _ or ., beginning and ending with a letter or digit"
        ),
    )


@pytest.mark.parametrize("key", KEYS)
def test_secretsync_label_and_annotation_keys_as_kubernetes_validates_them(policies, key):
    found = refusals(policies, secret_sync_request("CREATE", secret_sync(labels={key: "v"})))
    assert found == ({} if kubernetes_qualified_name(key) else {"wisp-sync-secretsync-labels": label_refusal(key)})
    found = refusals(policies, secret_sync_request("CREATE", secret_sync(annotations={key: "v"})))
    ok = kubernetes_qualified_name(key.lower())
    assert found == ({} if ok else {"wisp-sync-secretsync-annotations": annotation_refusal(key)})


@pytest.mark.parametrize("value", VALUES)
def test_secretsync_label_values_as_kubernetes_validates_them_annotation_values_are_free(policies, value):
    found = refusals(policies, secret_sync_request("CREATE", secret_sync(labels={"app": value})))
    bad = {"wisp-sync-secretsync-labels": label_refusal("app", bad_value=True)}
    assert found == ({} if kubernetes_label_value(value) else bad)
    assert refusals(policies, secret_sync_request("CREATE", secret_sync(annotations={"note": value}))) == {}


def test_secretsync_format_cases_upstream_refuses_too(policies):
    """Upstream's validate-label policy's cases: a bad key, a bad value; both refused here as well."""
    for labels, expected in (
        ({"bad key": "v"}, label_refusal("bad key")),
        ({"Bad_Prefix.io/x": "v"}, label_refusal("Bad_Prefix.io/x")),
        ({"app": "bad value"}, label_refusal("app", bad_value=True)),
        ({"app": "x" * 64}, label_refusal("app", bad_value=True)),
    ):
        found = refusals(policies, secret_sync_request("CREATE", secret_sync(labels=labels)))
        assert found == {"wisp-sync-secretsync-labels": expected}


def test_secretsync_format_updates_refuse_only_what_they_add_or_change(policies):
    old = secret_sync(labels={"bad key": "v", "app": "bad value"}, annotations={"bad key": "v"})
    # Unchanged (a finalizer's removal, a spec change elsewhere): allowed, so an old SecretSync can still be deleted.
    changed_elsewhere = copy.deepcopy(old)
    changed_elsewhere["spec"]["forceSynchronization"] = "now"
    assert refusals(policies, secret_sync_request("UPDATE", changed_elsewhere, old)) == {}
    # Fixing one of them: allowed.
    fixed = secret_sync(labels={"bad key": "v", "app": "web"}, annotations={"bad key": "v"})
    assert refusals(policies, secret_sync_request("UPDATE", fixed, old)) == {}
    # Adding a bad key, or changing a value to a bad one: refused.
    added = secret_sync(labels={"bad key": "v", "app": "bad value", "new key": "v"}, annotations={"bad key": "v"})
    assert refusals(policies, secret_sync_request("UPDATE", added, old)) == {
        "wisp-sync-secretsync-labels": label_refusal("new key")
    }
    worse = secret_sync(labels={"bad key": "v", "app": "worse value"}, annotations={"bad key": "v", "x y": "v"})
    assert refusals(policies, secret_sync_request("UPDATE", worse, old)) == {
        "wisp-sync-secretsync-labels": label_refusal("app", bad_value=True),
        "wisp-sync-secretsync-annotations": annotation_refusal("x y"),
    }


def test_secretsync_without_labels_or_annotations_and_its_status_are_not_refused(policies):
    plain = secret_sync()
    assert refusals(policies, secret_sync_request("CREATE", plain)) == {}
    assert refusals(policies, secret_sync_request("UPDATE", plain, plain)) == {}
    bad = secret_sync(labels={"bad key": "v"})
    status = secret_sync_request("UPDATE", bad, bad, user=SYNC_USER)
    status["subResource"] = "status"
    assert refusals(policies, status) == {}


def test_the_readme_secretsync_and_its_secret_pass(policies):
    sync = secret_sync(labels={"app": "web"}, annotations={"team": "blue"})
    assert refusals(policies, secret_sync_request("CREATE", sync)) == {}
    secret = secret_as_wisp_sync_writes(labels={"app": "web"}, annotations={"team": "blue"})
    assert refusals(policies, admission("CREATE", secret)) == {}


def test_custom_secret_type_lists(chart):
    values = {
        **DEFAULT_VALUES,
        "secretSync": {
            "enabled": True,
            "validatingAdmissionPolicy": {
                "allowedSecretTypes": ["Opaque", "example.com/custom"],
                "deniedSecretTypes": [],
            },
        },
    }
    custom = sync_policies(chart, values)
    assert refusals(custom, admission("CREATE", {**SYNCED, "type": "example.com/custom"})) == {}
    request = admission("CREATE", {**SYNCED, "type": "kubernetes.io/tls"})
    assert refusals(custom, request) == {
        "wisp-sync-create-update": (
            "Forbidden",
            (
                "wisp-sync may not CREATE Secret ns-a/app-secret: its type kubernetes.io/tls is not one of"
                " secretSync.validatingAdmissionPolicy.allowedSecretTypes (Opaque, example.com/custom)"
            ),
        )
    }
    nothing = {
        **DEFAULT_VALUES,
        "secretSync": {"enabled": True, "validatingAdmissionPolicy": {"allowedSecretTypes": []}},
    }
    request = admission("CREATE", SYNCED)
    assert refusals(sync_policies(chart, nothing), request) == {
        "wisp-sync-create-update": (
            "Forbidden",
            (
                "wisp-sync may not CREATE Secret ns-a/app-secret: its type Opaque is not one of"
                " secretSync.validatingAdmissionPolicy.allowedSecretTypes ()"
            ),
        )
    }


@pytest.mark.parametrize("bad", ['Opa"que', "kubernetes.io/tls'", "two words", ""])
def test_secret_types_are_plain_words(chart, bad):
    values = {
        **DEFAULT_VALUES,
        "secretSync": {"enabled": True, "validatingAdmissionPolicy": {"deniedSecretTypes": [bad]}},
    }
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    assert "at '/secretSync/validatingAdmissionPolicy/deniedSecretTypes/0'" in str(caught.value)


def api_server_refusal(request, policy, reason, message):
    """The API server's refusal (apiserver's validating policy dispatcher: admission.NewForbidden with the denying
    validation's reason) as kube-rs shows it (`ApiError: <message>: <reason> (...)`) in wisp-sync's error text."""
    resource = request["resource"]["resource"]
    if request["resource"]["group"]:
        resource += "." + request["resource"]["group"]
    status_message = (
        f"{resource} \"{request['name']}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with "
        f"binding '{policy}' denied request: {message}"
    )
    code = {"Forbidden": 403, "Invalid": 422}[reason]
    return (
        f'failed to patch secret "{request["name"]}": ApiError: {status_message}: {reason} (Status {{ code: {code} }})'
    )


def test_every_refusal_is_reported_as_validating_admission_policy_check_failed(policies):
    """sync/src/conditions.rs `is_admission_policy_refusal` looks for a text in the lowercased error; every refusal
    of wisp-sync's requests carries it, whatever the policy's message and reason (403 Forbidden, 422 Invalid)."""
    source = (SYNC_RS / "conditions.rs").read_text()
    body = re.search(r"pub fn is_admission_policy_refusal\(error_text: &str\) -> bool \{(.*?)\n\}", source, re.DOTALL)
    assert body.group(1).strip() == 'error_text.to_lowercase().contains("validatingadmissionpolicy")'
    requests = [c[1] for c in secret_write_cases()] + [token_case(["x"]), token_case(None, 7200)]
    seen = set()
    for request in requests:
        for policy, (reason, message) in refusals(policies, request).items():
            seen.add(policy)
            assert "validatingadmissionpolicy" in api_server_refusal(request, policy, reason, message).lower()
    assert seen == set(SYNC_POLICIES) - set(SECRETSYNC_FORMAT_POLICIES)
