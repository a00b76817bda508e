//! The node's HTTP endpoint, on `metrics_listen` (`--metrics-listen`):
//!
//! - `GET /metrics`: the Prometheus text exposition of every series;
//! - `GET /health`: `200 SERVING` while the node serves, `503 NOT_SERVING`
//!   before it has registered and from the moment it starts to drain (the
//!   same moment its gRPC health turns `NOT_SERVING`), for load balancers
//!   that cannot ask gRPC health (an AWS NLB checks HTTP);
//! - anything else: `404`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether the node serves: what `/health` answers.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, serving: bool) {
        self.0.store(serving, Ordering::Release);
    }

    pub fn is_serving(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn answer(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/health" if readiness.is_serving() => text(StatusCode::OK, "SERVING\n"),
        "/health" => text(StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /health\n",
        ),
    }
}

/// Serves the endpoint on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    readiness: Readiness,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("metrics endpoint: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, readiness) = (metrics.clone(), readiness.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!("metrics endpoint connection: {err}");
            }
        });
    }
}
