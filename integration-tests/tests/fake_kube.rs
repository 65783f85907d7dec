//! The fake API server against kube-rs' own client, watcher and metadata watcher: if kube-rs accepts it, wisp's
//! programs (built on kube-rs) can be tested against it.

use std::fmt::Debug;
use std::time::Duration;

use futures::{Stream, StreamExt};
use integration_tests::fake_kube::{FakeKube, KubeVersion, PARTIAL_OBJECT_METADATA, RecordedRequest};
use integration_tests::pki::TestPki;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, ResourceExt};
use pretty_assertions::assert_eq;
use serde_json::json;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(20);

struct Setup {
    kube: FakeKube,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn setup_with(version: KubeVersion) -> Setup {
    let pki = TestPki::new();
    let kube = FakeKube::start_with(&pki, version).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = Kubeconfig::read_from(kube.write_kubeconfig(dir.path())).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    Setup {
        kube,
        client,
        _dir: dir,
    }
}

async fn setup() -> Setup {
    setup_with(KubeVersion::default()).await
}

fn sa(namespace: &str, name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
}

fn names<K: ResourceExt>(objects: &[K]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
        .collect()
}

async fn next<T: Debug>(stream: &mut (impl Stream<Item = T> + Unpin)) -> T {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the watch stream produced nothing")
        .expect("the watch stream ended")
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn version_is_configurable_and_reported_to_kube_rs() {
    let s = setup_with(KubeVersion { major: 1, minor: 28 }).await;
    let info = s.client.apiserver_version().await.unwrap();
    assert_eq!(
        (info.major.as_str(), info.minor.as_str(), info.git_version.as_str()),
        ("1", "28", "v1.28.0")
    );
    s.kube.set_version(1, 29);
    assert_eq!(s.client.apiserver_version().await.unwrap().minor, "29");
}

#[tokio::test]
async fn lists_cluster_wide_and_per_namespace_and_gets_one() {
    let s = setup().await;
    s.kube.upsert(sa("b", "z"));
    s.kube.upsert(sa("a", "y"));
    s.kube.upsert(sa("a", "x"));
    let all: Api<ServiceAccount> = Api::all(s.client.clone());
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), vec!["a/x", "a/y", "b/z"]);
    assert_eq!(list.metadata.resource_version.as_deref(), Some("3"));
    let in_a: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "a");
    assert_eq!(
        names(&in_a.list(&ListParams::default()).await.unwrap().items),
        vec!["a/x", "a/y"]
    );
    let y = in_a.get("y").await.unwrap();
    assert_eq!(y.metadata.resource_version.as_deref(), Some("2"));
    assert_eq!(y.metadata.uid.as_deref(), Some("00000000-0000-4000-8000-000000000002"));

    let requests = s.kube.requests();
    let paths: Vec<(&str, &str)> = requests.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
    assert_eq!(
        paths,
        vec![
            ("GET", "/api/v1/serviceaccounts"),
            ("GET", "/api/v1/namespaces/a/serviceaccounts"),
            ("GET", "/api/v1/namespaces/a/serviceaccounts/y"),
        ]
    );
}

#[tokio::test]
async fn missing_objects_are_kube_api_errors_with_the_api_server_status() {
    let s = setup().await;
    let api: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let status = api_error(api.get("missing").await.unwrap_err());
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "serviceaccounts \"missing\" not found");
    assert_eq!(api.get_opt("missing").await.unwrap(), None);
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized_except_version() {
    let pki = TestPki::new();
    let kube = FakeKube::start(&pki).await;
    let http = pki.reqwest_client();
    let response = http
        .get(format!("{}/api/v1/serviceaccounts", kube.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
               "reason": "Unauthorized", "code": 401})
    );
    let wrong = http
        .get(format!("{}/version", kube.url()))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let anonymous = http.get(format!("{}/version", kube.url())).send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    let authorized = http
        .get(format!("{}/api/v1/serviceaccounts", kube.url()))
        .bearer_auth(kube.token())
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    assert_eq!(
        authorized.json::<serde_json::Value>().await.unwrap(),
        json!({"kind": "ServiceAccountList", "apiVersion": "v1", "metadata": {"resourceVersion": "0"}, "items": []})
    );
}

