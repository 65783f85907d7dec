//! The real `wisp-webhook` under 50 connections of admissions while ServiceAccounts are created and their
//! client-id annotation changed: every admission answers, with the annotation state at most one watch event old.
//!
//! The writer knows the sequence of writes. ServiceAccount `sa-I` goes through states 0 (absent), 1 (created
//! with client id `sa-I-v1`), 2, 3, … (client id `sa-I-vK`). For each admission the load client reads, before
//! sending, the last committed state C of its ServiceAccount and, after the answer, the last issued state I. The
//! acceptable answers are the states C−1 …= I: the state before the last write (whose watch event may not have
//! arrived yet), and whatever became current while the admission was in flight. A state before C−1 is a stale
//! answer; anything that is not one of the exact responses (or a transport error) is an error. Both must be 0.
//!
//! For "one watch event old" to be the webhook's promise rather than luck, the writer writes again only after the
//! webhook answered the previous write's state from its watch cache (a probe admission during which the fake API
//! saw no live GET of that ServiceAccount). Writes go round-robin over the ServiceAccounts, creating each on its
//! first write, so the load always meets one in its window and pods of the next, not yet created, one. Sizes come from the environment (`bench/webhook-churn.sh` runs a bigger case); timings
//! are printed, never asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration_tests::admission::{https_client, mutated_response, not_found_response, post, review, service_account};
use integration_tests::fake_kube::FakeKube;
use integration_tests::pki::TestPki;
use integration_tests::webhook_harness::Webhook;
use serde_json::Value;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(60);
const NS: &str = "load";

/// A size from the environment, or its default for CI.
fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
        .unwrap_or(default)
}

fn sa_name(i: usize) -> String {
    format!("sa-{i}")
}

fn client_id(i: usize, state: u32) -> String {
    format!("sa-{i}-v{state}")
}

/// The state a response shows for ServiceAccount `i`, if it is exactly one of the responses a state gives.
fn state_of(i: usize, uid: &str, response: &Value) -> Option<u32> {
    if *response == not_found_response(uid, NS, &sa_name(i)) {
        return Some(0);
    }
    let id = response["response"]["patch"][0]["value"][0]["value"].as_str()?;
    let state: u32 = id.strip_prefix(&format!("sa-{i}-v"))?.parse().ok()?;
    (*response == mutated_response(uid, id)).then_some(state)
}

/// What the writer has done, per ServiceAccount.
struct Ledger {
    /// The state of the last write begun (set before the fake stores it).
    issued: Vec<AtomicU32>,
    /// The state of the last write the fake stored.
    committed: Vec<AtomicU32>,
    /// ServiceAccounts whose creation has begun; the load picks among them and the next.
    created: AtomicUsize,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    admissions: u64,
    not_found: u64,
    /// Answers that were the state before the last committed write (the watch event in flight).
    one_behind: u64,
    stale: Vec<String>,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

async fn connection(c: usize, https: reqwest::Client, port: u16, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        // The ServiceAccounts created so far and the next one, whose pods are refused until it exists.
        let known = (ledger.created.load(Ordering::SeqCst) + 1).min(ledger.issued.len());
        let i = (c * 7 + n) % known;
        let uid = format!("c{c}-{n}");
        let committed = ledger.committed[i].load(Ordering::SeqCst);
        let low = committed.saturating_sub(1);
        let sent = Instant::now();
        let answer = post(&https, port, &review(&uid, NS, &sa_name(i))).await;
        tally.latencies.push(sent.elapsed());
        let high = ledger.issued[i].load(Ordering::SeqCst);
        tally.admissions += 1;
        match answer {
            Err(e) => tally.errors.push(format!("{uid} ({}): {e}", sa_name(i))),
            Ok(response) => match state_of(i, &uid, &response) {
                None => tally
                    .errors
                    .push(format!("{uid} ({}): unexpected {response}", sa_name(i))),
                Some(state) if state < low || state > high => tally.stale.push(format!(
                    "{uid} ({}): state {state}, acceptable {low}..={high}",
                    sa_name(i)
                )),
                Some(state) => {
                    if state == 0 {
                        tally.not_found += 1;
                    }
                    if state + 1 == committed {
                        tally.one_behind += 1;
                    }
                }
            },
        }
    }
    tally
}

/// Live GETs of ServiceAccount `i` the fake has answered so far.
fn live_reads(kube: &FakeKube, i: usize) -> usize {
    let path = format!("/api/v1/namespaces/{NS}/serviceaccounts/{}", sa_name(i));
    kube.requests().iter().filter(|r| r.path == path).count()
}

