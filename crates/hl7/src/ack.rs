//! Acknowledgements: the ACK the gateway sends back once it has persisted (or refused) a message.
//!
//! ```
//! use pm_hl7::{Ack, AckOutcome, ErrorCode, ErrorDetail, ErrorLocation, Message, Severity};
//!
//! let inbound = Message::parse(
//!     "MSH|^~\\&|EHR|HOSP|GW|PM|20260101120000||ADT^A01^ADT_A01|MSG1|P|2.5.1\rPID|1\r",
//! )?;
//! let ack = Ack::new(AckOutcome::Error)
//!     .error(ErrorDetail::new(
//!         ErrorCode::RequiredFieldMissing,
//!         Severity::Error,
//!         "PID-3 patient identifier list is required",
//!     ).at(ErrorLocation::field("PID", 1, 3)))
//!     .build(&inbound, "20260101120001+0000", "ACK0001")?;
//! let ack = Message::parse(&ack)?;
//! assert_eq!(ack.get("MSA-1")?.as_str(), Some("AE"));
//! assert_eq!(ack.get("MSA-2")?.as_str(), Some("MSG1"));
//! assert_eq!(ack.get("ERR-2")?.as_str(), Some("PID"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Acknowledgement modes: when the inbound MSH-15 (accept acknowledgement type) or MSH-16
//! (application acknowledgement type) is valued, the sender uses *enhanced* mode and the ACK built
//! here is the **accept** (commit) acknowledgement, with CA/CE/CR: it says "stored safely", which
//! is exactly what the gateway knows when it answers. Application-level acknowledgements in
//! enhanced mode are out of scope. Whether the sender wants an accept ACK at all (MSH-15 = NE, ER,
//! SU) is answered by [`AckMode::wants_ack`]; otherwise (original mode) AA/AE/AR is used and an ACK
//! is always due.
//!
//! The ACK reuses the inbound message's delimiters (so copied fields stay byte-exact), swaps
//! sender and receiver, copies MSH-11 (processing id) and MSH-12 (version), and leaves MSH-15/16
//! empty (nobody acknowledges an ACK). ERR segments are written v2.5 style (ERR-2, ERR-3, ERR-4,
//! ERR-8) whatever the inbound version; ERR-1 (deprecated) is left empty.

use crate::encoding::Delimiters;
use crate::error::{ParseError, ParseErrorCode};
use crate::message::{Message, Value};
use crate::path::Path;
use crate::writer::{FieldValue, MessageWriter, WriteError};

/// What the gateway decided about a message, independent of the acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// Stored: AA (original mode) or CA (enhanced mode).
    Accept,
    /// Understood but not processed because of an error in the content: AE / CE.
    Error,
    /// Refused (unparseable, unsupported type/version/processing id, or an internal failure the
    /// sender should retry later): AR / CR.
    Reject,
}

/// MSA-1 acknowledgement code (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    /// Commit error (enhanced mode).
    CE,
    /// Commit reject (enhanced mode).
    CR,
}

impl AckCode {
    /// The two-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AA => "AA",
            Self::AE => "AE",
            Self::AR => "AR",
            Self::CA => "CA",
            Self::CE => "CE",
            Self::CR => "CR",
        }
    }
}

/// Accept-acknowledgement condition from MSH-15 (HL7 table 0155).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCondition {
    /// `AL`, or not valued / unknown: acknowledge always (answering when unsure is the safe side:
    /// an unexpected ACK is ignored, a missing one makes the sender resend).
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or reject.
    ErrorOnly,
    /// `SU`: only on success.
    SuccessOnly,
}

/// Original or enhanced acknowledgement mode, read from MSH-15/MSH-16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// MSH-15 and MSH-16 empty: AA/AE/AR, always acknowledged.
    Original,
    /// MSH-15 or MSH-16 valued: CA/CE/CR accept acknowledgements, as MSH-15 asks.
    Enhanced {
        /// MSH-15.
        accept: AckCondition,
    },
}

