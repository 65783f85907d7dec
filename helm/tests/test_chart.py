"""Tests of the wisp Helm chart: render and lint it offline with Helm's own Go SDK (helm-python-sdk), validate every
rendered object strictly against the Kubernetes 1.33 schemas (kubernetes-validate), and pin the values the
compatibility contract depends on (issue 5) to exact expected objects."""

from __future__ import annotations

import copy
import pathlib
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

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
        ("ValidatingAdmissionPolicy", "", "wisp-sync-owned-secrets"),
        ("ValidatingAdmissionPolicyBinding", "", "wisp-sync-owned-secrets"),
    ]
    without_policy = {**DEFAULT_VALUES, "secretSync": {"enabled": True, "validatingAdmissionPolicy": {"enabled": False}}}
    kinds = {kind for kind, _, _ in inventory(render(chart, without_policy))}
    assert "ValidatingAdmissionPolicy" not in kinds


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


def test_secret_sync_admission_policy_limits_the_controller_to_its_own_secrets(chart):
    objects = by_kind_name(render(chart, SYNC_VALUES))
    policy = objects[("ValidatingAdmissionPolicy", "wisp-sync-owned-secrets")]["spec"]
    assert policy["matchConditions"] == [
        {
            "name": "wisp-sync-only",
            "expression": f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:wisp-sync'",
        }
    ]
    assert policy["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]}
    ]
    assert policy["failurePolicy"] == "Fail"
    assert [v["expression"] for v in policy["validations"]] == [
        "variables.ownedBySecretSync && variables.labelled",
        "variables.wasOwnedBySecretSync",
    ]
    binding = objects[("ValidatingAdmissionPolicyBinding", "wisp-sync-owned-secrets")]["spec"]
    assert binding == {"policyName": "wisp-sync-owned-secrets", "validationActions": ["Deny"]}


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
