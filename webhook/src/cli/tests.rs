use super::*;
use pretty_assertions::assert_eq;
use rstest::rstest;

fn cli(args: &[&str]) -> Cli {
    // Flags only: the environment of the test process must not leak in, so every env-backed flag is given.
    let mut all = vec!["wisp-webhook"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap()
}

#[test]
fn defaults_match_upstream() {
    let config = Config::from_cli(cli(&["--tenant-id", "tid", "--azure-environment", "AzurePublicCloud"])).unwrap();
    assert_eq!(
        config.mutation,
        MutationConfig {
            tenant_id: "tid".to_string(),
            authority_host: "https://login.microsoftonline.com/".to_string(),
            audience: "api://AzureADTokenExchange".to_string(),
            proxy_image: DEFAULT_PROXY_IMAGE.to_string(),
            proxy_init_image: DEFAULT_PROXY_INIT_IMAGE.to_string(),
            native_sidecar: false,
            proxy_log_level: "info".to_string(),
        }
    );
    assert_eq!(config.webhook_addr, "[::]:9443".parse().unwrap());
    assert_eq!(config.health_addr, "[::]:9440".parse().unwrap());
    assert_eq!(config.metrics_addr, "[::]:8095".parse().unwrap());
    assert_eq!(config.tls_min_version, TlsVersion::Tls13);
    assert_eq!(config.cert_dir, PathBuf::from("/certs"));
    assert_eq!(config.cert_rotation, None);
    assert_eq!(config.native_sidecar, NativeSidecar::Auto);
}

const BASE: [&str; 4] = ["--tenant-id", "t", "--azure-environment", "AzurePublicCloud"];

#[rstest]
#[case(&["--cert-rotation"], true)]
#[case(&["--cert-rotation=true"], true)]
#[case(&["--cert-rotation", "true"], true)]
#[case(&["--cert-rotation=false"], false)]
#[case(&[], false)]
fn cert_rotation_flag(#[case] flag: &[&str], #[case] enabled: bool) {
    let mut args = BASE.to_vec();
    args.extend_from_slice(&["--cert-secret-namespace", "wisp-system"]);
    args.extend_from_slice(flag);
    assert_eq!(Config::from_cli(cli(&args)).unwrap().cert_rotation.is_some(), enabled);
}

#[test]
fn cert_rotation_defaults_match_the_chart() {
    let mut args = BASE.to_vec();
    args.extend_from_slice(&["--cert-rotation=true", "--cert-secret-namespace", "wisp-system"]);
    let rotation = Config::from_cli(cli(&args)).unwrap().cert_rotation.unwrap();
    assert_eq!(
        rotation,
        RotationConfig {
            secret_name: "wisp-webhook-server-cert".to_string(),
            secret_namespace: "wisp-system".to_string(),
            webhook_config_name: "wisp-webhook".to_string(),
            bundle: RotationConfig::bundle_spec(vec![
                "wisp-webhook.wisp-system.svc".to_string(),
                "wisp-webhook.wisp-system.svc.cluster.local".to_string(),
            ]),
            check_interval: Duration::from_secs(60),
        }
    );
}

#[test]
fn cert_rotation_flags_override_defaults() {
    let mut args = BASE.to_vec();
    args.extend_from_slice(&[
        "--cert-rotation",
        "--cert-secret-namespace",
        "ns",
        "--cert-secret-name",
        "s",
        "--webhook-config-name",
        "m",
        "--webhook-service-name",
        "svc",
        "--cluster-domain",
        "example.org",
        "--cert-check-interval",
        "250ms",
    ]);
    let rotation = Config::from_cli(cli(&args)).unwrap().cert_rotation.unwrap();
    assert_eq!(rotation.secret_name, "s");
    assert_eq!(rotation.secret_namespace, "ns");
    assert_eq!(rotation.webhook_config_name, "m");
    assert_eq!(rotation.bundle.dns_names, vec!["svc.ns.svc", "svc.ns.svc.example.org"]);
    assert_eq!(rotation.check_interval, Duration::from_millis(250));
}

#[rstest]
#[case(&["--cert-rotation", "--cert-secret-namespace", " "], "--cert-rotation needs the namespace of the certificate Secret: set POD_NAMESPACE (the chart sets it from the pod's namespace) or --cert-secret-namespace")]
#[case(&["--cert-rotation", "--cert-secret-namespace", "ns", "--cert-secret-name", ""], "--cert-secret-name must not be empty with --cert-rotation")]
fn cert_rotation_configuration_errors(#[case] flags: &[&str], #[case] message: &str) {
    let mut args = BASE.to_vec();
    args.extend_from_slice(flags);
    assert_eq!(Config::from_cli(cli(&args)).unwrap_err().to_string(), message);
}

#[rstest]
#[case("AzurePublicCloud", "https://login.microsoftonline.com/")]
#[case("AzureUSGovernmentCloud", "https://login.microsoftonline.us/")]
#[case("AzureChinaCloud", "https://login.chinacloudapi.cn/")]
#[case("azurechinacloud", "https://login.chinacloudapi.cn/")]
fn authority_host_from_cloud(#[case] cloud: &str, #[case] authority: &str) {
    let config = Config::from_cli(cli(&["--tenant-id", "t", "--azure-environment", cloud])).unwrap();
    assert_eq!(config.mutation.authority_host, authority);
}

#[rstest]
#[case(&["--tenant-id", " ", "--azure-environment", "AzurePublicCloud"], "AZURE_TENANT_ID is required: set it (or --tenant-id) to the Microsoft Entra tenant ID used for ServiceAccounts without the azure.workload.identity/tenant-id annotation")]
#[case(&["--tenant-id", "t", "--azure-environment", "InvalidCloud"], "AZURE_ENVIRONMENT: There is no cloud environment matching the name \"InvalidCloud\"; use AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud or AzureStackCloud")]
#[case(&["--tenant-id", "t", "--azure-environment", "AzureStackCloud", "--azure-environment-filepath", "/nonexistent/env.json"], "AZURE_ENVIRONMENT_FILEPATH: cloud environment file /nonexistent/env.json: No such file or directory (os error 2)")]
#[case(&["--tenant-id", "t", "--azure-environment", "AzurePublicCloud", "--metrics-backend", "otel"], "unsupported metrics backend: otel; the only backend is prometheus")]
#[case(&["--tenant-id", "t", "--azure-environment", "AzurePublicCloud", "--health-addr", "nope"], "--health-addr: \"nope\" is not an address; use HOST:PORT or :PORT")]
fn fatal_configuration(#[case] args: &[&str], #[case] message: &str) {
    assert_eq!(Config::from_cli(cli(args)).unwrap_err().to_string(), message);
}

#[rstest]
#[case("", "info")]
#[case("debug", "debug")]
#[case("WARN", "warning")]
#[case("wisp_webhook=trace", "info")]
fn proxy_level(#[case] level: &str, #[case] expected: &str) {
    assert_eq!(proxy_log_level(level), expected);
}

#[test]
fn flags_override_defaults() {
    let config = Config::from_cli(cli(&[
        "--tenant-id",
        "t",
        "--azure-environment",
        "AzurePublicCloud",
        "--port",
        "10443",
        "--health-addr",
        "127.0.0.1:1",
        "--tls-min-version",
        "1.2",
        "--native-sidecar",
        "true",
        "--audience",
        "",
        "--log-level",
        "debug",
    ]))
    .unwrap();
    assert_eq!(config.webhook_addr, "[::]:10443".parse().unwrap());
    assert_eq!(config.health_addr, "127.0.0.1:1".parse().unwrap());
    assert_eq!(config.tls_min_version, TlsVersion::Tls12);
    assert!(config.mutation.native_sidecar);
    assert_eq!(config.mutation.audience, "api://AzureADTokenExchange");
    assert_eq!(config.mutation.proxy_log_level, "debug");
}
