//! Running wisp's real binaries against the fakes, reachable only the way real users reach real services.
//!
//! - [`binary_path`] finds `target/<profile>/wisp-webhook` / `wisp-agent` next to the running test executable.
//! - [`Program`] spawns one with arguments and environment, captures its stdout and stderr (JSON logs) for
//!   assertions ([`RunningProgram::logs`], [`RunningProgram::wait_for_log`]), and kills it when dropped.
//! - Trust: the test CA reaches the program through `SSL_CERT_FILE` ([`Program::trust_ca_file`]), which
//!   `rustls-native-certs` (and so `rustls-platform-verifier` on Linux, reqwest's default verifier) reads
//!   instead of the system store: how a private cloud's CA is trusted without code changes.
//! - Names: fake services live at names like `kv1.vault.wisp.test` and `login.wisp.test` (`.test` is reserved,
//!   RFC 2606, and never resolves by DNS). [`Program::resolve_to_loopback`] makes them resolve to 127.0.0.1
//!   through the system resolver's hosts file, as a private cloud's DNS would: the program runs in its own mount
//!   namespace (`unshare --mount`, util-linux) with a private `/etc/hosts` bind-mounted over the real one.
//!   **Fallback** when mount namespaces are not permitted (no `CAP_SYS_ADMIN`, e.g. an unprivileged
//!   container): the names are appended once to the real `/etc/hosts` under a `# wisp integration tests`
//!   marker (only loopback entries for `.test` names, so harmless to leave); if that file is not writable
//!   either, spawning panics with instructions.
//! - Clouds: [`write_cloud_env_file`] writes a go-autorest environment file (`AZURE_ENVIRONMENT_FILEPATH` /
//!   the SecretProviderClass `cloudEnvFileName`) whose endpoints carry the fakes' ports.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;

/// `SSL_CERT_FILE`: a PEM bundle that replaces the system trust store for OpenSSL-compatible loaders.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
/// `SSL_CERT_DIR`: directories of PEM files, read in addition to `SSL_CERT_FILE`.
pub const SSL_CERT_DIR: &str = "SSL_CERT_DIR";

/// Set to `1` to echo every child's output lines to the test's stderr as they arrive (for debugging).
pub const ECHO_LOGS_ENV: &str = "WISP_TEST_ECHO_LOGS";

const HOSTS_MARKER: &str = "# wisp integration tests";

/// Path of a workspace binary (`wisp-webhook`, `wisp-agent`, `wisp-local`) built into the same target directory
/// as the running test. Panics, saying how to build it, if it is missing.
pub fn binary_path(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|message| panic!("{message}"))
}

/// [`binary_path`] without the panic: the error says how to build the binary.
pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} does not exist: build the binaries first with `cargo build --workspace` (or `cargo build -p {}`)",
            path.display(),
            name
        ));
    }
    Ok(path)
}

/// A workspace binary built by `cargo build -p <package> --bin <bin>` for the running test's profile (debug or
/// release) and returned by path: `cargo test -p integration-tests` alone builds no binary of another package.
/// Cargo skips the build when the binary is up to date. Panics if the build fails.
pub fn cargo_build_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the running executable: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} does not live in target/<profile>/deps", exe.display()))
        .to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "-p", package, "--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo build for {bin}: {e}"));
    assert!(status.success(), "cargo build -p {package} --bin {bin} failed");
    profile_dir.join(bin)
}

/// [`cargo_build_binary`] once per test process and binary: the first call builds (a no-op when up to date), later
/// calls return the same path.
pub fn built_binary(package: &str, bin: &str) -> &'static Path {
    static BUILT: std::sync::Mutex<Vec<(String, &'static Path)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = built.iter().find(|(name, _)| name == bin) {
        return path;
    }
    // Leaked once per binary, so that callers can hold the path for the whole test process.
    let path: &'static Path = Box::leak(cargo_build_binary(package, bin).into_boxed_path());
    built.push((bin.to_string(), path));
    path
}