impl AckMode {
    /// The mode the sender of `msg` asked for.
    pub fn of(msg: &Message) -> AckMode {
        let msh = msg.msh();
        let accept = msh.value(15, 1, 1, 1);
        let application = msh.value(16, 1, 1, 1);
        AckMode::from_msh15_16(
            accept.as_str().unwrap_or(""),
            application.as_str().unwrap_or(""),
        )
    }

    /// The mode from the (decoded) MSH-15 and MSH-16 values; empty means not valued.
    pub fn from_msh15_16(accept: &str, application: &str) -> AckMode {
        if accept.is_empty() && application.is_empty() {
            return AckMode::Original;
        }
        let accept = match accept {
            "NE" => AckCondition::Never,
            "ER" => AckCondition::ErrorOnly,
            "SU" => AckCondition::SuccessOnly,
            _ => AckCondition::Always,
        };
        AckMode::Enhanced { accept }
    }

    /// The MSA-1 code for an outcome in this mode.
    pub fn code(self, outcome: AckOutcome) -> AckCode {
        match (self, outcome) {
            (AckMode::Original, AckOutcome::Accept) => AckCode::AA,
            (AckMode::Original, AckOutcome::Error) => AckCode::AE,
            (AckMode::Original, AckOutcome::Reject) => AckCode::AR,
            (AckMode::Enhanced { .. }, AckOutcome::Accept) => AckCode::CA,
            (AckMode::Enhanced { .. }, AckOutcome::Error) => AckCode::CE,
            (AckMode::Enhanced { .. }, AckOutcome::Reject) => AckCode::CR,
        }
    }

    /// Whether the sender wants an ACK for this outcome.
    pub fn wants_ack(self, outcome: AckOutcome) -> bool {
        match self {
            AckMode::Original => true,
            AckMode::Enhanced { accept } => match accept {
                AckCondition::Always => true,
                AckCondition::Never => false,
                AckCondition::ErrorOnly => outcome != AckOutcome::Accept,
                AckCondition::SuccessOnly => outcome == AckOutcome::Accept,
            },
        }
    }
}

/// HL7 table 0357 (message error condition codes, v2.5), for ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: message accepted.
    MessageAccepted,
    /// 100: segment sequence error (missing, unexpected or unknown segment).
    SegmentSequenceError,
    /// 101: required field missing.
    RequiredFieldMissing,
    /// 102: data type error (a value that does not fit its type, malformed structure).
    DataTypeError,
    /// 103: table value not found.
    TableValueNotFound,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 204: unknown key identifier (e.g. a patient that does not exist).
    UnknownKeyIdentifier,
    /// 205: duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: application record locked.
    ApplicationRecordLocked,
    /// 207: application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::MessageAccepted => 0,
            Self::SegmentSequenceError => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataTypeError => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::UnsupportedProcessingId => 202,
            Self::UnsupportedVersionId => 203,
            Self::UnknownKeyIdentifier => 204,
            Self::DuplicateKeyIdentifier => 205,
            Self::ApplicationRecordLocked => 206,
            Self::ApplicationInternalError => 207,
        }
    }

    /// The table's text for the code.
    pub fn text(self) -> &'static str {
        match self {
            Self::MessageAccepted => "Message accepted",
            Self::SegmentSequenceError => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataTypeError => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::UnknownKeyIdentifier => "Unknown key identifier",
            Self::DuplicateKeyIdentifier => "Duplicate key identifier",
            Self::ApplicationRecordLocked => "Application record locked",
            Self::ApplicationInternalError => "Application internal error",
        }
    }
}

/// ERR-4 severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `E`: the message was not (fully) processed.
    Error,
    /// `W`: processed, with a warning.
    Warning,
    /// `I`: information.
    Information,
}

impl Severity {
    /// The one-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "E",
            Self::Warning => "W",
            Self::Information => "I",
        }
    }
}

