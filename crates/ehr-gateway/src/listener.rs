//! The MLLP listener (plain TCP in this slice; TLS comes later): one task per connection, at most
//! `max_connections` at once (more are closed on accept), each with its own bounded codec and a
//! read deadline (a whole frame must arrive within `read_timeout` of the previous one, so an idle
//! or stalled peer is closed). A peer that sends an oversized frame (answered AR first) or more
//! than a frame's worth of bytes outside any frame is dropped; other connections never wait on it.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use pm_hl7::{FrameError, MllpCodec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;

/// Limits of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes (framing excluded).
    pub max_frame: usize,
    /// A connection that delivers no whole frame for this long is closed.
    pub read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            read_timeout: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "mllp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("mllp connection refused: too many connections");
            drop(stream);
            continue;
        };
        let intake = Arc::clone(&intake);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection(stream, &intake, limits, shutdown).await;
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    intake: &Intake,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut framed = Framed::new(stream, MllpCodec::new(limits.max_frame));
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = tokio::time::timeout(limits.read_timeout, framed.next()) => next,
        };
        let (ack, keep) = match next {
            Err(_) => {
                tracing::info!("mllp connection closed: read timeout");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "mllp connection failed");
                return;
            }
            Ok(Some(Ok(Ok(message)))) => (Some(intake.handle(&message).await), true),
            // After an oversized frame the rest of it is noise: answer AR, then hang up.
            Ok(Some(Ok(Err(frame_error)))) => (
                intake.frame_error(&frame_error),
                !matches!(frame_error, FrameError::TooLarge { .. }),
            ),
        };
        if let Some(ack) = ack {
            let sent = tokio::time::timeout(limits.read_timeout, framed.send(ack)).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::info!("mllp connection closed: ACK not sent");
                return;
            }
        }
        if !keep || framed.codec().discarded_bytes() > limits.max_frame as u64 {
            tracing::info!("mllp connection closed: bytes outside frames");
            return;
        }
    }
}
