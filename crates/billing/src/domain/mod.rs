//! Billing's pure domain: money, code formats, fee-schedule resolution, what a line becomes.

pub mod care_time;
pub mod charge;
pub mod claims;
pub mod codes;
pub mod fee_csv;
pub mod invalid;
pub mod invoice;
pub mod money;
pub mod pricing;
#[cfg(test)]
pub mod pyx12;
pub mod report;
pub mod validate;
pub mod x12;
pub mod x12in;