#[tokio::test]
async fn watcher_lists_then_streams_added_modified_and_deleted() {
    let s = setup().await;
    s.kube.upsert(sa("default", "first"));
    let api: Api<ServiceAccount> = Api::all(s.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    match next(&mut events).await.unwrap() {
        Event::InitApply(sa) => assert_eq!(sa.name_any(), "first"),
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));

    s.kube.upsert(sa("default", "second"));
    match next(&mut events).await.unwrap() {
        Event::Apply(sa) => assert_eq!(
            (sa.name_any(), sa.resource_version()),
            ("second".into(), Some("2".into()))
        ),
        other => panic!("expected Apply, got {other:?}"),
    }
    let mut annotated = sa("default", "first");
    annotated["metadata"]["annotations"] = json!({"azure.workload.identity/client-id": "abc"});
    s.kube.upsert(annotated);
    match next(&mut events).await.unwrap() {
        Event::Apply(sa) => assert_eq!(
            sa.annotations().get("azure.workload.identity/client-id").unwrap(),
            "abc"
        ),
        other => panic!("expected Apply, got {other:?}"),
    }
    s.kube
        .delete("v1", "ServiceAccount", Some("default"), "second")
        .unwrap();
    match next(&mut events).await.unwrap() {
        Event::Delete(sa) => assert_eq!(
            (sa.name_any(), sa.resource_version()),
            ("second".into(), Some("4".into()))
        ),
        other => panic!("expected Delete, got {other:?}"),
    }

    let requests = s.kube.requests();
    let list = &requests[0];
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/api/v1/serviceaccounts")
    );
    assert_eq!(list.query, [("limit".to_string(), "500".to_string())].into());
    let watch = &requests[1];
    assert_eq!(
        watch.query,
        [
            ("watch", "true"),
            ("timeoutSeconds", "290"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", "1")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    );
}

#[tokio::test]
async fn metadata_watcher_receives_partial_object_metadata() {
    let s = setup().await;
    let mut with_annotation = sa("ns1", "meta");
    with_annotation["metadata"]["annotations"] = json!({"azure.workload.identity/tenant-id": "t1"});
    s.kube.upsert(with_annotation);
    let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(s.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    match next(&mut events).await.unwrap() {
        Event::InitApply(meta) => {
            assert_eq!(meta.name_any(), "meta");
            assert_eq!(
                meta.annotations().get("azure.workload.identity/tenant-id").unwrap(),
                "t1"
            );
        }
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    s.kube.upsert(sa("ns2", "later"));
    match next(&mut events).await.unwrap() {
        Event::Apply(meta) => assert_eq!(meta.namespace().as_deref(), Some("ns2")),
        other => panic!("expected Apply, got {other:?}"),
    }
    let accepts: Vec<Option<String>> = s.kube.requests().into_iter().map(|r| r.accept).collect();
    assert_eq!(
        accepts,
        vec![
            Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1".to_string()),
            Some(PARTIAL_OBJECT_METADATA.to_string()),
        ]
    );
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    let s = setup().await;
    s.kube.upsert(sa("default", "one"));
    let api: Api<ServiceAccount> = Api::all(s.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitApply(sa) if sa.name_any() == "one"));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    let watch: &RecordedRequest = &s.kube.requests()[0];
    assert_eq!(watch.query.get("sendInitialEvents").map(String::as_str), Some("true"));
}

#[tokio::test]
async fn a_compacted_version_makes_the_watcher_relist() {
    let s = setup().await;
    s.kube.upsert(sa("default", "one"));
    let api: Api<ServiceAccount> = Api::all(s.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitApply(_)));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    s.kube.upsert(sa("default", "two"));
    assert!(matches!(next(&mut events).await.unwrap(), Event::Apply(sa) if sa.name_any() == "two"));
    // The watcher only touches the server when polled, so these three happen before it notices the closed watch.
    s.kube.close_watches();
    s.kube.upsert(sa("default", "three"));
    s.kube.compact();
    // It resumes from version 2, older than the compacted 3: 410 Gone, then a fresh list.
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert_eq!(status.message, "too old resource version: 2 (3)");
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    let mut relisted = vec![];
    loop {
        match next(&mut events).await.unwrap() {
            Event::InitApply(sa) => relisted.push(sa.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(relisted, vec!["one", "three", "two"]);
}

#[tokio::test]
async fn get_only_objects_miss_the_cache_but_answer_a_live_get() {
    let s = setup().await;
    s.kube.insert_get_only(sa("default", "late"));
    let api: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 0);
    assert_eq!(api.get("late").await.unwrap().name_any(), "late");
    s.kube.upsert(sa("default", "late"));
    assert_eq!(
        names(&api.list(&ListParams::default()).await.unwrap().items),
        vec!["default/late"]
    );
}

#[tokio::test]
async fn stale_updates_conflict_and_unchanged_writes_keep_the_version() {
    let s = setup().await;
    let api: Api<Secret> = Api::namespaced(s.client.clone(), "default");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("synced".into()),
            ..Default::default()
        },
        string_data: None,
        data: Some([("k".to_string(), k8s_openapi::ByteString(b"v1".to_vec()))].into()),
        ..Default::default()
    };
    let created = api.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(created.resource_version().as_deref(), Some("1"));
    let status = api_error(api.create(&PostParams::default(), &secret).await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(status.message, "secrets \"synced\" already exists");

    let unchanged = api.replace("synced", &PostParams::default(), &created).await.unwrap();
    assert_eq!(unchanged.resource_version().as_deref(), Some("1"));
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), k8s_openapi::ByteString(b"v2".to_vec()))].into());
    let updated = api.replace("synced", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(updated.resource_version().as_deref(), Some("2"));
    let status = api_error(
        api.replace("synced", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on secrets \"synced\": the object has been modified; please apply your changes \
         to the latest version and try again"
    );
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_requires_a_field_manager() {
    let s = setup().await;
    let api: Api<Secret> = Api::namespaced(s.client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied", "labels": {"a": "1"}},
                         "data": {"k": "djE="}});
    // Applying the same configuration twice: the second apply changes nothing.
    let apply = async || {
        api.patch(
            "applied",
            &PatchParams::apply("wisp-agent").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap()
    };
    let created = apply().await;
    assert_eq!(created.resource_version().as_deref(), Some("1"));
    let again = apply().await;
    assert_eq!(again.resource_version().as_deref(), Some("1"));
    let merged = api
        .patch(
            "applied",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.labels().len(), 2);
    assert_eq!(merged.resource_version().as_deref(), Some("2"));
    let apply_request = &s.kube.requests()[0];
    assert_eq!(
        apply_request.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(
        apply_request.query.get("fieldManager").map(String::as_str),
        Some("wisp-agent")
    );
    assert_eq!(apply_request.body.as_ref(), Some(&applied));

    let status = api_error(
        api.patch("applied", &PatchParams::default(), &Patch::Apply(&applied))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let s = setup().await;
    for name in ["a", "b", "c"] {
        s.kube.upsert(sa("default", name));
    }
    let api: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), vec!["default/a", "default/b"]);
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second.items), vec!["default/c"]);
    assert_eq!(second.metadata.continue_, None);
}

