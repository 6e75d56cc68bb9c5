//! The Scheduling service.
//!
//! Domain first: [`availability`] holds the pure rules that turn recurring weekly availability
//! (per provider × location × service unit, in the location's IANA time zone) and exceptions
//! (time off, closures, holidays) into concrete UTC intervals and bookable slots. No database,
//! no wire types: inputs are parsed into validated values once, and everything downstream can
//! rely on their invariants.

pub mod availability;
pub mod eligibility;