/// How the end-to-end tests start the real `wisp-webhook`: its three listeners on loopback ports, serving the
/// certificate files of `cert_dir` (polled every 100 ms), reaching the API server through `kubeconfig`, with a
/// default tenant and the public cloud, debug logs, and no proxy images or `RUST_LOG` from the caller's
/// environment. Add flags with [`Program::args`], then [`Program::spawn`].
#[derive(Debug, Clone, Copy)]
pub struct WebhookLaunch<'a> {
    pub kubeconfig: &'a Path,
    pub cert_dir: &'a Path,
    pub port: u16,
    pub health_port: u16,
    pub metrics_port: u16,
}

impl WebhookLaunch<'_> {
    pub fn program(&self) -> Program {
        Program::from_path("wisp-webhook", built_binary("wisp-webhook", "wisp-webhook"))
            .args([
                format!("--port={}", self.port),
                format!("--health-addr=127.0.0.1:{}", self.health_port),
                format!("--metrics-addr=127.0.0.1:{}", self.metrics_port),
                format!("--webhook-cert-dir={}", self.cert_dir.display()),
                "--cert-reload-interval=100ms".to_string(),
                "--log-level=debug".to_string(),
            ])
            .env("KUBECONFIG", self.kubeconfig)
            .env("AZURE_TENANT_ID", "webhook-tenant")
            .env("AZURE_ENVIRONMENT", "AzurePublicCloud")
            .env_remove("PROXY_IMAGE")
            .env_remove("PROXY_INIT_IMAGE")
            .env_remove("RUST_LOG")
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for programs that take a port flag rather than a
/// listening socket.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
}

/// Whether a program started here may mount a tmpfs inside its own mount namespace (root or CAP_SYS_ADMIN):
/// then the agent can run with `--mount-mode=tmpfs` as in production. Checked once, by trying.
pub fn tmpfs_mounts_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let Ok(dir) = tempfile::tempdir() else {
            return false;
        };
        Command::new("unshare")
            .args([
                "--mount",
                "--",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs \"$0\" && umount \"$0\"",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A program to start: a binary, its arguments and environment, and host names to resolve to 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Program {
    name: String,
    path: PathBuf,
    args: Vec<OsString>,
    env: BTreeMap<OsString, Option<OsString>>,
    loopback_names: Vec<String>,
    own_process_group: bool,
}

impl Program {
    /// A workspace binary found by [`binary_path`].
    pub fn new(name: &str) -> Self {
        Self::from_path(name, binary_path(name))
    }

    /// Any executable; `name` labels its logs and panics.
    pub fn from_path(name: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            path: path.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            loopback_names: Vec::new(),
            own_process_group: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the rest of the test's environment is inherited).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), None);
        self
    }

    /// Trusts exactly the CAs in `ca_file` (PEM), as a system trust store would: sets `SSL_CERT_FILE` and clears
    /// `SSL_CERT_DIR`.
    pub fn trust_ca_file(self, ca_file: &Path) -> Self {
        self.env(SSL_CERT_FILE, ca_file).env_remove(SSL_CERT_DIR)
    }

    /// Makes `names` resolve to 127.0.0.1 (and nothing else change) for this program, through the hosts file.
    pub fn resolve_to_loopback<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.loopback_names.extend(names.iter().map(|n| n.as_ref().to_string()));
        self
    }

    /// Points the program at the local fakes as a user would point it at a cluster and a cloud: the API server
    /// through `kubeconfig`, the test CA through `SSL_CERT_FILE`, the fake host names resolved to 127.0.0.1, and
    /// none of the caller's `RUST_LOG` or proxy variables (a proxy would send the fakes' traffic elsewhere).
    pub fn reaching_fakes<S: AsRef<str>>(self, kubeconfig: &Path, ca_file: &Path, loopback_names: &[S]) -> Self {
        self.env("KUBECONFIG", kubeconfig)
            .trust_ca_file(ca_file)
            .resolve_to_loopback(loopback_names)
            .env_remove("RUST_LOG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
    }

    /// Starts the program in a process group of its own, so a Ctrl-C in the terminal reaches only the parent,
    /// which then stops its children in order (as `wisp-local` does) instead of all dying at once.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// Starts the program. Panics (naming the program) if it cannot be started.
    pub fn spawn(self) -> RunningProgram {
        let mut scratch = None;
        let mut command = if self.loopback_names.is_empty() {
            Command::new(&self.path)
        } else if mount_namespaces_available() {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
            let hosts = dir.path().join("hosts");
            std::fs::write(&hosts, hosts_file_with(&self.loopback_names))
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", hosts.display()));
            scratch = Some(dir);
            // `unshare` without `--fork` execs `sh`, which execs the program: one PID throughout, so signals and
            // kill-on-drop reach the program itself. util-linux makes the new namespace's mounts private, so the
            // bind mount never leaks to the host.
            let mut command = Command::new("unshare");
            command
                .arg("--mount")
                .arg("--")
                .arg("sh")
                .arg("-c")
                .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                .arg(&hosts)
                .arg(&self.path);
            command
        } else {
            append_to_system_hosts(&self.loopback_names);
            Command::new(&self.path)
        };
        command.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({}): {e}", self.name, self.path.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var(ECHO_LOGS_ENV).is_ok_and(|v| v == "1");
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(capture(stdout, logs.clone(), self.name.clone(), echo));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(capture(stderr, logs.clone(), self.name.clone(), echo));
        }
        RunningProgram {
            name: self.name,
            child,
            logs,
            readers,
            _scratch: scratch,
        }
    }
}

fn capture(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<String>>,
    name: String,
    echo: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[{name}] {line}");
            }
            let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.push_str(&line);
            logs.push('\n');
        }
    })
}