/// The mechanism e2e tests rely on for the agent: a child process trusts the test CA only through
/// `SSL_CERT_FILE` and resolves `.test` names only through the hosts file of its mount namespace.
#[tokio::test]
async fn child_processes_trust_the_ca_via_ssl_cert_file_and_resolve_fake_names() {
    use integration_tests::process::Program;

    let pki = TestPki::new();
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello from the fake" }));
    let server = pki.serve(router, &["kv1.vault.wisp.test"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = pki.write_ca_cert(dir.path());
    let url = format!("https://kv1.vault.wisp.test:{}/hello", server.port());
    let probe = || Program::from_path("probe", env!("CARGO_BIN_EXE_wisp-https-probe")).arg(&url);

    let mut trusted = probe()
        .trust_ca_file(&ca_file)
        .resolve_to_loopback(&["kv1.vault.wisp.test"])
        .spawn();
    let status = trusted.wait_for_exit(PATIENCE).await.expect("the probe exits");
    assert!(status.success(), "{}", trusted.logs());
    assert_eq!(trusted.logs(), "200\nhello from the fake\n");

    let mut untrusting = probe().resolve_to_loopback(&["kv1.vault.wisp.test"]).spawn();
    let status = untrusting.wait_for_exit(PATIENCE).await.expect("the probe exits");
    assert_eq!(status.code(), Some(1));
    assert!(untrusting.logs().contains("UnknownIssuer"), "{}", untrusting.logs());

    let mut unresolved = probe().trust_ca_file(&ca_file).spawn();
    let status = unresolved.wait_for_exit(PATIENCE).await.expect("the probe exits");
    assert_eq!(status.code(), Some(1));
    assert!(unresolved.logs().contains("dns error"), "{}", unresolved.logs());
}

#[tokio::test]
async fn custom_resources_events_and_webhook_configurations_are_served() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::events::v1::Event as KubeEvent;
    use kube::api::{ApiResource, DynamicObject};

    let s = setup().await;
    let spc_resource = ApiResource {
        group: "secrets-store.csi.x-k8s.io".into(),
        version: "v1".into(),
        api_version: "secrets-store.csi.x-k8s.io/v1".into(),
        kind: "SecretProviderClass".into(),
        plural: "secretproviderclasses".into(),
    };
    let spcs: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &spc_resource);
    let status = api_error(spcs.get("azure-kvname-wi").await.unwrap_err());
    assert_eq!(
        status.message,
        "secretproviderclasses.secrets-store.csi.x-k8s.io \"azure-kvname-wi\" not found"
    );
    s.kube.upsert(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "azure-kvname-wi", "namespace": "default"},
        "spec": {"provider": "azure", "parameters": {"keyvaultName": "kv1"}}
    }));
    let listed = spcs.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let spc = &listed.items[0];
    assert_eq!(spc.types.as_ref().map(|t| t.kind.as_str()), Some("SecretProviderClass"));
    assert_eq!(spc.data["spec"]["parameters"]["keyvaultName"], "kv1");

    let events: Api<KubeEvent> = Api::namespaced(s.client.clone(), "default");
    let event = KubeEvent {
        metadata: ObjectMeta {
            generate_name: Some("busybox.".into()),
            ..Default::default()
        },
        reason: Some("FailedMount".into()),
        event_time: None,
        ..Default::default()
    };
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(
        name.starts_with("busybox.") && name.len() == "busybox.".len() + 5,
        "{name}"
    );
    assert_eq!(s.kube.list("events.k8s.io/v1", "Event").len(), 1);

    s.kube.upsert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "wisp-webhook"},
        "webhooks": [{"name": "mutation.wisp.io", "clientConfig": {"caBundle": ""}, "sideEffects": "None",
                      "admissionReviewVersions": ["v1"]}]
    }));
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(s.client.clone());
    let operations: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "Q0E="}
    ]))
    .unwrap();
    let patched = mwcs
        .patch("wisp-webhook", &PatchParams::default(), &Patch::Json::<()>(operations))
        .await
        .unwrap();
    assert_eq!(
        patched.webhooks.unwrap()[0].client_config.ca_bundle,
        Some(k8s_openapi::ByteString(b"CA".to_vec()))
    );
    let stored = s
        .kube
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            "wisp-webhook",
        )
        .unwrap();
    assert_eq!(stored["webhooks"][0]["clientConfig"]["caBundle"], "Q0E=");
}

