//! The EHR gateway (issue 14), first slice: HL7 v2 ADT^A01/A04/A08 over MLLP.
//!
//! * `domain`: pure — sources from configuration (validated), the mapping of an ADT message onto
//!   a patient registration or update, and refusals as ERR segments (HL7 table 0357).
//! * `store`: the gateway's slice — the inbound message log (unique on source and control id) and
//!   the patient cross-references.
//! * `intake`: one message from frame to ACK; the message is committed to the log before its ACK
//!   is written (a commit acknowledgement: AA means persisted, applied asynchronously).
//! * `listener`: the MLLP listener (plain TCP), bounded connections, a per-frame read deadline.
//! * `apply`: the worker applying accepted messages to Org (generated client, mTLS, the gateway's
//!   identity) with bounded backoff, in order per patient; refusals for good go to `dead`.

pub mod apply;
pub mod domain;
pub mod intake;
pub mod listener;
pub mod store;

use pm_runtime::db::Migrations;

/// The short name of the service (database slice, certificate).
pub const NAME: &str = "ehr-gateway";

/// The migration sets of the gateway's slice.
pub const MIGRATIONS: &[&Migrations] = &[&store::MIGRATIONS];
