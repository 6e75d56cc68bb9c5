//! Pure HL7 v2 (ER7) building blocks for the EHR gateway: a lenient reader, an escaping writer,
//! an ACK builder and a bounded MLLP codec. No I/O, no clocks, no global state: the gateway
//! passes in time and control ids, and drives the codec from its own sockets.
//!
//! * [`Message::parse`] reads one message with the delimiters its MSH declares;
//!   [`Message::get`] reads decoded values with paths like `PID-3[2].1` (see [`path`]).
//! * [`MessageWriter`] writes messages field by field, escaping text.
//! * [`Ack`] answers a parsed message (or one that failed to parse) with AA/AE/AR or CA/CE/CR and
//!   v2.5 ERR segments.
//! * [`MllpCodec`] frames and unframes messages for `tokio_util::codec`.
//!
//! Nothing here panics on any input, and no error or `Display` text repeats message content:
//! HL7 messages are PHI.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod ack;
pub mod encoding;
pub mod error;
pub mod message;
pub mod mllp;
pub mod path;
pub mod writer;

pub use ack::{
    Ack, AckCode, AckCondition, AckError, AckMode, AckOutcome, ErrorCode, ErrorDetail,
    ErrorLocation, Severity,
};
pub use encoding::{DelimiterError, Delimiters};
pub use error::{ParseError, ParseErrorCode};
pub use message::{Component, Field, Message, Repetition, Segment, Subcomponent, Value};
pub use mllp::{FrameError, MllpCodec, MllpError};
pub use path::{Path, PathError};
pub use writer::{FieldValue, MessageWriter, SegmentWriter, WriteError};