/// Admits pods of ServiceAccount `i` until one gets `state` from the webhook's cache (no live GET meanwhile).
async fn wait_until_cached(https: &reqwest::Client, webhook: &Webhook, kube: &FakeKube, i: usize, state: u32) -> u64 {
    let mut probes = 0;
    webhook
        .wait_for(
            &format!("{} state {state} in the watch cache", sa_name(i)),
            async || {
                probes += 1;
                let uid = format!("probe-{i}-{state}-{probes}");
                let reads = live_reads(kube, i);
                let response = post(https, webhook.port, &review(&uid, NS, &sa_name(i))).await.ok()?;
                (state_of(i, &uid, &response) == Some(state) && live_reads(kube, i) == reads).then_some(())
            },
        )
        .await;
    probes
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_under_service_account_churn_are_never_stale_and_never_fail() {
    let connections = size("WISP_LOAD_CONNECTIONS", 50);
    let accounts = size("WISP_LOAD_SERVICE_ACCOUNTS", 10);
    let writes = size("WISP_LOAD_WRITES", 60);
    assert!(
        accounts >= 1 && writes >= accounts,
        "at least one write per ServiceAccount"
    );

    let pki = TestPki::new();
    let kube = FakeKube::start(&pki).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.write_kubeconfig(dir.path());
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("cert dir");
    pki.write_server_cert(&cert_dir, &[]);
    let webhook = Webhook::start(&kubeconfig, &cert_dir, &["--native-sidecar=false"]);
    webhook.wait_ready().await;

    let ledger = Arc::new(Ledger {
        issued: (0..accounts).map(|_| AtomicU32::new(0)).collect(),
        committed: (0..accounts).map(|_| AtomicU32::new(0)).collect(),
        created: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(connection(
                c,
                https_client(pki.ca_pem()),
                webhook.port,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The writer: round-robin over the ServiceAccounts, creating each on its first write.
    let writer = https_client(pki.ca_pem());
    let mut probes = 0;
    let write = |w: usize| (w % accounts, (w / accounts) as u32 + 1);
    for w in 0..writes {
        // The previous write is in the cache first (so is every earlier one: the watch delivers in order).
        if let Some((previous, state)) = w.checked_sub(1).map(write) {
            probes += wait_until_cached(&writer, &webhook, &kube, previous, state).await;
        }
        let (i, state) = write(w);
        ledger.issued[i].store(state, Ordering::SeqCst);
        if state == 1 {
            ledger.created.store(i + 1, Ordering::SeqCst);
        }
        kube.upsert(service_account(NS, &sa_name(i), &client_id(i, state)));
        ledger.committed[i].store(state, Ordering::SeqCst);
    }
    // Every ServiceAccount's last state reaches the cache.
    for i in 0..accounts {
        let last = ledger.committed[i].load(Ordering::SeqCst);
        probes += wait_until_cached(&writer, &webhook, &kube, i, last).await;
    }
    stop.store(true, Ordering::SeqCst);
    let peak_rss = status_field(webhook.program.pid(), "VmHWM:");
    let mut tallies = Vec::with_capacity(connections);
    for task in load {
        tallies.push(
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("connection ends")
                .expect("task"),
        );
    }
    let elapsed = started.elapsed();

    let admissions: u64 = tallies.iter().map(|t| t.admissions).sum();
    let errors: Vec<&String> = tallies.iter().flat_map(|t| &t.errors).collect();
    let stale: Vec<&String> = tallies.iter().flat_map(|t| &t.stale).collect();
    let mut latencies: Vec<Duration> = tallies.iter().flat_map(|t| t.latencies.iter().copied()).collect();
    latencies.sort();
    let live: usize = (0..accounts).map(|i| live_reads(&kube, i)).sum();
    println!(
        "webhook churn: {connections} connections, {accounts} ServiceAccounts, {writes} writes ({probes} probe \
         admissions); {admissions} admissions in {:.2} s ({:.0}/s): {} not found (not created yet), {} one event \
         behind, {} stale, {} errors; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {live} live GETs; webhook \
         VmHWM {peak_rss}",
        elapsed.as_secs_f64(),
        admissions as f64 / elapsed.as_secs_f64(),
        tallies.iter().map(|t| t.not_found).sum::<u64>(),
        tallies.iter().map(|t| t.one_behind).sum::<u64>(),
        stale.len(),
        errors.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        percentile(&latencies, 1.0).as_secs_f64() * 1000.0,
    );

    assert_eq!(errors, Vec::<&String>::new());
    assert_eq!(stale, Vec::<&String>::new());
    // Every connection took part.
    let idle: Vec<usize> = (0..connections).filter(|&c| tallies[c].admissions == 0).collect();
    assert_eq!(idle, Vec::<usize>::new());
    let (status, metrics) = webhook.metrics("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("wisp_webhook_admissions_total{outcome=\"error\"} 0\n"),
        "{metrics}"
    );
    let status = webhook.terminate().await;
    assert!(status.success(), "exit status {status}");
}