#[tokio::test]
async fn injected_failures_answer_matching_requests_then_stop() {
    let s = setup().await;
    s.kube.upsert(sa("default", "flaky"));
    let path = "/api/v1/namespaces/default/serviceaccounts/flaky";
    let api: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    s.kube.fail_requests("get", path, 500, 1);
    let status = api_error(api.get("flaky").await.unwrap_err());
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            500,
            "InternalError",
            "injected failure 500 for GET /api/v1/namespaces/default/serviceaccounts/flaky"
        )
    );
    // kube-rs 5 retries 429, 503 and 504 by itself: one 503 costs a request but not the call.
    s.kube.fail_requests("GET", path, 503, 1);
    assert_eq!(api.get("flaky").await.unwrap().name_any(), "flaky");
    let statuses: Vec<u16> = s.kube.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 503, 200]);
}

#[tokio::test]
async fn deleting_a_get_only_object_sends_watches_nothing() {
    let s = setup().await;
    s.kube.upsert(sa("default", "seen"));
    s.kube.insert_get_only(sa("default", "unseen"));
    let api: Api<ServiceAccount> = Api::all(s.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitApply(sa) if sa.name_any() == "seen"));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    assert!(
        s.kube
            .delete("v1", "ServiceAccount", Some("default"), "unseen")
            .is_some()
    );
    s.kube.delete("v1", "ServiceAccount", Some("default"), "seen").unwrap();
    // The first event after the GET-only deletion is the visible one's.
    assert!(matches!(next(&mut events).await.unwrap(), Event::Delete(sa) if sa.name_any() == "seen"));
}

