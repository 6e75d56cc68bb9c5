//! The chain's format: the canonical encoding of a record and the hash that links it to the one
//! before, and the bytes a checkpoint signs (specified in the [`audit`](super) module
//! documentation). Kept apart because it is the format itself: pure functions of a record, no
//! database, which a verifier outside the service can reimplement from this file alone.

use sha2::{Digest, Sha256};

use super::AuditEvent;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const RECORD_TAG: &str = "pm.audit.v1";
const CHECKPOINT_TAG: &str = "pm.audit.checkpoint.v1";

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A record's field never nears 4 GiB (requests are limited far below), so the length fits.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for item in items {
        put_str(out, item);
    }
}

/// The canonical encoding of record `seq` (see the [`audit`](super) module documentation).
pub fn canonical_bytes(seq: i64, event: &AuditEvent) -> Vec<u8> {
    let (outcome, status_code) = event.outcome.columns();
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, RECORD_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    put_str(&mut out, &event.id);
    out.extend_from_slice(&event.time.to_be_bytes());
    put_str(&mut out, &event.service);
    put_str(&mut out, &event.method);
    put_str(&mut out, &event.principal);
    put_opt(&mut out, event.on_behalf_of.as_deref());
    put_opt(&mut out, event.calling_service.as_deref());
    put_list(&mut out, &event.resources);
    put_list(&mut out, &event.patients);
    put_opt(&mut out, event.source.as_deref());
    put_opt(&mut out, event.purpose.as_deref());
    put_str(&mut out, outcome);
    out.extend_from_slice(&status_code.to_be_bytes());
    out
}

/// `lowercase_hex(SHA-256(str(prev_hash) || canonical_bytes(seq, event)))`.
pub fn record_hash(prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
    let mut prefix = Vec::with_capacity(68);
    put_str(&mut prefix, prev_hash);
    let mut digest = Sha256::new();
    digest.update(&prefix);
    digest.update(canonical_bytes(seq, event));
    hex::encode(digest.finalize())
}

/// The bytes a checkpoint signs: `str("pm.audit.checkpoint.v1") || i64(seq) || str(hash) ||
/// str(key_id) || i64(time)`.
pub fn checkpoint_message(seq: i64, hash: &str, key_id: &str, time: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_str(&mut out, CHECKPOINT_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    put_str(&mut out, hash);
    put_str(&mut out, key_id);
    out.extend_from_slice(&time.to_be_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use crate::audit::tests::sample;

    #[test]
    fn every_field_is_bound_into_the_hash() {
        let base = sample();
        let h = |e: &AuditEvent, seq: i64| record_hash(GENESIS_HASH, seq, e);
        let reference = h(&base.event, 1);
        assert_eq!(reference.len(), 64);
        assert_ne!(h(&base.event, 2), reference, "seq");
        assert_ne!(
            record_hash(&"1".repeat(64), 1, &base.event),
            reference,
            "prev_hash"
        );
        type Change = Box<dyn Fn(&mut AuditEvent)>;
        let variants: Vec<Change> = vec![
            Box::new(|e| e.id.push('x')),
            Box::new(|e| e.time += 1),
            Box::new(|e| e.service.push('x')),
            Box::new(|e| e.method.push('x')),
            Box::new(|e| e.principal.push('x')),
            Box::new(|e| e.on_behalf_of = None),
            Box::new(|e| e.calling_service = Some(String::new())),
            Box::new(|e| e.resources.push(String::new())),
            Box::new(|e| e.patients.clear()),
            Box::new(|e| e.source = None),
            Box::new(|e| e.purpose = Some("HPAYMT".into())),
            Box::new(|e| e.outcome = Outcome::Denied),
            Box::new(|e| e.outcome = Outcome::Failed { code: 0 }),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut event = base.event.clone();
            change(&mut event);
            assert_ne!(h(&event, 1), reference, "variant {i}");
        }
        // Length prefixes: moving bytes between adjacent fields changes the hash.
        let mut a = base.event.clone();
        a.service = "ab".into();
        a.method = "c".into();
        let mut b = base.event.clone();
        b.service = "a".into();
        b.method = "bc".into();
        assert_ne!(h(&a, 1), h(&b, 1));
    }
}
