//! wisp's sockets and ports called by clients that are not wisp's own. `python/grpc_clients.py`: the agent's
//! unix sockets with Python `grpcio` (gRPC core) and the pure-Python `h2`, each sending its own `:authority`, as
//! kubelet's plugin watcher, grpc-java, grpcurl and Python clients do. `python/https_clients.py`: the webhook's
//! and the agent's TCP ports with OpenSSL's TLS and Python's HTTP/1.1 and HTTP/2 stacks. A protocol detail that
//! wisp's own client and server agree on is invisible to tests that use only them.
//!
//! The Python interpreter is `$WISP_TEST_PYTHON`, else the workspace's `.venv/bin/python`, which
//! `scripts/test.sh` creates with `python/requirements.txt`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use serde_json::Value;

/// Which client makes a call, and the `:authority` it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuthority {
    /// `grpcio`'s default channel to `unix:<path>`: it picks the authority itself.
    GrpcioDefault,
    /// `grpcio` with `grpc.default_authority` set.
    Grpcio(String),
    /// `h2` with no `:authority` at all.
    H2Absent,
    /// `h2` sending exactly this `:authority`.
    H2(String),
}

/// Every form of `:authority` a real client sends over a unix socket to `socket`: none, `localhost` (grpc-go's
/// CSI client), the raw path (grpcio, grpc-java, grpcurl), the percent-encoded path (kubelet's plugin watcher),
/// and something that is no authority at all.
pub fn authority_forms(socket: &Path) -> Vec<ClientAuthority> {
    let raw = socket.display().to_string();
    let encoded = percent_encoded(&raw);
    vec![
        ClientAuthority::GrpcioDefault,
        ClientAuthority::Grpcio(encoded.clone()),
        ClientAuthority::Grpcio(raw.clone()),
        ClientAuthority::H2Absent,
        ClientAuthority::H2("localhost".into()),
        ClientAuthority::H2(raw),
        ClientAuthority::H2(encoded),
        ClientAuthority::H2("not an authority: \u{2205} @@ //".into()),
    ]
}

/// `path` with every byte but unreserved ones percent-encoded, as grpc-go writes a unix target's authority.
pub fn percent_encoded(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One unary call: `method` is the gRPC path (`/csi.v1.Identity/GetPluginInfo`), `request` the message in
/// protobuf's JSON mapping.
#[derive(Debug, Clone)]
pub struct ForeignCall {
    pub socket: PathBuf,
    pub client: ClientAuthority,
    pub method: &'static str,
    pub request: Value,
}

#[derive(Serialize)]
struct WireCall<'a> {
    socket: &'a Path,
    client: &'static str,
    authority: Option<&'a str>,
    absent_authority: bool,
    method: &'static str,
    request: &'a Value,
}

/// Which Python HTTP stack makes an [`HttpCall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpClient {
    /// `http.client`: HTTP/1.1, over OpenSSL when `ca_file` is set.
    Http1,
    /// The `h2` library over OpenSSL with ALPN `h2`, as kube-apiserver calls webhooks.
    H2,
}

/// One HTTP request to `host:port`: HTTPS trusting only `ca_file`, or plain HTTP without it.
#[derive(Debug, Clone, Serialize)]
pub struct HttpCall {
    pub client: HttpClient,
    pub host: String,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Option<String>,
}

impl HttpCall {
    /// A plain HTTP/1.1 GET of `path` on `127.0.0.1:port` (health and metrics listeners).
    pub fn get(port: u16, path: &str) -> Self {
        Self {
            client: HttpClient::Http1,
            host: "127.0.0.1".into(),
            port,
            ca_file: None,
            method: "GET",
            path: path.into(),
            content_type: None,
            body: None,
        }
    }
}

/// The Python side: an interpreter with `python/requirements.txt` installed.
#[derive(Debug, Clone)]
pub struct ForeignClients {
    python: PathBuf,
}

impl ForeignClients {
    /// Panics, saying how to set it up, when no interpreter has the clients installed.
    pub fn find() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let python = std::env::var_os("WISP_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join(".venv/bin/python"));
        let usable = Command::new(&python)
            .args(["-c", "import grpc, grpc_tools, h2"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            usable,
            "{} cannot import grpc, grpc_tools and h2: run scripts/test.sh, or `python3 -m venv .venv && \
             .venv/bin/pip install -r integration-tests/python/requirements.txt`, or set WISP_TEST_PYTHON",
            python.display()
        );
        Self { python }
    }

    /// Makes `calls` in order; one outcome each: `{"code", "message", "response"}` or `{"reset": code}`.
    pub fn call(&self, calls: &[ForeignCall]) -> Vec<Value> {
        let wire: Vec<WireCall<'_>> = calls
            .iter()
            .map(|call| {
                let (client, authority, absent_authority) = match &call.client {
                    ClientAuthority::GrpcioDefault => ("grpcio", None, false),
                    ClientAuthority::Grpcio(a) => ("grpcio", Some(a.as_str()), false),
                    ClientAuthority::H2Absent => ("h2", None, true),
                    ClientAuthority::H2(a) => ("h2", Some(a.as_str()), false),
                };
                WireCall {
                    socket: &call.socket,
                    client,
                    authority,
                    absent_authority,
                    method: call.method,
                    request: &call.request,
                }
            })
            .collect();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let proto_dir = format!("--proto-dir={}", manifest.join("../agent/proto").display());
        self.run("grpc_clients.py", &[&proto_dir], &wire)
    }

    /// Makes `calls` in order; one outcome each: `{"status", "alpn", "body"}`.
    pub fn https(&self, calls: &[HttpCall]) -> Vec<Value> {
        self.run("https_clients.py", &[], calls)
    }

    /// Runs `python/<script>` with `calls` as JSON on stdin; returns its JSON list of outcomes, one per call.
    fn run<T: Serialize>(&self, script: &str, args: &[&str], calls: &[T]) -> Vec<Value> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(&self.python)
            .arg(manifest.join("python").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let input = serde_json::to_vec(calls).expect("calls JSON");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write the calls");
        let output = child.wait_with_output().expect("the Python clients");
        assert!(
            output.status.success(),
            "{script} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let outcomes: Vec<Value> = serde_json::from_slice(&output.stdout).expect("outcomes JSON");
        assert_eq!(outcomes.len(), calls.len());
        outcomes
    }
}
