//! The pure mutation on a typical Deployment pod (2 containers, 1 init container, a few env vars and mounts),
//! with and without the proxy sidecar, and a reinvocation (already mutated, empty patch): `mutate_pod` on the pod
//! view, as the webhook calls it, and the pod parsed from bytes (what the handler adds around it).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use wisp_webhook::mutate::{MutationConfig, ServiceAccountInfo, mutate, mutate_pod};
use wisp_webhook::pod::{Lenient, Pod};

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

fn config() -> MutationConfig {
    fixtures::mutation_config(true)
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "api-7d9f8c6b5d-",
            "namespace": "prod",
            "labels": {"app": "api", "azure.workload.identity/use": "true", "pod-template-hash": "7d9f8c6b5d"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8c6b5d", "uid": "6f1c", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "api",
            "initContainers": [{"name": "migrate", "image": "api:1.2.3", "args": ["migrate"], "resources": {}}],
            "containers": [
                {
                    "name": "api", "image": "api:1.2.3",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/api"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
                },
                {"name": "metrics", "image": "exporter:0.9", "resources": {}}
            ],
            "volumes": [{"name": "config", "configMap": {"name": "api"}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst"
        }
    })
}

fn bench(c: &mut Criterion) {
    let config = config();
    let sa = ServiceAccountInfo {
        client_id: Some("11111111-1111-1111-1111-111111111111".to_string()),
        tenant_id: None,
        token_expiration: Some("3600".to_string()),
    };
    let plain = pod(json!({}));
    let proxy = pod(json!({"azure.workload.identity/inject-proxy-sidecar": "true"}));
    let mut mutated = plain.clone();
    json_patch::patch(&mut mutated, &mutate(&plain, &sa, &config).expect("mutates")).expect("applies");

    let view = |pod| Pod::from_value(pod).expect("an object");
    let (plain_view, proxy_view, mutated_view) = (view(&plain), view(&proxy), view(&mutated));
    c.bench_function("mutate/typical pod", |b| {
        b.iter(|| mutate_pod(black_box(&plain_view), &sa, &config))
    });
    c.bench_function("mutate/with proxy sidecar", |b| {
        b.iter(|| mutate_pod(black_box(&proxy_view), &sa, &config))
    });
    c.bench_function("mutate/reinvocation", |b| {
        b.iter(|| mutate_pod(black_box(&mutated_view), &sa, &config))
    });
    let body = serde_json::to_vec(&plain).expect("json");
    c.bench_function("mutate/parse + mutate + encode patch", |b| {
        b.iter(|| {
            let mut de = serde_json::Deserializer::from_slice(black_box(&body));
            let pod: Option<Pod> = Lenient::read(&mut de).expect("json");
            mutate_pod(&pod.expect("an object"), &sa, &config).expect("mutates")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
