//! The agent's sockets called by gRPC clients that are not wisp's own: `python/grpc_clients.py` with Python
//! `grpcio` (gRPC core) and the pure-Python `h2`, each sending its own `:authority`, as kubelet's plugin watcher,
//! grpc-java, grpcurl and Python clients do. A protocol detail that wisp's tonic client and server agree on is
//! invisible to tests that use only them.
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
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
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
        let mut child = Command::new(&self.python)
            .arg(manifest.join("python/grpc_clients.py"))
            .arg(format!("--proto-dir={}", manifest.join("../agent/proto").display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the Python clients");
        let input = serde_json::to_vec(&wire).expect("calls JSON");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write the calls");
        let output = child.wait_with_output().expect("the Python clients");
        assert!(
            output.status.success(),
            "the Python clients failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let outcomes: Vec<Value> = serde_json::from_slice(&output.stdout).expect("outcomes JSON");
        assert_eq!(outcomes.len(), calls.len());
        outcomes
    }
}
