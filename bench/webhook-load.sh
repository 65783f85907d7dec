#!/usr/bin/env bash
# Load test of the running wisp-webhook: AdmissionReviews over TLS 1.3 with keep-alive from wrk (another process),
# reporting admissions/s, latency percentiles and the webhook's peak RSS.
#
#   bench/webhook-load.sh [DURATION] [CONNECTIONS]
#
# DURATION defaults to 20s, CONNECTIONS to 32 (wrk is closed-loop: fewer connections, lower rate and latency).
# The environment reaches the webhook, e.g. TOKIO_WORKER_THREADS=1 keeps it on one core while wrk uses the other.
# WEBHOOK_CPUS and WRK_CPUS pin the two processes with taskset (e.g. WEBHOOK_CPUS=0 WRK_CPUS=1); THREADS sets wrk's
# thread count (default 1). WEBHOOK_BIN runs another build of the webhook (no cargo build), e.g. for a before/after.
# Needs wrk (Debian: apt-get install wrk), openssl, curl, python3.
# The webhook reads ServiceAccounts from bench/webhook-fake-apiserver.py (plain HTTP).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=${1:-20s}
connections=${2:-32}
threads=${THREADS:-1}
pin_webhook=(); [ -n "${WEBHOOK_CPUS:-}" ] && pin_webhook=(taskset -c "$WEBHOOK_CPUS")
pin_wrk=(); [ -n "${WRK_CPUS:-}" ] && pin_wrk=(taskset -c "$WRK_CPUS")

for tool in wrk openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool not found (wrk: apt-get install wrk)" >&2; exit 1; }
done

if [ -n "${WEBHOOK_BIN:-}" ]; then
  bin=$WEBHOOK_BIN
else
  cargo build --release -p wisp-webhook --manifest-path "$root/Cargo.toml" >&2
  bin="$root/target/release/wisp-webhook"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port); port=$(free_port); health_port=$(free_port); metrics_port=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

python3 "$root/bench/webhook-fake-apiserver.py" "$api_port" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$api_port/version" >/dev/null && break
  sleep 0.05
done
cat > "$work/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: http://127.0.0.1:$api_port
contexts:
- name: bench
  context: {cluster: bench, user: bench}
current-context: bench
users:
- name: bench
  user: {}
KUBECONFIG

KUBECONFIG="$work/kubeconfig" AZURE_TENANT_ID=00000000-0000-0000-0000-000000000000 \
  "${pin_webhook[@]}" "$bin" --port "$port" --webhook-cert-dir "$work" --health-addr "127.0.0.1:$health_port" \
  --metrics-addr "127.0.0.1:$metrics_port" --log-level warn 2>"$work/webhook.log" &
webhook=$!
pids+=($webhook)

for _ in $(seq 1 200); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$health_port/readyz")" = 200 ] && break
  sleep 0.05
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$health_port/readyz")" = 200 ] || {
  echo "webhook not ready:" >&2; cat "$work/webhook.log" >&2; exit 1; }

cat > "$work/review.json" <<'REVIEW'
{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bench-uid","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"bench","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5d-","namespace":"bench","labels":{"app":"api","azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"workload","initContainers":[{"name":"migrate","image":"api:1.2.3","args":["migrate"]}],"containers":[{"name":"api","image":"api:1.2.3","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"}],"volumeMounts":[{"name":"config","mountPath":"/etc/api"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}},{"name":"metrics","image":"exporter:0.9"}],"volumes":[{"name":"config","configMap":{"name":"api"}}]}},"dryRun":false}}
REVIEW
# One request first: the run only counts if the webhook really mutates.
curl -sf --cacert "$work/tls.crt" -H 'Content-Type: application/json' --data-binary @"$work/review.json" \
  "https://127.0.0.1:$port/mutate-v1-pod" | grep -q '"allowed":true,"status":{"code":200},"patchType":"JSONPatch","patch":"' || {
  echo "the webhook did not mutate the sample pod" >&2; exit 1; }

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/review.json", "rb")
wrk.body = f:read("*a")
f:close()
LUA

echo "warm-up (3s)..." >&2
"${pin_wrk[@]}" wrk -t "$threads" -c "$connections" -d 3s -s "$work/post.lua" "https://127.0.0.1:$port/mutate-v1-pod" >/dev/null
rss_idle=$(awk '/VmRSS/ {print $2}' /proc/$webhook/status)
# CPU time of the webhook process (user + system, clock ticks), so that the cost of one admission can be told
# apart from how much of the machine the webhook got (wrk and anything else running compete for the same cores).
cpu_ticks() { awk '{print $14 + $15}' /proc/$webhook/stat; }
count() { curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^wisp_webhook_admissions_total/ {n += $2} END {print n}'; }
ticks_before=$(cpu_ticks); count_before=$(count)
echo "wrk -t $threads -c $connections -d $duration --latency (TLS 1.3, keep-alive)" \
  "webhook CPUs: ${WEBHOOK_CPUS:-any}, wrk CPUs: ${WRK_CPUS:-any}, webhook workers: ${TOKIO_WORKER_THREADS:-default}" >&2
"${pin_wrk[@]}" wrk -t "$threads" -c "$connections" -d "$duration" --latency -s "$work/post.lua" \
  "https://127.0.0.1:$port/mutate-v1-pod" | tee "$work/wrk.txt"
ticks_after=$(cpu_ticks); count_after=$(count)
peak=$(awk '/VmHWM/ {print $2}' /proc/$webhook/status)
rss=$(awk '/VmRSS/ {print $2}' /proc/$webhook/status)
errors=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^wisp_webhook_admissions_total' | sort)

echo
echo "== summary =="
awk '/Requests\/sec/ {print "admissions/s: " $2}' "$work/wrk.txt"
awk '/^ +50%/ {print "p50: " $2} /^ +99%/ {print "p99: " $2}' "$work/wrk.txt"
echo "webhook RSS: idle (after warm-up) ${rss_idle} KiB, end ${rss} KiB, peak (VmHWM) ${peak} KiB"
awk -v t="$((ticks_after - ticks_before))" -v hz="$(getconf CLK_TCK)" -v n="$((count_after - count_before))" \
  'BEGIN { if (n > 0) printf "webhook CPU: %.1f us per admission (%.2f CPU-seconds for %d admissions; %.0f admissions/s per fully used core)\n", t / hz * 1e6 / n, t / hz, n, n / (t / hz) }'
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$errors"