/// ERR-2 error location (ERL): `SEG^sequence^field^repetition^component^subcomponent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorLocation {
    segment: String,
    /// Which occurrence of the segment (1-based).
    sequence: usize,
    field: Option<usize>,
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl ErrorLocation {
    /// A whole segment, e.g. the second `PV1`.
    pub fn segment(segment: &str, sequence: usize) -> Self {
        Self {
            segment: segment.to_owned(),
            sequence,
            field: None,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// One field of a segment occurrence.
    pub fn field(segment: &str, sequence: usize, field: usize) -> Self {
        Self {
            field: Some(field),
            ..Self::segment(segment, sequence)
        }
    }

    /// Adds repetition and component to a field location.
    pub fn within(mut self, repetition: usize, component: usize) -> Self {
        self.repetition = Some(repetition);
        self.component = Some(component);
        self
    }

    /// The exact position a [`Path`] names.
    pub fn from_path(path: &Path) -> Self {
        Self {
            segment: path.segment().to_owned(),
            sequence: path.occurrence(),
            field: Some(path.field()),
            repetition: Some(path.repetition()),
            component: Some(path.component()),
            subcomponent: Some(path.subcomponent()),
        }
    }

    fn to_field_value(&self) -> FieldValue {
        let n = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut parts = vec![
            self.segment.clone(),
            self.sequence.to_string(),
            n(self.field),
            n(self.repetition),
            n(self.component),
            n(self.subcomponent),
        ];
        while parts.last().is_some_and(String::is_empty) {
            parts.pop();
        }
        FieldValue::components(parts)
    }
}

/// One ERR segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorDetail {
    location: Option<ErrorLocation>,
    code: ErrorCode,
    severity: Severity,
    user_message: &'static str,
}

impl ErrorDetail {
    /// An error with a code, a severity and a user message (ERR-8).
    ///
    /// The user message is `&'static str` on purpose: it must be a fixed text written by us,
    /// never assembled from message content, because the ACK travels back over the wire and into
    /// the sender's logs and a value from the message would be PHI.
    pub fn new(code: ErrorCode, severity: Severity, user_message: &'static str) -> Self {
        Self {
            location: None,
            code,
            severity,
            user_message,
        }
    }

    /// Sets the location (ERR-2).
    pub fn at(mut self, location: ErrorLocation) -> Self {
        self.location = Some(location);
        self
    }

    /// The table 0357 code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl ParseError {
    /// The ERR segment describing this parse failure (for [`Ack::build_unparsed`]).
    pub fn error_detail(&self) -> ErrorDetail {
        let (code, text) = match self.code {
            ParseErrorCode::Empty => (ErrorCode::SegmentSequenceError, "Message is empty"),
            ParseErrorCode::FirstSegmentNotMsh => {
                (ErrorCode::SegmentSequenceError, "First segment is not MSH")
            }
            ParseErrorCode::BatchNotSupported => (
                ErrorCode::UnsupportedMessageType,
                "Batch envelopes (FHS/BHS) are not supported; send one message per frame",
            ),
            ParseErrorCode::SecondMsh => (
                ErrorCode::SegmentSequenceError,
                "More than one MSH segment in one message",
            ),
            ParseErrorCode::MshTooShort => (
                ErrorCode::DataTypeError,
                "MSH is missing its encoding characters",
            ),
            ParseErrorCode::InvalidDelimiters => (
                ErrorCode::DataTypeError,
                "MSH-1/MSH-2 delimiters are invalid",
            ),
            ParseErrorCode::InvalidSegmentId => {
                (ErrorCode::SegmentSequenceError, "Malformed segment id")
            }
        };
        let mut detail = ErrorDetail::new(code, Severity::Error, text);
        if let (Some(id), Some(seq)) = (self.segment_id, self.segment_occurrence) {
            let mut loc = ErrorLocation::segment(id, seq);
            loc.field = self.field;
            detail = detail.at(loc);
        }
        detail
    }
}

/// Why an ACK could not be built (only the caller's own inputs can be wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The timestamp is not an HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`).
    #[error("timestamp must be an HL7 DTM such as 20260101120000+0000")]
    InvalidTimestamp,
    /// The control id is empty, longer than 199 characters or holds control characters.
    #[error("control id must be 1 to 199 printable characters")]
    InvalidControlId,
    /// Writing failed (cannot happen with the fields this module writes; kept for honesty).
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// True for an HL7 DTM value.
fn is_dtm(ts: &str) -> bool {
    let (main, offset) = match ts.find(['+', '-']) {
        Some(i) => (&ts[..i], Some(&ts[i + 1..])),
        None => (ts, None),
    };
    if let Some(off) = offset
        && !(off.len() == 4 && off.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let (digits, fraction) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(digits) || ![4, 6, 8, 10, 12, 14].contains(&digits.len()) {
        return false;
    }
    match fraction {
        None => true,
        Some(f) => digits.len() == 14 && (1..=4).contains(&f.len()) && all_digits(f),
    }
}

/// What is known about the message being answered.
enum Inbound<'a> {
    /// Parsed (the whole message, or at least its MSH line).
    Parsed(&'a Message),
    /// An MSH line with a usable field separator but broken encoding characters, split on the
    /// separator: `parts[n - 1]` is MSH-n.
    Loose(Vec<&'a str>),
    /// Nothing usable.
    Unknown,
}

/// An acknowledgement to build: the outcome and zero or more ERR segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ack {
    outcome: AckOutcome,
    errors: Vec<ErrorDetail>,
}

impl Ack {
    /// An ACK with this outcome and no ERR segment yet.
    pub fn new(outcome: AckOutcome) -> Self {
        Self {
            outcome,
            errors: Vec::new(),
        }
    }

    /// Adds an ERR segment.
    pub fn error(mut self, detail: ErrorDetail) -> Self {
        self.errors.push(detail);
        self
    }

    /// The ACK for a parsed inbound message, as ER7 text.
    ///
    /// `timestamp` becomes MSH-7 (the caller owns the clock), `control_id` MSH-10 (the caller owns
    /// the id generator). MSA-2 echoes the inbound MSH-10 byte for byte.
    pub fn build(
        &self,
        inbound: &Message,
        timestamp: &str,
        control_id: &str,
    ) -> Result<String, AckError> {
        self.write(Inbound::Parsed(inbound), timestamp, control_id)
    }

    /// The ACK for input that could not be parsed (typically with [`AckOutcome::Reject`] and
    /// [`ParseError::error_detail`]), addressed with whatever its MSH allows.
    ///
    /// * If the first non-blank line is an MSH that parses on its own (the failure was further
    ///   down), the ACK is addressed and correlated exactly as [`Ack::build`] would.
    /// * Else, if that line starts with `MSH` and an ASCII punctuation field separator (the
    ///   encoding characters are what is broken), its fields are read by splitting on the
    ///   separator alone: sender/receiver, MSH-10 (into MSA-2), MSH-11/12 and MSH-15/16 are used
    ///   as plain text, escaped with the standard delimiters the ACK then uses.
    /// * Otherwise the ACK has the standard delimiters, no addresses, no trigger and an empty MSA-2.
    pub fn build_unparsed(
        &self,
        raw: &str,
        timestamp: &str,
        control_id: &str,
    ) -> Result<String, AckError> {
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let Some(line) = raw
            .split(['\r', '\n'])
            .find(|l| !l.trim().is_empty())
            .filter(|l| l.starts_with("MSH"))
        else {
            return self.write(Inbound::Unknown, timestamp, control_id);
        };
        if let Ok(msh) = Message::parse(line) {
            return self.write(Inbound::Parsed(&msh), timestamp, control_id);
        }
        let inbound = match line.get(3..4) {
            Some(sep) if sep.chars().all(|c| c.is_ascii_punctuation()) => {
                // parts[0] is "MSH", parts[1] MSH-2, parts[n - 1] MSH-n.
                Inbound::Loose(line.split(sep).collect())
            }
            _ => Inbound::Unknown,
        };
        self.write(inbound, timestamp, control_id)
    }

    fn write(
        &self,
        inbound: Inbound<'_>,
        timestamp: &str,
        control_id: &str,
    ) -> Result<String, AckError> {
        if !is_dtm(timestamp) {
            return Err(AckError::InvalidTimestamp);
        }
        if control_id.is_empty()
            || control_id.chars().count() > 199
            || control_id.chars().any(char::is_control)
        {
            return Err(AckError::InvalidControlId);
        }
        let (delimiters, mode) = match &inbound {
            Inbound::Parsed(m) => (m.delimiters(), AckMode::of(m)),
            Inbound::Loose(parts) => {
                let part = |n: usize| parts.get(n - 1).copied().unwrap_or("");
                (
                    Delimiters::default(),
                    AckMode::from_msh15_16(part(15), part(16)),
                )
            }
            Inbound::Unknown => (Delimiters::default(), AckMode::Original),
        };
        let mut w = MessageWriter::new(delimiters);

        // Sender and receiver swap: our MSH-3/4 are their MSH-5/6 and the other way round.
        const COPIED: [(usize, usize); 6] = [(3, 5), (4, 6), (5, 3), (6, 4), (11, 11), (12, 12)];
        let msh = w.msh();
        match &inbound {
            Inbound::Parsed(m) => {
                for (ours, theirs) in COPIED {
                    if let Some(f) = m.msh().field(theirs) {
                        msh.copy_field(ours, f)?;
                    }
                }
            }
            Inbound::Loose(parts) => {
                for (ours, theirs) in COPIED {
                    if let Some(text) = parts.get(theirs - 1) {
                        msh.text(ours, text)?;
                    }
                }
            }
            Inbound::Unknown => {}
        }
        msh.text(7, timestamp)?;
        let trigger = match &inbound {
            Inbound::Parsed(m) => m.trigger_event(),
            _ => Value::Absent,
        };
        match trigger {
            Value::Text(t) => msh.field(9, &FieldValue::components(["ACK", t.as_ref(), "ACK"]))?,
            _ => msh.text(9, "ACK")?,
        };
        msh.text(10, control_id)?;

        let msa = w.segment("MSA")?;
        msa.text(1, mode.code(self.outcome).as_str())?;
        match &inbound {
            Inbound::Parsed(m) => match m.msh().field(10) {
                Some(f) => msa.copy_field(2, f)?,
                None => msa.text(2, "")?,
            },
            Inbound::Loose(parts) => msa.text(2, parts.get(9).copied().unwrap_or(""))?,
            Inbound::Unknown => msa.text(2, "")?,
        };

        for e in &self.errors {
            let err = w.segment("ERR")?;
            if let Some(loc) = &e.location {
                err.field(2, &loc.to_field_value())?;
            }
            let code = e.code.code().to_string();
            err.field(
                3,
                &FieldValue::components([code.as_str(), e.code.text(), "HL70357"]),
            )?;
            err.text(4, e.severity.as_str())?;
            err.text(8, e.user_message)?;
        }
        Ok(w.to_er7())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dtm_validation() {
        for ok in [
            "2026",
            "202601",
            "20260101",
            "2026010112",
            "202601011230",
            "20260101123045",
            "20260101123045.1",
            "20260101123045.1234",
            "20260101123045+0100",
            "20260101123045.12-0500",
            "20260101+0000",
        ] {
            assert!(is_dtm(ok), "{ok}");
        }
        for bad in [
            "",
            "202",
            "2026010",
            "2026-01-01",
            "20260101123045.",
            "20260101123045.12345",
            "202601011230.1",
            "20260101123045+01",
            "20260101123045+0100+0100",
            "20260101|x",
            "２０２６",
        ] {
            assert!(!is_dtm(bad), "{bad}");
        }
    }
}
