//! `wisp-local`, the README's first command, run as a user runs it: its output and exit code.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::process::{Program, built_binary};
use pretty_assertions::assert_eq;

/// Builds the webhook, agent and sync binaries once per test process (a no-op when up to date) and returns the
/// directory holding them, next to this test's executable.
fn bin_dir() -> &'static Path {
    built_binary("wisp-webhook", "wisp-webhook");
    built_binary("wisp-sync", "wisp-sync");
    built_binary("wisp-agent", "wisp-agent")
        .parent()
        .expect("binaries live in target/<profile>")
}

fn wisp_local(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wisp-local"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run wisp-local")
}

#[test]
fn runs_the_documented_scenario_end_to_end() {
    let dir = bin_dir().display().to_string();
    let output = wisp_local(&["--bin-dir", &dir]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}; output:\n{stdout}", output.status);

    let steps: Vec<&str> = stdout.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(
        steps,
        vec![
            "==> Starting the fake Kubernetes API, Microsoft Entra (with IMDS) and Key Vault",
            "==> Seeding the vault and the cluster",
            "==> Starting wisp-webhook",
            "==> Starting wisp-agent",
            "==> Admitting pod busybox-secrets-store-inline-wi through the webhook (as kube-apiserver)",
            "==> Workload identity: mounting azure-kvname-wi for busybox-secrets-store-inline-wi (as kubelet)",
            "==> User-assigned managed identity: mounting azure-kvname-user-msi for \
             busybox-secrets-store-inline-user-msi",
            "==> Service Connector style (add-on identity): mounting sc-azure-kvname for sc-demo-keyvault-csi",
            "==> SecretSync: wisp-sync writes Secret default/example-secret from azure-kvname-wi, no pod involved",
            "==> Unmounting the volumes (NodeUnpublishVolume, as kubelet when the pods are deleted)",
            "==> Stopping wisp-sync, wisp-agent and wisp-webhook",
            "==> Done: every step succeeded",
        ]
    );
    for injected in [
        "      AZURE_CLIENT_ID=a1b2c3d4-0000-4000-8000-000000000001\n",
        "      AZURE_TENANT_ID=72f988bf-0000-4000-8000-00000000aaaa\n",
        "      AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token\n",
        "      azure-identity-token: projected serviceAccountToken (audience api://AzureADTokenExchange, \
         expirationSeconds 3600, path azure-identity-token)\n",
    ] {
        assert!(stdout.contains(injected), "missing {injected:?} in:\n{stdout}");
    }
    let volume = "    $ ls /mnt/secrets-store/\n    ExampleSecret\n    cert1\n    key1\n    secret1\n    \
                  $ cat /mnt/secrets-store/ExampleSecret\n    MyAKSExampleSecret\n    \
                  $ head -1 /mnt/secrets-store/key1\n    -----BEGIN PUBLIC KEY-----\n    \
                  $ head -1 /mnt/secrets-store/cert1\n    -----BEGIN CERTIFICATE-----\n";
    assert_eq!(stdout.matches(volume).count(), 3, "{stdout}");
    let identities: Vec<&str> = stdout.lines().filter(|l| l.starts_with("    identity: ")).collect();
    assert_eq!(
        identities,
        vec![
            "    identity: the pod's service account token, exchanged at Entra for a Key Vault token",
            "    identity: a managed identity token from IMDS",
            "    identity: a managed identity token from IMDS",
        ]
    );
    assert!(stdout.contains("    3 volumes unmounted and removed\n"), "{stdout}");
    // The SecretSync: its Secret with the vault's value, owned by it, and no pod.
    assert!(
        stdout.contains("    SecretSync default/example-secret: Create True CreateSucceeded, syncHash 7631"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "    Secret default/example-secret: labels {\"secrets-store.sync.x-k8s.io/secretsync\":\"example-secret\"}, \
             owner SecretSync example-secret\n    data.example = MyAKSExampleSecret\n"
        ),
        "{stdout}"
    );
}

#[test]
fn a_missing_binary_fails_with_its_path_and_a_non_zero_exit() {
    let output = wisp_local(&["--bin-dir", "/nonexistent-wisp-bin"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "FAILED: /nonexistent-wisp-bin/wisp-webhook does not exist (from --bin-dir)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_running_says_how_to_run_doctor_and_doctor_finds_the_pod_healthy() {
    let dir = bin_dir().display().to_string();
    let doctor_binary = built_binary("kubectl-wisp", "kubectl-wisp");
    let mut local = Program::from_path("wisp-local", env!("CARGO_BIN_EXE_wisp-local"))
        .args(["--keep-running", "--bin-dir", &dir])
        .env_remove("RUST_LOG")
        .spawn();
    local
        .wait_for_log(
            "(kubectl-wisp on PATH, or: cargo run -p kubectl-wisp -- doctor ...)",
            Duration::from_secs(120),
        )
        .await;
    let logs = local.logs();
    let doctor_line = logs
        .lines()
        .find_map(|line| line.strip_prefix("    doctor      KUBECONFIG="))
        .unwrap_or_else(|| panic!("no doctor line in:\n{logs}"));
    assert!(
        doctor_line.ends_with(" kubectl wisp doctor pod/busybox-secrets-store-inline-wi -n default"),
        "{doctor_line}"
    );
    let kubeconfig = doctor_line.split_whitespace().next().expect("the kubeconfig path");

    let output = tokio::process::Command::new(doctor_binary)
        .args(["doctor", "pod/busybox-secrets-store-inline-wi", "-n", "default"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("cannot run kubectl-wisp");
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "pod default/busybox-secrets-store-inline-wi (node wisp-local-node)"
    );
    assert_eq!(lines.len(), 12, "{report}");
    assert!(lines[1..].iter().all(|line| line.starts_with("  ok: ")), "{report}");

    let status = local
        .terminate(Duration::from_secs(60))
        .await
        .expect("wisp-local stops on SIGTERM");
    assert!(status.success(), "{}", local.log_tail(20));
}
