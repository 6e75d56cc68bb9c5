//! A panic inside a handler answers that one call with gRPC INTERNAL and leaves the server serving.
//!
//! Without this layer a panicking handler task dies mid-stream: the client sees a reset stream (an
//! UNKNOWN or transport error that reads like a network fault) and nothing in our logs says which
//! method it was. With it the caller gets a well-formed trailers-only INTERNAL with a generic
//! message, and the log names the method path. Neither echoes the request or the panic's payload:
//! a payload may quote the input (an `unwrap` on a parse error prints the value), and the input may
//! be PHI.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use tonic::codegen::http;

/// What a caller is told when its call panicked: nothing about the input or the panic.
pub const MESSAGE: &str = "internal error";

/// The longest method path logged: the path is the caller's choice, and a log line stays bounded.
const MAX_LOGGED_PATH: usize = 200;

/// Wraps a service so that a panic while calling it becomes gRPC INTERNAL (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// The service [`CatchPanicLayer`] makes.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CatchPanic<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = loggable_path(request.uri().path());
        // Generated tonic services do their work inside the future, but an inner layer may panic
        // while building it: catch both.
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => future,
            Err(_) => return Box::pin(async move { Ok(internal(&method)) }),
        };
        Box::pin(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Ok(internal(&method)),
            }
        })
    }
}

fn loggable_path(path: &str) -> String {
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

/// The trailers-only INTERNAL answer, logged with the method path only.
fn internal<B: Default>(method: &str) -> http::Response<B> {
    tracing::error!(
        method,
        "handler panicked: answered INTERNAL, server keeps serving"
    );
    tonic::Status::internal(MESSAGE).into_http()
}

/// Replaces the process's panic hook with one that logs where a panic happened but not its
/// payload, which may quote request data (PHI). Call once at start-up of a serving binary.
pub fn install_quiet_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            location,
            thread = thread.name().unwrap_or("unnamed"),
            "panic (payload withheld: it may quote request data)"
        );
    }));
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    type Body = tonic::body::Body;

    /// A handler that panics, with patient data in the payload, when asked to.
    fn handler()
    -> tower::util::BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible> {
        tower::util::BoxCloneService::new(tower::service_fn(
            |request: http::Request<Body>| async move {
                if request.uri().path().ends_with("/Boom") {
                    panic!("patient Jane Doe 1970-01-01 broke it");
                }
                Ok::<_, Infallible>(http::Response::new(Body::default()))
            },
        ))
    }

    fn request(path: &str) -> http::Request<Body> {
        let mut request = http::Request::new(Body::default());
        *request.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
        request
    }

    fn grpc_status<B>(response: &http::Response<B>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_panicking_call_is_internal_and_the_next_call_is_served() {
        let mut service = CatchPanicLayer.layer(handler());
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request("/test.Svc/Boom"))
            .await
            .expect("answered");
        assert_eq!(grpc_status(&response), Some("13"), "INTERNAL");
        assert_eq!(response.status(), http::StatusCode::OK, "trailers-only");
        let message = response
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(!message.contains("Jane"), "no payload echoed: {message}");
        assert_eq!(message, "internal%20error");

        // The same service (and a clone of it, as the server makes per connection) keeps serving.
        let fine = service
            .ready()
            .await
            .expect("ready")
            .call(request("/test.Svc/Fine"))
            .await
            .expect("answered");
        assert_eq!(grpc_status(&fine), None);
        let again = service
            .clone()
            .oneshot(request("/test.Svc/Boom"))
            .await
            .expect("answered");
        assert_eq!(grpc_status(&again), Some("13"));
    }

    #[tokio::test]
    async fn a_panic_while_building_the_future_is_caught_too() {
        #[derive(Clone)]
        struct PanicsInCall;
        impl tower::Service<http::Request<Body>> for PanicsInCall {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: http::Request<Body>) -> Self::Future {
                panic!("synchronous");
            }
        }
        let response = CatchPanicLayer
            .layer(PanicsInCall)
            .oneshot(request("/test.Svc/Sync"))
            .await
            .expect("answered");
        assert_eq!(grpc_status(&response), Some("13"));
    }

    #[test]
    fn logged_paths_are_bounded_on_a_char_boundary() {
        let long = format!("/{}", "é".repeat(300));
        let logged = loggable_path(&long);
        assert!(logged.len() <= MAX_LOGGED_PATH);
        assert!(logged.starts_with('/'));
        assert_eq!(loggable_path("/a.B/C"), "/a.B/C");
    }
}
