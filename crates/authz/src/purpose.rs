//! The purpose of use a caller states (`x-purpose-of-use`). Every purpose is the caller's claim and is
//! recorded as such, except break-the-glass: `BTG` makes an audit reader treat an access as an
//! emergency one, so it is believed only from a caller holding a live break-glass binding, and refused
//! otherwise (a caller cannot make its routine reads look like sanctioned emergencies, nor bury a
//! real emergency among false ones).

use tonic::{Code, Status};

use crate::layer::Caller;

/// The HL7 v3 ActReason code of break-the-glass access.
pub const BREAK_GLASS: &str = "BTG";

/// Refuses a `BTG` purpose from a caller without a live break-glass grant (one whose expiry is still
/// ahead of `now_micros`); any other purpose passes as the caller's claim.
pub fn check(caller: &Caller, now_micros: i64) -> Result<(), Status> {
    check_in(caller, None, now_micros)
}

/// As [`check`], and once the request's target is known: the live break-glass grant must be in the
/// `organization` the call is about (a grant in one organization does not make an access to another
/// an emergency one).
pub fn check_in(
    caller: &Caller,
    organization: Option<&str>,
    now_micros: i64,
) -> Result<(), Status> {
    // Case-insensitively: `btg` must not slip into the trail as a claim an auditor would misread.
    let claims_break_glass = caller
        .purpose
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(BREAK_GLASS));
    if !claims_break_glass {
        return Ok(());
    }
    let live = caller
        .grants
        .iter()
        .filter(|g| organization.is_none_or(|o| g.organization == o))
        .any(|g| g.break_glass && g.expire_micros.is_some_and(|e| e > now_micros));
    if live {
        return Ok(());
    }
    Err(pm_runtime::ApiError::new(
        Code::PermissionDenied,
        "BREAK_GLASS_NOT_GRANTED",
        "purpose of use BTG needs a live break-glass role binding",
    )
    .into_status("authz.pm.dev"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{Grant, Role};

    fn grant(break_glass: bool, expire_micros: Option<i64>) -> Grant {
        Grant {
            binding: "organizations/acme/roleBindings/b".into(),
            role: Role::Provider,
            organization: "organizations/acme".into(),
            units: Vec::new(),
            expire_micros,
            break_glass,
        }
    }

    fn caller(purpose: &str, grants: Vec<Grant>) -> Caller {
        Caller {
            principal: Some("principals/p".into()),
            purpose: Some(purpose.into()),
            grants: Arc::new(grants),
            ..Caller::default()
        }
    }

    #[test]
    fn btg_needs_a_live_break_glass_grant() {
        let now = 1_000_000;
        for (grants, allowed) in [
            (vec![], false),
            (vec![grant(false, None)], false),
            (vec![grant(false, Some(now + 1))], false),
            (vec![grant(true, Some(now - 1))], false),
            (vec![grant(true, None)], false),
            (
                vec![grant(false, None), grant(true, Some(now + 60_000_000))],
                true,
            ),
        ] {
            for purpose in ["BTG", "btg"] {
                let result = check(&caller(purpose, grants.clone()), now);
                assert_eq!(result.is_ok(), allowed, "{purpose} with {grants:?}");
                if let Err(status) = result {
                    assert_eq!(status.code(), Code::PermissionDenied);
                    use tonic_types::StatusExt as _;
                    assert_eq!(
                        status
                            .get_error_details()
                            .error_info()
                            .map(|i| i.reason.clone()),
                        Some("BREAK_GLASS_NOT_GRANTED".to_string())
                    );
                }
            }
        }
    }

    #[test]
    fn btg_needs_its_grant_in_the_organization_accessed() {
        let now = 1_000_000;
        let acme = caller("BTG", vec![grant(true, Some(now + 60_000_000))]);
        assert!(check_in(&acme, Some("organizations/acme"), now).is_ok());
        assert!(check_in(&acme, None, now).is_ok());
        let elsewhere = check_in(&acme, Some("organizations/other"), now);
        assert_eq!(
            elsewhere.err().map(|s| s.code()),
            Some(Code::PermissionDenied)
        );
    }

    #[test]
    fn other_purposes_stay_the_callers_claim() {
        for purpose in ["TREAT", "HPAYMT", "ETREAT"] {
            assert!(check(&caller(purpose, vec![]), 0).is_ok(), "{purpose}");
        }
        assert!(check(&Caller::default(), 0).is_ok());
    }
}