/// A started program. Killed (SIGKILL) and reaped when dropped; use [`terminate`](Self::terminate) to test a
/// graceful shutdown.
#[derive(Debug)]
pub struct RunningProgram {
    name: String,
    child: Child,
    logs: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _scratch: Option<tempfile::TempDir>,
}

impl RunningProgram {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the program wrote to stdout and stderr so far, one line per line.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last `lines` lines of the output under a heading naming the program, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = self.logs();
        let all: Vec<&str> = logs.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!("last lines of {}'s output:\n{}", self.name, all[start..].join("\n"))
    }

    /// The log lines that parse as JSON objects (wisp logs JSON), in order.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(serde_json::Value::is_object)
            .collect()
    }

    /// Waits until the output contains `needle`, re-checking every 20 ms. Panics after `timeout`, or as soon as
    /// the program exits without having written it, showing the output.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                if self.logs().contains(needle) {
                    return;
                }
                panic!(
                    "{} exited ({status}) without logging {needle:?}; its output:\n{}",
                    self.name,
                    self.logs()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}; its output:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the program has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the status, or `None` if it is still
    /// running (it is then killed on drop).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
            return self.try_wait();
        }
        self.wait_for_exit(timeout).await
    }

    /// Waits up to `timeout` for the program to exit by itself.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.join_readers();
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the program now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
    }

    /// After exit the pipes close, so the reader threads finish and the output is complete.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for RunningProgram {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether this process may create mount namespaces and bind-mount (checked once, by trying).
pub fn mount_namespaces_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The system hosts file plus one line mapping `names` to 127.0.0.1.
fn hosts_file_with(names: &[String]) -> String {
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1 localhost\n".into());
    if !hosts.ends_with('\n') {
        hosts.push('\n');
    }
    hosts.push_str(&format!("127.0.0.1 {}\n", names.join(" ")));
    hosts
}

fn append_to_system_hosts(names: &[String]) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let current = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let known: Vec<&str> = current
        .lines()
        .filter(|l| l.starts_with("127.0.0.1"))
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !known.contains(n))
        .collect();
    if missing.is_empty() {
        return;
    }
    let line = format!("127.0.0.1 {} {HOSTS_MARKER}\n", missing.join(" "));
    let result = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = result {
        panic!(
            "cannot make {missing:?} resolve to 127.0.0.1: mount namespaces are not permitted (`unshare --mount` \
             failed) and /etc/hosts is not writable ({e}). Run the tests as root, in a container with \
             CAP_SYS_ADMIN, or add `127.0.0.1 {}` to /etc/hosts yourself.",
            missing.join(" ")
        );
    }
}