#[tokio::test]
async fn a_label_selected_watch_sees_objects_enter_and_leave_the_selection() {
    let s = setup().await;
    s.kube.upsert(sa("default", "moving"));
    let api: Api<ServiceAccount> = Api::all(s.client.clone());
    let config = watcher::Config::default().labels("secrets-store.csi.k8s.io/managed=true");
    let mut events = watcher::watcher(api, config).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    let mut labelled = sa("default", "moving");
    labelled["metadata"]["labels"] = json!({"secrets-store.csi.k8s.io/managed": "true"});
    s.kube.upsert(labelled);
    assert!(matches!(next(&mut events).await.unwrap(), Event::Apply(sa) if sa.name_any() == "moving"));
    s.kube.upsert(sa("default", "moving"));
    assert!(matches!(next(&mut events).await.unwrap(), Event::Delete(sa) if sa.name_any() == "moving"));
    let list = &s.kube.requests()[0];
    assert_eq!(
        list.query.get("labelSelector").map(String::as_str),
        Some("secrets-store.csi.k8s.io/managed=true")
    );
}

#[tokio::test]
async fn secret_syncs_have_a_status_subresource_and_generation_and_their_secrets_are_collected() {
    use kube::api::{ApiResource, DynamicObject};
    use kube::core::GroupVersionKind;

    let s = setup().await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secret-sync.x-k8s.io", "v1alpha1", "SecretSync"),
        "secretsyncs",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &resource);
    let mut object = DynamicObject::new("app", &resource).within("default");
    object.data = json!({"spec": {"serviceAccountName": "sa"}, "status": {"syncHash": "ignored on create"}});
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.data.get("status"), None);

    // A status write changes only the status; an object write keeps it and counts a spec change.
    let patched = api
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"syncHash": "h1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (patched.metadata.generation, &patched.data["status"]),
        (Some(1), &json!({"syncHash": "h1"}))
    );
    let patched = api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"forceSynchronization": "now"}, "status": {"syncHash": "lost"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (patched.metadata.generation, &patched.data["status"]),
        (Some(2), &json!({"syncHash": "h1"}))
    );
    let labelled = api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2), "metadata changes do not count");

    // A Secret owned by it alone goes with it; one with another owner too stays.
    let owner = |uid: &str| json!({"apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync", "name": "app", "uid": uid});
    let uid = created.metadata.uid.clone().unwrap();
    s.kube.upsert(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app", "namespace": "default", "ownerReferences": [owner(&uid)]}}));
    s.kube.upsert(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared", "namespace": "default", "ownerReferences": [owner(&uid), owner("other")]}}));
    api.delete("app", &Default::default()).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), "default");
    assert_eq!(secrets.get_opt("app").await.unwrap(), None);
    assert!(secrets.get_opt("shared").await.unwrap().is_some());
}

#[tokio::test]
async fn token_requests_are_signed_by_the_issuer_given() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};

    let s = setup().await;
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["api://AzureADTokenExchange".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    // (Without serve_token_requests the fake answers 503, which kube-rs retries for minutes: not tested here.)
    s.kube.upsert(sa("default", "workload"));
    let issuer = integration_tests::issuer::TestIssuer::new("https://oidc.example/cluster").unwrap();
    s.kube.serve_token_requests(issuer.clone());
    let missing = api_error(
        sas.create_token_request("nobody", &PostParams::default(), &request)
            .await
            .unwrap_err(),
    );
    assert_eq!(missing.code, 404);
    let issued = sas
        .create_token_request("workload", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued.status.unwrap().token;
    let claims = integration_tests::issuer::unverified_claims(&token).unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:default:workload");
    assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
    assert_eq!(claims["iss"], "https://oidc.example/cluster");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims["kubernetes.io"].get("pod").is_none());
    let header = integration_tests::issuer::unverified_header(&token).unwrap();
    assert_eq!(header["kid"], issuer.key().kid());
}
