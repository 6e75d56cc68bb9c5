//! The RBAC service's suite, through its handlers, on SQLite and PostgreSQL: principals, role bindings
//! and their rules, break-glass, token issuance verified with the published keys, key rotation.

#![allow(clippy::unwrap_used)]

use pm_api::rbac::rbac_service_server::RbacService;
use pm_api::rbac::*;
use pm_authz::policy::{Target, decide};
use pm_authz::token::{PublicKey, Verifier};
use pm_rbac::handlers::{AUDIENCE, ISSUER, RbacApi};
use pm_runtime::config::Backend;
use pm_testing::TestSlice;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The suite tests RBAC's store and rules; the caller is a service (the layer's own tests cover who).
fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(pm_authz::layer::Caller {
        service: Some("test-suite".into()),
        ..Default::default()
    });
    request
}

pub struct Harness {
    api: RbacApi,
    slice: TestSlice,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Harness> {
        let slice = TestSlice::open(backend, pm_rbac::MIGRATIONS).await?;
        Ok(Harness {
            api: RbacApi::new(slice.db.clone()),
            slice,
        })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.slice.finish().await
    }

    async fn principal(&self, id: &str, provider: &str) -> Result<Principal, Status> {
        let principal = Principal {
            display_name: format!("User {id}"),
            kind: PrincipalKind::User as i32,
            provider: provider.into(),
            ..Default::default()
        };
        Ok(self
            .api
            .create_principal(req(CreatePrincipalRequest {
                principal: Some(principal),
                principal_id: id.into(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }

    async fn bind(
        &self,
        principal: &str,
        role: Role,
        units: &[&str],
    ) -> Result<RoleBinding, Status> {
        let binding = RoleBinding {
            principal: principal.into(),
            role: role as i32,
            units: units.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        };
        Ok(self
            .api
            .create_role_binding(req(CreateRoleBindingRequest {
                parent: "organizations/acme".into(),
                role_binding: Some(binding),
                role_binding_id: String::new(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }

    async fn bindings(&self) -> Vec<RoleBinding> {
        self.api
            .list_role_bindings(req(ListRoleBindingsRequest {
                parent: "organizations/acme".into(),
                show_deleted: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .role_bindings
    }

    async fn verifier(&self) -> Verifier {
        let keys = self
            .api
            .list_signing_keys(req(ListSigningKeysRequest {}))
            .await
            .unwrap()
            .into_inner()
            .keys;
        Verifier::new(
            ISSUER,
            AUDIENCE,
            keys.into_iter().map(|k| PublicKey { kid: k.kid, x: k.x }),
        )
        .unwrap()
    }

    async fn token(&self, principal: &str) -> Result<String, Status> {
        Ok(self
            .api
            .issue_token(req(IssueTokenRequest {
                principal: principal.into(),
                ttl: None,
            }))
            .await?
            .into_inner()
            .token)
    }
}

fn reason_of(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

fn fields_of(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

const CLINIC: &str = "organizations/acme/units/clinic";

pm_testing::on_both_backends!(
    crate::Harness;
    principals_are_validated,
    bindings_follow_their_role_and_write_nothing_when_refused,
    revoked_bindings_stop_granting,
    break_glass_needs_a_reason_and_a_short_time_box,
    tokens_verify_with_the_published_keys,
    rotation_keeps_old_tokens_valid,
);

async fn principals_are_validated(h: &Harness) -> anyhow::Result<()> {
    let ann = h.principal("ann", "").await?;
    assert_eq!(ann.name, "principals/ann");
    let bad = h
        .api
        .create_principal(req(CreatePrincipalRequest {
            principal: Some(Principal {
                provider: "providers/x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let fields = fields_of(&bad);
    for field in [
        "principal.display_name",
        "principal.kind",
        "principal.provider",
    ] {
        assert!(fields.contains(&field.to_string()), "{fields:?}");
    }
    let listed = h
        .api
        .list_principals(req(ListPrincipalsRequest::default()))
        .await?
        .into_inner();
    assert_eq!(
        listed.principals.len(),
        1,
        "the refused principal was not written"
    );
    Ok(())
}

async fn bindings_follow_their_role_and_write_nothing_when_refused(
    h: &Harness,
) -> anyhow::Result<()> {
    h.principal("ann", "").await?;
    let unknown = h
        .bind("principals/ghost", Role::ProgramManager, &[CLINIC])
        .await
        .unwrap_err();
    assert_eq!(reason_of(&unknown), "UNKNOWN_REFERENCE");
    let no_units = h
        .bind("principals/ann", Role::ProgramManager, &[])
        .await
        .unwrap_err();
    assert_eq!(fields_of(&no_units), vec!["role_binding.units"]);
    let other_org = h
        .bind(
            "principals/ann",
            Role::BillingStaff,
            &["organizations/globex/units/x"],
        )
        .await
        .unwrap_err();
    assert_eq!(fields_of(&other_org), vec!["role_binding.units[0]"]);
    let not_a_provider = h
        .bind("principals/ann", Role::Provider, &[])
        .await
        .unwrap_err();
    assert_eq!(fields_of(&not_a_provider), vec!["role_binding.principal"]);
    assert!(h.bindings().await.is_empty(), "nothing was written");

    let manager = h
        .bind("principals/ann", Role::ProgramManager, &[CLINIC])
        .await?;
    assert!(!manager.break_glass);
    h.principal("okafor", "organizations/acme/providers/okafor")
        .await?;
    h.bind("principals/okafor", Role::Provider, &[]).await?;
    let filtered = h
        .api
        .list_role_bindings(req(ListRoleBindingsRequest {
            parent: "organizations/acme".into(),
            filter: r#"principal = "principals/ann""#.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(filtered.role_bindings, vec![manager]);
    Ok(())
}

async fn revoked_bindings_stop_granting(h: &Harness) -> anyhow::Result<()> {
    h.principal("ann", "").await?;
    let binding = h
        .bind("principals/ann", Role::ProgramManager, &[CLINIC])
        .await?;
    let target = Target::units("organizations/acme", vec![vec![CLINIC.into()]]);
    let live: Vec<_> = h
        .bindings()
        .await
        .iter()
        .filter(|b| b.delete_time.is_none())
        .filter_map(pm_authz::layer::grant_of)
        .collect();
    assert!(decide(&live, "org.enrollments.create", &target, 0).allowed);
    h.api
        .delete_role_binding(req(DeleteRoleBindingRequest {
            name: binding.name.clone(),
            etag: String::new(),
        }))
        .await?;
    let live: Vec<_> = h
        .bindings()
        .await
        .iter()
        .filter(|b| b.delete_time.is_none())
        .filter_map(pm_authz::layer::grant_of)
        .collect();
    assert!(!decide(&live, "org.enrollments.create", &target, 0).allowed);
    assert_eq!(
        h.bindings().await.len(),
        1,
        "a revoked binding is kept for the record"
    );
    Ok(())
}

async fn break_glass_needs_a_reason_and_a_short_time_box(h: &Harness) -> anyhow::Result<()> {
    h.principal("okafor", "organizations/acme/providers/okafor")
        .await?;
    let request = |reason: &str, hours: i64| BreakGlassRequest {
        parent: "organizations/acme".into(),
        principal: "principals/okafor".into(),
        role: Role::ProgramManager as i32,
        units: vec![CLINIC.into()],
        reason: reason.into(),
        duration: Some(prost_types::Duration {
            seconds: hours * 3600,
            nanos: 0,
        }),
        request_id: String::new(),
    };
    let no_reason = h.api.break_glass(req(request("  ", 1))).await.unwrap_err();
    assert_eq!(fields_of(&no_reason), vec!["reason"]);
    let too_long = h
        .api
        .break_glass(req(request("unconscious patient in ED", 13)))
        .await
        .unwrap_err();
    assert_eq!(fields_of(&too_long), vec!["duration"]);
    assert!(h.bindings().await.is_empty());
    let granted = h
        .api
        .break_glass(req(request("unconscious patient in ED", 2)))
        .await?
        .into_inner();
    assert!(granted.break_glass);
    assert_eq!(granted.reason, "unconscious patient in ED");
    let expires = granted.expire_time.unwrap().seconds;
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 7100..=now + 7300).contains(&expires),
        "time-boxed to the requested two hours"
    );
    Ok(())
}

async fn tokens_verify_with_the_published_keys(h: &Harness) -> anyhow::Result<()> {
    h.principal("ann", "").await?;
    let token = h.token("principals/ann").await?;
    let verifier = h.verifier().await;
    let claims = verifier.verify(&token, chrono::Utc::now().timestamp())?;
    assert_eq!(claims.sub, "principals/ann");
    assert_eq!(claims.aud, AUDIENCE);
    assert!(claims.exp - claims.iat <= 15 * 60);
    assert!(
        verifier.verify(&token, claims.exp + 3600).is_err(),
        "expired later"
    );
    let unknown = h.token("principals/ghost").await.unwrap_err();
    assert_eq!(reason_of(&unknown), "UNKNOWN_REFERENCE");
    let too_long = h
        .api
        .issue_token(req(IssueTokenRequest {
            principal: "principals/ann".into(),
            ttl: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(fields_of(&too_long), vec!["ttl"]);
    Ok(())
}

async fn rotation_keeps_old_tokens_valid(h: &Harness) -> anyhow::Result<()> {
    h.principal("ann", "").await?;
    let before = h.token("principals/ann").await?;
    let old_keys = h.verifier().await.key_ids();
    assert_eq!(old_keys.len(), 1);
    let rotated = h
        .api
        .rotate_signing_key(req(RotateSigningKeyRequest {}))
        .await?
        .into_inner();
    assert!(!old_keys.contains(&rotated.kid));
    let after = h.token("principals/ann").await?;
    let verifier = h.verifier().await;
    assert_eq!(
        verifier.key_ids().len(),
        2,
        "the retired key is still published"
    );
    let now = chrono::Utc::now().timestamp();
    verifier.verify(&before, now)?;
    verifier.verify(&after, now)?;
    let keys = h
        .api
        .list_signing_keys(req(ListSigningKeysRequest {}))
        .await?
        .into_inner()
        .keys;
    assert_eq!(keys[0].kid, rotated.kid, "the signing key comes first");
    assert!(keys[1].retire_time.is_some());
    Ok(())
}
