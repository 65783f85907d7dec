//! The whole admission handler in-process (`router().oneshot`): parse the AdmissionReview, look up the
//! ServiceAccount, mutate, encode the patch and the response. The same review as `bench/webhook-load.sh`, without
//! TLS, HTTP/1 and the kernel.

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use wisp_webhook::api;
use wisp_webhook::mutate::ServiceAccountInfo;
use wisp_webhook::sa_cache::ServiceAccountIndex;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bench-uid","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"bench","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5d-","namespace":"bench","labels":{"app":"api","azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"workload","initContainers":[{"name":"migrate","image":"api:1.2.3","args":["migrate"]}],"containers":[{"name":"api","image":"api:1.2.3","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"}],"volumeMounts":[{"name":"config","mountPath":"/etc/api"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}},{"name":"metrics","image":"exporter:0.9"}],"volumes":[{"name":"config","configMap":{"name":"api"}}]}},"dryRun":false}}"#;

fn router() -> axum::Router {
    let index = Arc::new(ServiceAccountIndex::new());
    index.apply(
        "bench",
        "workload",
        ServiceAccountInfo {
            client_id: Some("11111111-1111-1111-1111-111111111111".to_string()),
            ..Default::default()
        },
    );
    fixtures::admission_router(index, true)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let router = router();
    let body = axum::body::Bytes::from_static(REVIEW.as_bytes());
    let admit = || async {
        let request = Request::post(api::MUTATE_PATH)
            .header("content-type", "application/json")
            .body(Body::from(black_box(body.clone())))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        response.into_body().collect().await.expect("body").to_bytes()
    };
    assert!(
        runtime
            .block_on(admit())
            .starts_with(br#"{"apiVersion":"admission.k8s.io/v1""#)
    );
    c.bench_function("admission/handler (bench review)", |b| {
        b.iter(|| runtime.block_on(admit()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
