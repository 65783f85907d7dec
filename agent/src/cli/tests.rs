use super::*;

#[test]
fn durations_are_read_as_go_writes_them() {
    let cases = [
        ("0", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        ("2m", Duration::from_secs(120)),
        ("1h30m", Duration::from_secs(5400)),
        ("1.5h", Duration::from_secs(5400)),
        ("500ms", Duration::from_millis(500)),
        ("+10s", Duration::from_secs(10)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
    }
    for bad in ["", "2", "-1m", "1d", "m", "1..5s", "2 m"] {
        assert_eq!(
            parse_go_duration(bad),
            Err(format!(
                "{bad:?} is not a duration; write it as Go does, e.g. 30s, 2m or 1h30m"
            )),
            "{bad}"
        );
    }
}

#[test]
fn registration_and_state_can_be_switched_off_with_an_empty_value() {
    let cli = parse(&[]).unwrap();
    assert_eq!(
        cli.registration_socket,
        PathBuf::from("/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock")
    );
    assert_eq!(cli.state_dir, PathBuf::from("/run/wisp-agent"));
    let cli = parse(&["--registration-socket=", "--state-dir="]).unwrap();
    assert_eq!(cli.registration_socket, PathBuf::new());
    assert_eq!(cli.state_dir, PathBuf::new());
}

#[test]
fn rotation_flags_take_upstreams_forms() {
    let cli = parse(&[]).unwrap();
    assert!(cli.enable_secret_rotation);
    assert_eq!(cli.rotation_poll_interval, Duration::from_secs(120));
    let cli = parse(&["--enable-secret-rotation=false", "--rotation-poll-interval=30s"]).unwrap();
    assert!(!cli.enable_secret_rotation);
    assert_eq!(cli.rotation_poll_interval, Duration::from_secs(30));
    assert!(parse(&["--rotation-poll-interval", "soon"]).is_err());
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let mut all = vec!["wisp-agent", "--nodeid", "node-1"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all)
}

#[test]
fn defaults_match_upstream() {
    let cli = parse(&[]).unwrap();
    assert_eq!(cli.socket_path().unwrap(), PathBuf::from("/csi/csi.sock"));
    assert_eq!(cli.drivername, "secrets-store.csi.k8s.io");
    assert_eq!(cli.provider.cloud_name, "AzurePublicCloud");
    assert!(cli.provider.construct_pem_chain);
    assert!(!cli.provider.write_cert_and_key_in_separate_files);
    assert_eq!(cli.mount_mode, MountMode::Tmpfs);
    assert_eq!(cli.metrics_addr, "0.0.0.0:8095".parse::<SocketAddr>().unwrap());
    assert_eq!(cli.health_addr, "0.0.0.0:9808".parse::<SocketAddr>().unwrap());
}

#[test]
fn boolean_flags_accept_go_forms() {
    let cli = parse(&[
        "--construct-pem-chain=false",
        "--write-cert-and-key-in-separate-files=T",
    ])
    .unwrap();
    assert!(!cli.provider.construct_pem_chain);
    assert!(cli.provider.write_cert_and_key_in_separate_files);
    let cli = parse(&["--write-cert-and-key-in-separate-files", "--construct-pem-chain=0"]).unwrap();
    assert!(cli.provider.write_cert_and_key_in_separate_files);
    assert!(!cli.provider.construct_pem_chain);
    let err = parse(&["--construct-pem-chain=yes"]).unwrap_err().to_string();
    assert!(err.contains("\"yes\" is not a boolean; use true or false"), "{err}");
}

#[test]
fn endpoint_forms() {
    assert_eq!(
        parse_endpoint("unix://tmp/csi.sock").unwrap(),
        PathBuf::from("/tmp/csi.sock")
    );
    assert_eq!(
        parse_endpoint("UNIX:///run/a.sock").unwrap(),
        PathBuf::from("/run/a.sock")
    );
    assert_eq!(
        parse_endpoint("tcp://127.0.0.1:10000").unwrap_err(),
        "--endpoint \"tcp://127.0.0.1:10000\" is not supported: wisp-agent serves CSI on a unix socket only, e.g. unix:///csi/csi.sock"
    );
    assert_eq!(
        parse_endpoint("unix://").unwrap_err(),
        "--endpoint \"unix://\" has no socket path; use unix:///csi/csi.sock"
    );
}

#[test]
fn provider_endpoint_is_off_by_default_and_a_unix_socket() {
    assert_eq!(parse(&[]).unwrap().provider_socket_path(), Ok(None));
    let cli = parse(&[
        "--provider-endpoint",
        "unix:///var/run/secrets-store-csi-providers/azure.sock",
    ])
    .unwrap();
    assert_eq!(
        cli.provider_socket_path(),
        Ok(Some(PathBuf::from("/var/run/secrets-store-csi-providers/azure.sock")))
    );
    let cli = parse(&["--provider-endpoint=tcp://127.0.0.1:1"]).unwrap();
    assert_eq!(
        cli.provider_socket_path().unwrap_err(),
        "--provider-endpoint \"tcp://127.0.0.1:1\" is not supported: use a unix socket, e.g. \
         unix:///var/run/secrets-store-csi-providers/azure.sock"
    );
}

#[test]
fn mount_mode_and_addresses() {
    let cli = parse(&["--mount-mode", "directory", "--metrics-addr", "127.0.0.1:0"]).unwrap();
    assert_eq!(cli.mount_mode, MountMode::Directory);
    assert_eq!(cli.metrics_addr, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
    assert!(parse(&["--health-addr", "nonsense"]).is_err());
}
