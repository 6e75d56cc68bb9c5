//! One inbound message, from frame to ACK: parse, find its source, map, log (committed), then
//! answer. The ACK is a commit acknowledgement: AA means "persisted, will be applied" (applying to
//! Org is asynchronous, so a downstream outage makes messages wait rather than fail); AE/AR mean
//! "persisted as rejected, never applied". A duplicate (same source, same control id) writes
//! nothing and is answered with the first copy's ACK code.

use pm_hl7::{Ack, AckOutcome, ErrorCode, ErrorDetail, FrameError, Message, Severity};
use std::sync::Arc;

use pm_runtime::Db;
use tokio::sync::Notify;

use crate::domain::{self, Refusal, Sources};
use crate::store::{self, Logged, NewMessage, State};

/// Turns frames into ACKs.
#[derive(Clone)]
pub struct Intake {
    db: Db,
    sources: Sources,
    wake: Option<Arc<Notify>>,
}

impl Intake {
    /// Messages are logged in `db`; `sources` say who may send what.
    pub fn new(db: Db, sources: Sources) -> Self {
        Self {
            db,
            sources,
            wake: None,
        }
    }

    /// Notifies `wake` (the apply worker) when a message is accepted.
    pub fn waking(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The ACK for one framed message.
    pub async fn handle(&self, raw: &str) -> String {
        let message = match Message::parse(raw) {
            Ok(message) => message,
            Err(e) => {
                tracing::info!(reason = e.code.as_str(), "hl7 message unparseable");
                return unparsed(Ack::new(AckOutcome::Reject).error(e.error_detail()), raw);
            }
        };
        let header = match domain::header(&message) {
            Ok(header) => header,
            Err(refusal) => {
                tracing::info!(reason = refusal.reason, "hl7 message refused");
                return answer(&message, &refusal_ack(&refusal));
            }
        };
        let Some(source) = self
            .sources
            .resolve(&header.sending_application, &header.sending_facility)
        else {
            let refusal = domain::unknown_source();
            tracing::info!(reason = refusal.reason, "hl7 message refused");
            return answer(&message, &refusal_ack(&refusal));
        };
        let mapped = domain::map_adt(&message, source);
        let (state, reason, ack, code) = match &mapped {
            Ok(_) => (State::Received, "", Ack::new(AckOutcome::Accept), "AA"),
            Err(refusal) => (
                State::Rejected,
                refusal.reason,
                refusal_ack(refusal),
                code_of(refusal.outcome),
            ),
        };
        let logged = store::log(
            &self.db,
            &NewMessage {
                source: &source.id,
                control_id: &header.control_id,
                received_us: pm_runtime::time::now_micros(),
                message_type: &header.message_type,
                trigger_event: &header.trigger_event,
                raw,
                state,
                reason,
                ack_code: code,
            },
        )
        .await;
        match logged {
            Ok(Logged::New) => {
                if let (State::Received, Some(wake)) = (state, &self.wake) {
                    wake.notify_one();
                }
                tracing::info!(
                    source = %source.id,
                    trigger = %header.trigger_event,
                    ack = %code,
                    reason,
                    "hl7 message logged"
                );
                answer(&message, &ack)
            }
            Ok(Logged::Duplicate { ack_code }) => {
                tracing::info!(source = %source.id, ack = %ack_code, "hl7 duplicate control id");
                // The mapping is pure, so it refuses a copy exactly as it refused the first; a
                // first copy accepted under another configuration is still accepted.
                let ack = if ack_code == "AA" {
                    Ack::new(AckOutcome::Accept)
                } else {
                    ack
                };
                answer(&message, &ack)
            }
            Err(e) => {
                tracing::warn!(error = %e, "hl7 message could not be logged");
                answer(
                    &message,
                    &Ack::new(AckOutcome::Reject).error(ErrorDetail::new(
                        ErrorCode::ApplicationInternalError,
                        Severity::Error,
                        "Message not stored; send it again later",
                    )),
                )
            }
        }
    }

    /// The AR for a frame that never became a message (too large, not UTF-8).
    pub fn frame_error(&self, error: &FrameError) -> Option<String> {
        let (msh, text) = match error {
            FrameError::TooLarge { msh, .. } => (msh, "Message larger than the maximum frame size"),
            FrameError::InvalidUtf8 { msh, .. } => (msh, "Message is not valid UTF-8"),
            FrameError::Incomplete { .. } => return None,
        };
        tracing::info!(error = %error, "hl7 frame refused");
        let ack = Ack::new(AckOutcome::Reject).error(ErrorDetail::new(
            ErrorCode::DataTypeError,
            Severity::Error,
            text,
        ));
        Some(unparsed(ack, msh.as_deref().unwrap_or("")))
    }
}

fn refusal_ack(refusal: &Refusal) -> Ack {
    Ack::new(refusal.outcome).error((*refusal.detail).clone())
}

fn code_of(outcome: AckOutcome) -> &'static str {
    // The log keeps the original-mode code (an enhanced-mode sender sees CA/CE/CR).
    match outcome {
        AckOutcome::Accept => "AA",
        AckOutcome::Error => "AE",
        AckOutcome::Reject => "AR",
    }
}

fn now_ts() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string()
}

fn ack_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn answer(message: &Message, ack: &Ack) -> String {
    ack.build(message, &now_ts(), &ack_id())
        .unwrap_or_else(|_| unparsed(Ack::new(AckOutcome::Reject), ""))
}

fn unparsed(ack: Ack, raw: &str) -> String {
    ack.build_unparsed(raw, &now_ts(), &ack_id())
        .unwrap_or_else(|_| "MSH|^~\\&|||||||ACK||P|2.5.1\rMSA|AR|\r".to_owned())
}
