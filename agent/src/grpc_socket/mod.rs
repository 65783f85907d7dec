//! The unix sockets the agent serves gRPC on (CSI, kubelet plugin registration, the drop-in provider): binding
//! them, and the connection every one of them accepts, which takes any `:authority` a client sends
//! ([`authority`]).

mod authority;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use authority::AuthorityRewriter;

/// Why a socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket {}: exists and is not a socket; remove it or choose another --endpoint", path.display())]
    NotASocket { path: PathBuf },
    #[error("socket {}: cannot remove the stale socket", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("socket {}: cannot create its directory", path.display())]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("socket {}: cannot listen", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("socket {}: cannot set mode 0600", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("socket {}: cannot remove it at shutdown", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("socket {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a gRPC server on a socket stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("the gRPC server on {} failed", path.display())]
    Serve {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Binds a socket: a stale socket from a previous run is removed, anything else at the path is an error, and
/// the socket is only accessible to its owner (kubelet runs as root).
pub fn bind_socket(path: &Path) -> Result<UnixListener, SocketError> {
    let path_buf = || path.to_path_buf();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| SocketError::RemoveStale {
                path: path_buf(),
                source,
            })?;
        }
        Ok(_) => return Err(SocketError::NotASocket { path: path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Inspect {
                path: path_buf(),
                source,
            });
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SocketError::CreateDirectory {
            path: path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Listen {
        path: path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        SocketError::Permissions {
            path: path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// The path `listener` is bound at, for messages.
pub(crate) fn bound_path(listener: &UnixListener) -> PathBuf {
    listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(Path::to_path_buf))
        .unwrap_or_default()
}

/// The connections accepted on `listener`, for tonic's `serve_with_incoming*`.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<GrpcConnection>> {
    UnixListenerStream::new(listener).map(|accepted| accepted.map(GrpcConnection::new))
}

/// One accepted connection: the server reads the client's bytes through an [`AuthorityRewriter`], and writes
/// to the client untouched.
#[derive(Debug)]
pub struct GrpcConnection {
    stream: UnixStream,
    rewriter: AuthorityRewriter,
    /// Bytes read from the client, not yet rewritten.
    input: Box<[u8]>,
    /// Rewritten bytes not yet handed to the server; `output[served..]` is what is left.
    output: Vec<u8>,
    served: usize,
}

/// Bytes read from the socket at a time (the HTTP/2 server reads in chunks of this order).
const READ_CHUNK: usize = 16 * 1024;

impl GrpcConnection {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            rewriter: AuthorityRewriter::default(),
            input: vec![0; READ_CHUNK].into_boxed_slice(),
            output: Vec::new(),
            served: 0,
        }
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A frame split across reads yields no output until it is whole: read again until there is something
        // to hand over, or the client is done.
        while this.served == this.output.len() {
            this.output.clear();
            this.served = 0;
            let mut read = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(read.filled(), &mut this.output)?;
        }
        let take = (this.output.len() - this.served).min(buf.remaining());
        buf.put_slice(&this.output[this.served..this.served + take]);
        this.served += take;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for GrpcConnection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The `grpc-timeout` header (e.g. `119999m`) as a duration.
pub(crate) fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let amount: u64 = value[..unit_at].parse().ok()?;
    let per_unit = match &value[unit_at..] {
        "H" => Duration::from_secs(3600),
        "M" => Duration::from_secs(60),
        "S" => Duration::from_secs(1),
        "m" => Duration::from_millis(1),
        "u" => Duration::from_micros(1),
        "n" => Duration::from_nanos(1),
        _ => return None,
    };
    Some(per_unit.saturating_mul(u32::try_from(amount).unwrap_or(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_other_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/csi.sock");
        drop(bind_socket(&path).unwrap());
        // The first listener's socket file is still there: a stale socket.
        let _listener = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            bind_socket(&file).unwrap_err().to_string(),
            format!(
                "socket {}: exists and is not a socket; remove it or choose another --endpoint",
                file.display()
            )
        );
    }

    #[test]
    fn grpc_timeouts() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&md), None);
        for (value, expected) in [
            ("119999m", Some(Duration::from_millis(119_999))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5S", Some(Duration::from_secs(5))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("x", None),
            ("10", None),
        ] {
            md.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(grpc_timeout(&md), expected, "{value}");
        }
    }
}
