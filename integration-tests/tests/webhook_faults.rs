//! Faults around the real `wisp-webhook`, each with its exact outcome and a recovery in the same process:
//!
//! - the Kubernetes API down (every connection dropped) or answering 500 while the ServiceAccount cache starts:
//!   alive, not ready, pods refused with the reason (never admitted unmutated), ready once the API is back;
//! - the API down or answering 500 while the cache watches: still ready, answering from the last cache, a
//!   ServiceAccount missing from it refused with the reason; the watch resumes from its resourceVersion (no
//!   re-list) and delivers what changed meanwhile;
//! - every re-list answered 500 after the watch history was compacted: still ready, answering from the last
//!   cache (and live GETs for ServiceAccounts it does not hold), the re-list retried until it succeeds;
//! - `--native-sidecar=auto` with the API down at start: the webhook stops with the reason (kubelet restarts it);
//! - the serving certificate swapped under load, by a `..data` symlink swap and by a non-atomic write of tls.crt
//!   then tls.key: no failed admission, and new connections get the new certificate (the old one meanwhile).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use integration_tests::admission::{
    denied_response, https_client, https_client_without_reuse, mutated_response, post, review, service_account,
};
use integration_tests::fake_kube::{FakeKube, Outage, RecordedRequest};
use integration_tests::pki::TestPki;
use integration_tests::webhook_harness::{Webhook, certificate_der, served_certificate};
use pretty_assertions::assert_eq;
use serde_json::Value;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(30);
const NS: &str = "default";
const SA_PATH: &str = "/api/v1/serviceaccounts";
/// What the webhook logs when a changed certificate pair is not usable.
const REFUSED: &str = "serving certificate not (re)loaded; keeping the previous one";

struct Cluster {
    pki: TestPki,
    kube: FakeKube,
    kubeconfig: PathBuf,
    cert_dir: PathBuf,
    _dir: tempfile::TempDir,
}

/// The fake API with the ServiceAccount `workload` (client-1) and a serving certificate in plain files.
async fn cluster() -> Cluster {
    let pki = TestPki::new();
    let kube = FakeKube::start(&pki).await;
    kube.upsert(service_account(NS, "workload", "client-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.write_kubeconfig(dir.path());
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("cert dir");
    let cert = pki.server_cert(&[]);
    std::fs::write(cert_dir.join("tls.crt"), &cert.cert_pem).expect("write cert");
    std::fs::write(cert_dir.join("tls.key"), &cert.key_pem).expect("write key");
    Cluster {
        pki,
        kube,
        kubeconfig,
        cert_dir,
        _dir: dir,
    }
}

fn is_watch(r: &RecordedRequest) -> bool {
    r.query.get("watch").is_some_and(|w| w == "true")
}

/// The ServiceAccount cache's LIST requests (not watches) answered with `status` (0: connection dropped).
fn lists(kube: &FakeKube, status: u16) -> usize {
    kube.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == SA_PATH && !is_watch(r) && r.status == status)
        .count()
}

/// Its WATCH requests answered with `status`.
fn watches(kube: &FakeKube, status: u16) -> usize {
    kube.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == SA_PATH && is_watch(r) && r.status == status)
        .count()
}

/// The denial of a pod whose ServiceAccount cannot be read live (the API server down or failing, not refusing).
fn lookup_failed(uid: &str, name: &str, reason: &str) -> Value {
    denied_response(
        uid,
        400,
        &format!(
            "cannot read serviceaccount {NS}/{name} from the Kubernetes API: {reason}; the API server is unreachable \
             or failing; create the pod again once it answers"
        ),
    )
}

/// What the live read of ServiceAccount `name` reports during `outage`.
fn outage_reason(outage: Outage, name: &str) -> String {
    match outage {
        Outage::Down => "ServiceError: client error (SendRequest)".to_string(),
        Outage::Status(code) | Outage::ListStatus(code) => format!(
            "HTTP {code} InternalError: injected outage: {code} for GET /api/v1/namespaces/{NS}/serviceaccounts/{name}"
        ),
    }
}

/// The status an outage's requests are recorded with.
fn failed_status(outage: Outage) -> u16 {
    match outage {
        Outage::Down => 0,
        Outage::Status(code) | Outage::ListStatus(code) => code,
    }
}

async fn admit(https: &reqwest::Client, webhook: &Webhook, uid: &str, sa: &str) -> Value {
    post(https, webhook.port, &review(uid, NS, sa))
        .await
        .unwrap_or_else(|e| panic!("admission {uid}: {e}; webhook log:\n{}", webhook.log()))
}