/// A custom cloud's endpoints, as written into its environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// Entra authority host with a trailing `/`, e.g. `https://login.wisp.test:8443/`.
    pub active_directory_endpoint: String,
    /// Vault host suffix, port included, e.g. `vault.wisp.test:9443`: vault URLs are
    /// `https://{vault}.{suffix}/`.
    pub key_vault_dns_suffix: String,
    /// Key Vault token audience, e.g. `https://vault.wisp.test`.
    pub key_vault_resource: String,
}

/// The cloud name custom environment files use.
pub const CUSTOM_CLOUD_NAME: &str = "AzureStackCloud";

/// Writes `dir/azure-environment.json`, a go-autorest environment document for a custom cloud (what
/// `AZURE_ENVIRONMENT_FILEPATH` or a SecretProviderClass's `cloudEnvFileName` names), and returns its path.
pub fn write_cloud_env_file(dir: &Path, endpoints: &CloudEndpoints) -> PathBuf {
    let path = dir.join("azure-environment.json");
    let resource = endpoints.key_vault_resource.trim_end_matches('/');
    let document = json!({
        "name": CUSTOM_CLOUD_NAME,
        "activeDirectoryEndpoint": endpoints.active_directory_endpoint,
        "keyVaultEndpoint": format!("{resource}/"),
        "keyVaultDNSSuffix": endpoints.key_vault_dns_suffix,
        "resourceIdentifiers": {"keyVault": resource},
    });
    let text = serde_json::to_string_pretty(&document).unwrap_or_else(|e| panic!("environment JSON: {e}"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_shared::cloud::CloudEnvironment;

    #[test]
    fn cloud_env_file_round_trips_through_wisps_parser() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_cloud_env_file(
            dir.path(),
            &CloudEndpoints {
                active_directory_endpoint: "https://login.wisp.test:8443/".into(),
                key_vault_dns_suffix: "vault.wisp.test:9443".into(),
                key_vault_resource: "https://vault.wisp.test".into(),
            },
        );
        let cloud = CloudEnvironment::from_file(&path).unwrap();
        assert_eq!(
            cloud,
            CloudEnvironment {
                name: "AzureStackCloud".into(),
                active_directory_endpoint: "https://login.wisp.test:8443/".into(),
                key_vault_resource: "https://vault.wisp.test".into(),
                key_vault_dns_suffix: "vault.wisp.test:9443".into(),
            }
        );
        assert_eq!(cloud.vault_url("kv1"), "https://kv1.vault.wisp.test:9443/");
    }

    #[test]
    fn missing_binaries_explain_how_to_build_them() {
        let err = std::panic::catch_unwind(|| binary_path("wisp-no-such-binary")).unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert!(
            message.ends_with(
                "wisp-no-such-binary does not exist: build the binaries first with `cargo build --workspace` (or \
                 `cargo build -p wisp-no-such-binary`)"
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn programs_resolve_test_names_to_loopback_and_keep_localhost() {
        let mut program = Program::from_path("getent", "/usr/bin/getent")
            .args(["ahostsv4", "kv1.vault.wisp.test", "localhost"])
            .resolve_to_loopback(&["kv1.vault.wisp.test", "login.wisp.test"])
            .spawn();
        let status = program
            .wait_for_exit(Duration::from_secs(20))
            .await
            .expect("getent exits");
        assert!(status.success(), "{}", program.logs());
        let lines: Vec<String> = program
            .logs()
            .lines()
            .filter(|l| l.contains("STREAM"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            vec!["127.0.0.1 STREAM kv1.vault.wisp.test", "127.0.0.1 STREAM localhost"]
        );
    }

    #[tokio::test]
    async fn output_is_captured_env_is_passed_and_sigterm_stops_the_program() {
        let mut program = Program::from_path("sh", "/bin/sh")
            .args([
                "-c",
                "echo \"value=$WISP_X\" >&2; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done",
            ])
            .env("WISP_X", "42")
            .spawn();
        program.wait_for_log("value=42", Duration::from_secs(20)).await;
        let status = program
            .terminate(Duration::from_secs(20))
            .await
            .expect("sh exits on SIGTERM");
        assert_eq!(status.code(), Some(3));
        assert_eq!(program.logs(), "value=42\nbye\n");
    }
}
