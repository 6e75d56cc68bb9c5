//! The audit trail (work in progress).