/// Admits pods of `sa` until one gets `client_id` (what the watch has to deliver first).
async fn wait_for_client_id(https: &reqwest::Client, webhook: &Webhook, sa: &str, client_id: &str) {
    webhook
        .wait_for(&format!("pods of {sa} get {client_id}"), async || {
            let response = admit(https, webhook, "uid-wait", sa).await;
            (response == mutated_response("uid-wait", client_id)).then_some(())
        })
        .await;
}

/// A webhook of `c` whose cache has synced, with a client, after one admission of `workload` (client-1).
async fn synced_webhook(c: &Cluster) -> (reqwest::Client, Webhook) {
    let https = https_client(c.pki.ca_pem());
    let webhook = Webhook::start(&c.kubeconfig, &c.cert_dir, &["--native-sidecar=false"]);
    webhook.wait_ready().await;
    assert_eq!(
        admit(&https, &webhook, "uid-1", "workload").await,
        mutated_response("uid-1", "client-1")
    );
    (https, webhook)
}

fn assert_still_running(webhook: &mut Webhook) {
    assert_eq!(
        webhook.program.try_wait(),
        None,
        "the webhook exited; log:\n{}",
        webhook.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_api_is_down_or_failing_at_start_then_ready_without_restart() {
    for outage in [Outage::Down, Outage::Status(500)] {
        let c = cluster().await;
        let https = https_client(c.pki.ca_pem());
        c.kube.start_outage(outage);
        // No version read at start: the cache alone depends on the API.
        let mut webhook = Webhook::start(&c.kubeconfig, &c.cert_dir, &["--native-sidecar=false"]);
        let health = webhook
            .wait_for("/healthz answers", async || webhook.health("/healthz").await)
            .await;
        assert_eq!(health, (200, "ok".to_string()));
        // The initial list is retried with backoff; every attempt fails.
        c.kube
            .wait_until("two failed lists", PATIENCE, |k| lists(k, failed_status(outage)) >= 2)
            .await;
        assert_eq!(
            webhook.health("/readyz").await,
            Some((503, "serviceaccount cache has not synced yet".to_string())),
            "{outage:?}"
        );
        // Not ready, so kube-apiserver sends nothing through the Service; a review sent anyway is refused with
        // the reason, never admitted unmutated.
        assert_eq!(
            admit(&https, &webhook, "uid-1", "workload").await,
            lookup_failed("uid-1", "workload", &outage_reason(outage, "workload")),
            "{outage:?}"
        );
        let answered: Vec<u16> = c.kube.requests().iter().map(|r| r.status).collect();
        assert!(
            answered.iter().all(|&s| s == failed_status(outage)),
            "{outage:?}: {answered:?}"
        );

        // Written meanwhile through another API server; the list after the outage has it.
        c.kube.upsert(service_account(NS, "workload", "client-2"));
        c.kube.end_outage();
        webhook.wait_ready().await;
        assert_eq!(
            admit(&https, &webhook, "uid-2", "workload").await,
            mutated_response("uid-2", "client-2"),
            "{outage:?}"
        );
        assert_eq!(lists(&c.kube, 200), 1, "{outage:?}");
        assert_still_running(&mut webhook);
        let status = webhook.terminate().await;
        assert!(status.success(), "exit status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_native_sidecar_auto_an_api_down_at_start_stops_the_webhook_with_the_reason() {
    let c = cluster().await;
    c.kube.start_outage(Outage::Down);
    let mut webhook = Webhook::start(&c.kubeconfig, &c.cert_dir, &[]);
    let status = webhook
        .program
        .wait_for_exit(PATIENCE)
        .await
        .unwrap_or_else(|| panic!("the webhook kept running; log:\n{}", webhook.log()));
    assert_eq!(status.code(), Some(1), "log:\n{}", webhook.log());
    let log = webhook.log();
    assert!(
        log.contains(
            "cannot read the API server version to decide on native sidecars (or pass --native-sidecar=true|false)"
        ),
        "{log}"
    );
    let versions: Vec<(String, u16)> = c.kube.requests().into_iter().map(|r| (r.path, r.status)).collect();
    assert_eq!(versions, vec![("/version".to_string(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_down_or_failing_while_watching_answers_from_the_cache_and_resumes_the_watch() {
    for outage in [Outage::Down, Outage::Status(500)] {
        let c = cluster().await;
        let (https, mut webhook) = synced_webhook(&c).await;

        c.kube.clear_requests();
        c.kube.start_outage(outage);
        c.kube
            .wait_until("a failed re-watch", PATIENCE, |k| {
                watches(k, failed_status(outage)) >= 1
            })
            .await;
        // Still ready: every replica would fail the same way, and the cache it holds is the cluster's last state.
        assert_eq!(webhook.health("/readyz").await, Some((200, "ok".to_string())));
        assert_eq!(
            admit(&https, &webhook, "uid-2", "workload").await,
            mutated_response("uid-2", "client-1"),
            "{outage:?}"
        );
        // Created and changed meanwhile through another API server: not in the cache, and the live read fails.
        c.kube.upsert(service_account(NS, "fresh", "client-fresh"));
        c.kube.upsert(service_account(NS, "workload", "client-2"));
        assert_eq!(
            admit(&https, &webhook, "uid-3", "fresh").await,
            lookup_failed("uid-3", "fresh", &outage_reason(outage, "fresh")),
            "{outage:?}"
        );
        // The cache cannot learn the change before the API is back.
        assert_eq!(
            admit(&https, &webhook, "uid-4", "workload").await,
            mutated_response("uid-4", "client-1"),
            "{outage:?}"
        );

        c.kube.end_outage();
        wait_for_client_id(&https, &webhook, "workload", "client-2").await;
        assert_eq!(
            admit(&https, &webhook, "uid-5", "fresh").await,
            mutated_response("uid-5", "client-fresh"),
            "{outage:?}"
        );
        // The watch resumed from its resourceVersion: no re-list, and the fresh ServiceAccount came from the watch
        // (no live read of it after the outage).
        assert_eq!(lists(&c.kube, 200), 0, "{outage:?}");
        let fresh_reads: Vec<u16> = c
            .kube
            .requests()
            .iter()
            .filter(|r| r.path == format!("/api/v1/namespaces/{NS}/serviceaccounts/fresh"))
            .map(|r| r.status)
            .collect();
        assert_eq!(fresh_reads, vec![failed_status(outage)], "{outage:?}");
        assert_eq!(webhook.health("/readyz").await, Some((200, "ok".to_string())));
        assert_still_running(&mut webhook);
        let status = webhook.terminate().await;
        assert!(status.success(), "exit status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_relist_keeps_the_last_cache_and_is_retried_until_it_succeeds() {
    let c = cluster().await;
    let (https, mut webhook) = synced_webhook(&c).await;

    // The history is gone past the cache's resourceVersion (another kind's write moved the revision on), so the
    // re-watch gets 410 Gone, and every LIST fails: the cache must re-list and cannot.
    c.kube.clear_requests();
    c.kube.upsert(
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": NS}}),
    );
    c.kube.compact();
    c.kube.start_outage(Outage::ListStatus(500));
    c.kube
        .wait_until("two failed re-lists", PATIENCE, |k| lists(k, 500) >= 2)
        .await;
    assert_eq!(webhook.health("/readyz").await, Some((200, "ok".to_string())));
    assert_eq!(
        admit(&https, &webhook, "uid-2", "workload").await,
        mutated_response("uid-2", "client-1")
    );
    c.kube.upsert(service_account(NS, "fresh", "client-fresh"));
    c.kube.upsert(service_account(NS, "workload", "client-2"));
    // A ServiceAccount the cache does not hold is read live (GETs work)...
    assert_eq!(
        admit(&https, &webhook, "uid-3", "fresh").await,
        mutated_response("uid-3", "client-fresh")
    );
    // ...one it holds is answered from it, as it was before the re-list began.
    assert_eq!(
        admit(&https, &webhook, "uid-4", "workload").await,
        mutated_response("uid-4", "client-1")
    );

    c.kube.end_outage();
    wait_for_client_id(&https, &webhook, "workload", "client-2").await;
    assert_eq!(lists(&c.kube, 200), 1);
    assert_eq!(webhook.health("/readyz").await, Some((200, "ok".to_string())));
    assert_still_running(&mut webhook);
    let status = webhook.terminate().await;
    assert!(status.success(), "exit status {status}");
}

/// A serving certificate directory as kubelet lays out a Secret volume: `tls.crt` and `tls.key` are symlinks into
/// `..data`, itself a symlink to a timestamped directory that an update replaces with one rename.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn create(dir: &Path, cert_pem: &str, key_pem: &str) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.swap(cert_pem, key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).expect("file symlink");
        }
        volume
    }

    /// kubelet's atomic update: a new directory, a new `..data` link renamed over the old, the old directory gone.
    fn swap(&mut self, cert_pem: &str, key_pem: &str) {
        self.generation += 1;
        let data = self.dir.join(format!("..2026_01_01_00_00_0{}", self.generation));
        std::fs::create_dir(&data).expect("data dir");
        std::fs::write(data.join("tls.crt"), cert_pem).expect("write cert");
        std::fs::write(data.join("tls.key"), key_pem).expect("write key");
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().expect("name"), &link).expect("data link");
        std::fs::rename(&link, self.dir.join("..data")).expect("rename data link");
        if self.generation > 1 {
            let old = self.dir.join(format!("..2026_01_01_00_00_0{}", self.generation - 1));
            std::fs::remove_dir_all(old).expect("remove the old generation");
        }
    }
}

/// Admissions in flight until `stop`: half the clients keep their connection, half open one per admission (a new
/// handshake each, so they meet every certificate served). Every failure is kept with its reason.
struct Load {
    admitted: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ca_pem: &str, port: u16, clients: usize) -> Self {
        let admitted = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|client| {
                let https = if client % 2 == 0 {
                    https_client(ca_pem)
                } else {
                    https_client_without_reuse(ca_pem)
                };
                let (admitted, failures, stop) = (admitted.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let uid = format!("uid-{client}-{n}");
                        match post(&https, port, &review(&uid, NS, "workload")).await {
                            Ok(response) if response == mutated_response(&uid, "client-1") => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(other) => failures.lock().expect("failures").push(format!("{uid}: {other}")),
                            Err(e) => failures.lock().expect("failures").push(format!("{uid}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            admitted,
            failures,
            stop,
            tasks,
        }
    }

    fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Waits until `more` admissions have succeeded after this call: the load runs through the current state.
    async fn run_through(&self, webhook: &Webhook, more: u64) {
        let target = self.admitted() + more;
        webhook
            .wait_for(&format!("{more} more admissions"), async || {
                (self.admitted() >= target).then_some(())
            })
            .await;
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.admitted.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_swapped_under_load_fails_no_admission() {
    let c = cluster().await;
    let cert_dir = c.cert_dir.parent().expect("parent").join("secret-volume");
    std::fs::create_dir(&cert_dir).expect("secret volume dir");
    let first = c.pki.server_cert(&[]);
    let mut volume = SecretVolume::create(&cert_dir, &first.cert_pem, &first.key_pem);
    let webhook = Webhook::start(&c.kubeconfig, &cert_dir, &["--native-sidecar=false"]);
    webhook.wait_ready().await;
    let tls = c.pki.client_config();
    let served = async || served_certificate(tls.clone(), "127.0.0.1", webhook.port).await;
    assert_eq!(served().await, Ok(certificate_der(&first.cert_pem)));
    let load = Load::start(c.pki.ca_pem(), webhook.port, 8);
    load.run_through(&webhook, 50).await;

    // 1. kubelet's atomic swap of `..data`.
    let second = c.pki.server_cert(&[]);
    volume.swap(&second.cert_pem, &second.key_pem);
    let second_der = certificate_der(&second.cert_pem);
    webhook
        .wait_for("new connections get the second certificate", async || {
            (served().await.ok()? == second_der).then_some(())
        })
        .await;
    load.run_through(&webhook, 50).await;

    // 2. A non-atomic update in place: tls.crt first, tls.key a while later. The reloader meets the new certificate
    //    with the old key, refuses the pair and keeps serving the second certificate.
    let third = c.pki.server_cert(&[]);
    let refusals = || webhook.log().matches(REFUSED).count();
    let refused_before = refusals();
    std::fs::write(cert_dir.join("tls.crt"), &third.cert_pem).expect("write cert");
    webhook
        .wait_for("the reloader refuses the half-written pair", async || {
            (refusals() > refused_before).then_some(())
        })
        .await;
    assert_eq!(served().await, Ok(second_der.clone()));
    load.run_through(&webhook, 50).await;
    assert_eq!(served().await, Ok(second_der));
    std::fs::write(cert_dir.join("tls.key"), &third.key_pem).expect("write key");
    let third_der = certificate_der(&third.cert_pem);
    webhook
        .wait_for("new connections get the third certificate", async || {
            (served().await.ok()? == third_der).then_some(())
        })
        .await;
    load.run_through(&webhook, 50).await;

    let (admitted, failures) = load.stop().await;
    assert_eq!(failures, Vec::<String>::new());
    assert!(admitted >= 200, "{admitted}");
    let log = webhook.log();
    assert_eq!(
        log.matches("serving certificate loaded").count(),
        2,
        "one reload per completed update; log:\n{log}"
    );
    let status = webhook.terminate().await;
    assert!(status.success(), "exit status {status}");
}
