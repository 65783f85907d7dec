//! The HTTP endpoints every wisp program serves beside its main job: `/metrics` in the OpenMetrics text format,
//! and a listener bound before the program goes on, served in the background.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

/// `/metrics` answering what `encode` writes, in the OpenMetrics text format (shared by every wisp program).
pub fn openmetrics_router(encode: impl Fn() -> String + Clone + Send + Sync + 'static) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = encode();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

/// Binds `addr` (an error names nothing but the address; the caller says which flag sets it), then serves
/// `router` there in the background.
pub async fn spawn_http(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP endpoint listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(%addr, error = %e, "HTTP endpoint failed");
        }
    });
    Ok(())
}
