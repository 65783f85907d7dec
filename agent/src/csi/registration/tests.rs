use pretty_assertions::assert_eq;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::proto::registration::registration_client::RegistrationClient;
use std::path::PathBuf;

use super::*;
use crate::grpc_socket::bind_socket;

const DRIVER: &str = "secrets-store.csi.k8s.io";

async fn client(path: PathBuf) -> RegistrationClient<Channel> {
    RegistrationClient::new(crate::csi::health::unix_channel(path).await.unwrap())
}

struct Running {
    socket: PathBuf,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    health: RegistrationHealth,
    _dir: tempfile::TempDir,
}

/// Binds before spawning, so the client can connect as soon as this returns.
fn start(prepare: impl FnOnce(&Path)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join(format!("{DRIVER}-reg.sock"));
    prepare(&socket);
    let (service, health) =
        RegistrationService::new(DRIVER, "unix:///var/lib/kubelet/plugins/csi-secrets-store/csi.sock");
    let listener = bind_socket(&socket).unwrap();
    let (stop, stopped) = oneshot::channel();
    let path = socket.clone();
    let task = tokio::spawn(async move {
        serve_registration(listener, &path, service, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        socket,
        stop,
        task,
        health,
        _dir: dir,
    }
}

#[tokio::test]
async fn get_info_describes_the_csi_driver() {
    let running = start(|_| {});
    let info = client(running.socket.clone())
        .await
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info,
        PluginInfo {
            r#type: "CSIPlugin".into(),
            name: "secrets-store.csi.k8s.io".into(),
            endpoint: "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock".into(),
            supported_versions: vec!["1.0.0".into()],
        }
    );
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn registration_status_is_kept_for_health() {
    let running = start(|_| {});
    let health = running.health.clone();
    assert_eq!(health.state(), RegistrationState::Pending);

    let mut client = client(running.socket.clone()).await;
    let refused = RegistrationStatus {
        plugin_registered: false,
        error: "plugin secrets-store.csi.k8s.io already registered".into(),
    };
    let response = client.notify_registration_status(refused).await.unwrap().into_inner();
    assert_eq!(response, RegistrationStatusResponse {});
    assert_eq!(
        health.state(),
        RegistrationState::Failed("plugin secrets-store.csi.k8s.io already registered".into())
    );

    let accepted = RegistrationStatus {
        plugin_registered: true,
        error: String::new(),
    };
    client.notify_registration_status(accepted).await.unwrap();
    assert_eq!(health.state(), RegistrationState::Registered);

    drop(client);
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn stale_socket_is_replaced_and_removed_at_shutdown() {
    let running = start(|path| {
        // A socket left by a previous run: bound, then its listener dropped without unlinking.
        drop(std::os::unix::net::UnixListener::bind(path).unwrap());
        assert!(path.exists());
    });
    let info = client(running.socket.clone())
        .await
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER);
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
    assert!(!running.socket.exists());
}
