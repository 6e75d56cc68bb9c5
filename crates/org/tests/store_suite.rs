//! The Org service's store suite: every test runs against SQLite and against PostgreSQL, through the
//! gRPC handlers (domain rules, generic store, SQL), with a fresh database per test. Each bad input
//! checks the error a client sees and that nothing was written.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Harness, expect_error, interval, req, ts, violated_fields};
use pm_api::org::org_service_server::OrgService;
use pm_api::org::*;
use prost_types::FieldMask;
use tonic::Code;

pm_testing::on_both_backends!(
    crate::common::Harness;
    organization_lifecycle,
    bad_organization_input_writes_nothing,
    unit_under_unknown_parent_writes_nothing,
    unit_tree_refuses_cycles,
    unit_with_children_cannot_be_deleted,
    effective_policy_inherits_through_three_levels,
    stale_etag_is_aborted_and_changes_nothing,
    update_mask_rejects_output_only_fields,
    pagination_walks_every_item_once,
    page_token_is_bound_to_its_query,
    page_size_is_coerced_or_rejected,
    filters_select_in_sql,
    malformed_names_are_invalid,
    request_id_replays_the_first_result,
    invalid_npi_and_duplicate_npi,
    credential_periods_may_not_overlap,
    credential_check_answers_at_an_instant,
    concurrent_overlapping_credentials_admit_one,
    location_time_zone_is_validated,
    coverage_periods_and_priorities,
    patient_identifiers_are_unique_without_leaking_them,
    enrollment_lifecycle_with_history,
    enrollment_rules,
    phi_calls_leave_a_verifiable_audit_trail,
    a_refused_write_is_audited_as_failed_and_writes_nothing,
    undelete_restores_a_soft_deleted_resource,
    reusing_a_deleted_id_says_to_undelete_it,
    undelete_keeps_the_rules_of_a_write,
    patients_are_found_by_name_prefix_without_case_or_accents,
    patient_search_pages_and_refuses_bad_input_without_phi,
    patients_stored_before_search_existed_are_indexed,
    undeleted_credentials_enrollments_and_coverages_keep_their_rules,
    intake_records_are_recorded_once_and_carried_to_eligibility,
    bad_intake_records_write_nothing,
    intake_records_are_revoked_once_and_bad_revocations_write_nothing,
);

async fn organization_lifecycle(h: &Harness) -> anyhow::Result<()> {
    let org = h.org("acme").await?;
    assert_eq!(org.name, "organizations/acme");
    assert!(org.create_time.is_some() && !org.etag.is_empty());

    let mut patch = org.clone();
    patch.display_name = "Acme Health".into();
    patch.time_zone = "Europe/Paris".into();
    let updated = h
        .api
        .update_organization(req(UpdateOrganizationRequest {
            organization: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        }))
        .await?
        .into_inner();
    assert_eq!(updated.display_name, "Acme Health");
    assert_eq!(
        updated.time_zone, "America/New_York",
        "fields outside the mask keep their value"
    );
    assert_ne!(updated.etag, org.etag);
    assert_eq!(updated.create_time, org.create_time);

    let deleted = h
        .api
        .delete_organization(req(DeleteOrganizationRequest {
            name: org.name.clone(),
            etag: updated.etag.clone(),
        }))
        .await?
        .into_inner();
    assert!(deleted.delete_time.is_some());
    let listed = h
        .api
        .list_organizations(req(ListOrganizationsRequest::default()))
        .await?
        .into_inner();
    assert!(
        listed.organizations.is_empty(),
        "soft-deleted organizations are hidden"
    );
    let with_deleted = h
        .api
        .list_organizations(req(ListOrganizationsRequest {
            show_deleted: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(with_deleted.organizations.len(), 1);
    let got = h
        .api
        .get_organization(req(GetOrganizationRequest {
            name: org.name.clone(),
        }))
        .await?
        .into_inner();
    assert!(
        got.delete_time.is_some(),
        "Get still returns a soft-deleted resource"
    );
    Ok(())
}

async fn bad_organization_input_writes_nothing(h: &Harness) -> anyhow::Result<()> {
    let result = h
        .api
        .create_organization(req(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "   ".into(),
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            }),
            organization_id: "bad".into(),
            request_id: String::new(),
        }))
        .await;
    let status = expect_error(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"organization.display_name".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"organization.time_zone".to_string()),
        "{fields:?}"
    );

    let missing = h
        .api
        .create_organization(req(CreateOrganizationRequest::default()))
        .await;
    expect_error(missing, Code::InvalidArgument, "FIELD_REQUIRED");
    let bad_id = h
        .api
        .create_organization(req(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "Ok".into(),
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            organization_id: "Not An Id".into(),
            request_id: String::new(),
        }))
        .await;
    assert_eq!(
        violated_fields(&expect_error(
            bad_id,
            Code::InvalidArgument,
            "RESOURCE_ID_INVALID"
        )),
        vec!["organization_id"]
    );

    let listed = h
        .api
        .list_organizations(req(ListOrganizationsRequest {
            show_deleted: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert!(listed.organizations.is_empty(), "nothing was written");
    Ok(())
}

async fn unit_under_unknown_parent_writes_nothing(h: &Harness) -> anyhow::Result<()> {
    expect_error(
        h.unit("organizations/ghost", "north", "").await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    h.org("acme").await?;
    let status = expect_error(
        h.unit(
            "organizations/acme",
            "north",
            "organizations/acme/units/ghost",
        )
        .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(violated_fields(&status), vec!["service_unit.parent_unit"]);
    let status = expect_error(
        h.unit("organizations/acme", "north", "organizations/other/units/x")
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["service_unit.parent_unit"]);
    assert!(
        h.units("organizations/acme").await?.is_empty(),
        "nothing was written"
    );
    Ok(())
}

async fn unit_tree_refuses_cycles(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let root = h.unit("organizations/acme", "root", "").await?;
    let child = h.unit("organizations/acme", "child", &root.name).await?;
    let grandchild = h
        .unit("organizations/acme", "grandchild", &child.name)
        .await?;

    for new_parent in [&grandchild.name, &child.name, &root.name] {
        let mut patch = root.clone();
        patch.parent_unit = new_parent.clone();
        let result = h
            .api
            .update_service_unit(req(UpdateServiceUnitRequest {
                service_unit: Some(patch),
                update_mask: Some(FieldMask {
                    paths: vec!["parent_unit".into()],
                }),
            }))
            .await;
        let code = if new_parent == &root.name {
            Code::InvalidArgument
        } else {
            Code::FailedPrecondition
        };
        let reason = if new_parent == &root.name {
            "INVALID_ARGUMENT"
        } else {
            "UNIT_CYCLE"
        };
        expect_error(result, code, reason);
    }
    let stored = h
        .api
        .get_service_unit(req(GetServiceUnitRequest {
            name: root.name.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(stored.parent_unit, "", "the refused move changed nothing");
    assert_eq!(stored.etag, root.etag);

    // A legal move: grandchild up under root.
    let mut patch = grandchild.clone();
    patch.parent_unit = root.name.clone();
    let moved = h
        .api
        .update_service_unit(req(UpdateServiceUnitRequest {
            service_unit: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["parent_unit".into()],
            }),
        }))
        .await?
        .into_inner();
    assert_eq!(moved.parent_unit, root.name);
    Ok(())
}

async fn unit_with_children_cannot_be_deleted(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let root = h.unit("organizations/acme", "root", "").await?;
    let child = h.unit("organizations/acme", "child", &root.name).await?;
    let result = h
        .api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: root.name.clone(),
            etag: String::new(),
        }))
        .await;
    expect_error(result, Code::FailedPrecondition, "UNIT_HAS_CHILDREN");
    h.api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: child.name.clone(),
            etag: String::new(),
        }))
        .await?;
    h.api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: root.name.clone(),
            etag: String::new(),
        }))
        .await?;
    let org_delete = h
        .api
        .delete_organization(req(DeleteOrganizationRequest {
            name: "organizations/acme".into(),
            etag: String::new(),
        }))
        .await;
    assert!(
        org_delete.is_ok(),
        "an organization without live units can be deleted"
    );
    Ok(())
}

async fn effective_policy_inherits_through_three_levels(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let root = h
        .unit_with(
            "organizations/acme",
            "clinic",
            ServiceUnit {
                display_name: "Clinic".into(),
                kind: UnitKind::Clinic as i32,
                billing_profile: Some(BillingProfile {
                    billing_entity: "billingEntities/acme".into(),
                    place_of_service: "11".into(),
                    claim_form: ClaimForm::Cms1500 as i32,
                    ..Default::default()
                }),
                workflow_rules: Some(WorkflowRules {
                    reporting_tags: vec!["primary".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let line = h
        .unit_with(
            "organizations/acme",
            "line",
            ServiceUnit {
                display_name: "Line".into(),
                kind: UnitKind::ServiceLine as i32,
                parent_unit: root.name.clone(),
                billing_profile: Some(BillingProfile {
                    fee_schedule: "feeSchedules/line".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let program = h
        .unit_with(
            "organizations/acme",
            "program",
            ServiceUnit {
                display_name: "Program".into(),
                kind: UnitKind::Program as i32,
                parent_unit: line.name.clone(),
                billing_profile: Some(BillingProfile {
                    place_of_service: "02".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let policy = h
        .api
        .get_effective_policy(req(GetEffectivePolicyRequest {
            unit: program.name.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(
        policy.lineage,
        vec![root.name.clone(), line.name.clone(), program.name.clone()]
    );
    let billing = policy.billing_profile.clone().unwrap_or_default();
    assert_eq!(billing.billing_entity, "billingEntities/acme");
    assert_eq!(billing.fee_schedule, "feeSchedules/line");
    assert_eq!(billing.place_of_service, "02");
    assert_eq!(billing.claim_form, ClaimForm::Cms1500 as i32);
    let source = |field: &str| {
        policy
            .sources
            .iter()
            .find(|s| s.field == field)
            .map(|s| s.unit.clone())
            .unwrap_or_default()
    };
    assert_eq!(source("billing_profile.billing_entity"), root.name);
    assert_eq!(source("billing_profile.fee_schedule"), line.name);
    assert_eq!(source("billing_profile.place_of_service"), program.name);
    assert_eq!(source("workflow_rules.reporting_tags"), root.name);

    let missing = h
        .api
        .get_effective_policy(req(GetEffectivePolicyRequest {
            unit: "organizations/acme/units/ghost".into(),
        }))
        .await;
    expect_error(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
    Ok(())
}

async fn stale_etag_is_aborted_and_changes_nothing(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    let mut first = unit.clone();
    first.display_name = "First".into();
    h.api
        .update_service_unit(req(UpdateServiceUnitRequest {
            service_unit: Some(first),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        }))
        .await?;
    let mut stale = unit.clone();
    stale.display_name = "Second".into();
    let result = h
        .api
        .update_service_unit(req(UpdateServiceUnitRequest {
            service_unit: Some(stale),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        }))
        .await;
    expect_error(result, Code::Aborted, "ETAG_MISMATCH");
    let delete = h
        .api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: unit.name.clone(),
            etag: unit.etag.clone(),
        }))
        .await;
    expect_error(delete, Code::Aborted, "ETAG_MISMATCH");
    let stored = h
        .api
        .get_service_unit(req(GetServiceUnitRequest {
            name: unit.name.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(stored.display_name, "First");
    assert!(stored.delete_time.is_none());
    Ok(())
}

async fn update_mask_rejects_output_only_fields(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    for path in ["create_time", "name", "no_such_field"] {
        let result = h
            .api
            .update_service_unit(req(UpdateServiceUnitRequest {
                service_unit: Some(unit.clone()),
                update_mask: Some(FieldMask {
                    paths: vec![path.into()],
                }),
            }))
            .await;
        let status = expect_error(result, Code::InvalidArgument, "UPDATE_MASK_INVALID");
        assert_eq!(violated_fields(&status), vec!["update_mask"]);
    }
    let missing = h
        .api
        .update_service_unit(req(UpdateServiceUnitRequest {
            service_unit: Some(ServiceUnit {
                name: "organizations/acme/units/ghost".into(),
                ..Default::default()
            }),
            update_mask: None,
        }))
        .await;
    expect_error(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
    Ok(())
}

async fn list_unit_names(
    h: &Harness,
    request: ListServiceUnitsRequest,
) -> anyhow::Result<(Vec<String>, String)> {
    let page = h.api.list_service_units(req(request)).await?.into_inner();
    Ok((
        page.service_units.into_iter().map(|u| u.name).collect(),
        page.next_page_token,
    ))
}

async fn pagination_walks_every_item_once(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    for i in 0..7 {
        h.unit("organizations/acme", &format!("u{i}"), "").await?;
    }
    for order_by in ["", "create_time", "create_time desc"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (names, next) = list_unit_names(
                h,
                ListServiceUnitsRequest {
                    parent: "organizations/acme".into(),
                    page_size: 3,
                    page_token: token.clone(),
                    order_by: order_by.into(),
                    ..Default::default()
                },
            )
            .await?;
            assert!(names.len() <= 3);
            seen.extend(names);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let mut expected: Vec<String> = (0..7)
            .map(|i| format!("organizations/acme/units/u{i}"))
            .collect();
        if order_by == "create_time desc" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "order_by {order_by:?}");
    }
    Ok(())
}

async fn page_token_is_bound_to_its_query(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    for i in 0..3 {
        h.unit("organizations/acme", &format!("u{i}"), "").await?;
    }
    let (_, token) = list_unit_names(
        h,
        ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            page_size: 1,
            ..Default::default()
        },
    )
    .await?;
    assert!(!token.is_empty());
    let reused = h
        .api
        .list_service_units(req(ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            page_size: 1,
            page_token: token,
            filter: "kind = UNIT_KIND_PROGRAM".into(),
            ..Default::default()
        }))
        .await;
    let status = expect_error(reused, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    assert_eq!(violated_fields(&status), vec!["page_token"]);
    let garbage = h
        .api
        .list_service_units(req(ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .await;
    expect_error(garbage, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    Ok(())
}

async fn page_size_is_coerced_or_rejected(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    for i in 0..3 {
        h.unit("organizations/acme", &format!("u{i}"), "").await?;
    }
    let (names, next) = list_unit_names(
        h,
        ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            page_size: 1_000_000,
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        names.len(),
        3,
        "an oversized page_size is coerced, not an error"
    );
    assert!(next.is_empty());
    let negative = h
        .api
        .list_service_units(req(ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            page_size: -1,
            ..Default::default()
        }))
        .await;
    assert_eq!(
        violated_fields(&expect_error(
            negative,
            Code::InvalidArgument,
            "PAGE_SIZE_INVALID"
        )),
        vec!["page_size"]
    );
    Ok(())
}

async fn filters_select_in_sql(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let root = h.unit("organizations/acme", "root", "").await?;
    h.unit_with(
        "organizations/acme",
        "ccm",
        ServiceUnit {
            display_name: "CCM".into(),
            kind: UnitKind::Program as i32,
            parent_unit: root.name.clone(),
            ..Default::default()
        },
    )
    .await?;
    h.unit("organizations/acme", "child", &root.name).await?;
    let filter = |f: &str| ListServiceUnitsRequest {
        parent: "organizations/acme".into(),
        filter: f.into(),
        ..Default::default()
    };
    let (programs, _) = list_unit_names(h, filter("kind = UNIT_KIND_PROGRAM")).await?;
    assert_eq!(programs, vec!["organizations/acme/units/ccm"]);
    let (quoted, _) = list_unit_names(h, filter(r#"kind = "UNIT_KIND_PROGRAM""#)).await?;
    assert_eq!(quoted, programs);
    let (children, _) =
        list_unit_names(h, filter(&format!(r#"parent_unit = "{}""#, root.name))).await?;
    assert_eq!(children.len(), 2);
    let (top, _) = list_unit_names(h, filter(r#"parent_unit = """#)).await?;
    assert_eq!(top, vec![root.name.clone()]);
    let (both, _) = list_unit_names(
        h,
        filter(&format!(
            r#"parent_unit = "{}" AND kind = UNIT_KIND_CLINIC"#,
            root.name
        )),
    )
    .await?;
    assert_eq!(both, vec!["organizations/acme/units/child"]);
    let bad = h.api.list_service_units(req(filter("npi = 1"))).await;
    assert_eq!(
        violated_fields(&expect_error(bad, Code::InvalidArgument, "FILTER_INVALID")),
        vec!["filter"]
    );
    Ok(())
}

async fn malformed_names_are_invalid(h: &Harness) -> anyhow::Result<()> {
    for name in [
        "",
        "units/x",
        "organizations/acme/units",
        "organizations/ACME/units/x",
        "organizations/acme/units/x/y",
    ] {
        let result = h
            .api
            .get_service_unit(req(GetServiceUnitRequest { name: name.into() }))
            .await;
        let status = expect_error(result, Code::InvalidArgument, "RESOURCE_NAME_INVALID");
        assert_eq!(violated_fields(&status), vec!["name"], "{name}");
    }
    let list = h
        .api
        .list_patients(req(ListPatientsRequest {
            parent: "organizations/".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        violated_fields(&expect_error(
            list,
            Code::InvalidArgument,
            "RESOURCE_NAME_INVALID"
        )),
        vec!["parent"]
    );
    let missing = h
        .api
        .get_service_unit(req(GetServiceUnitRequest {
            name: "organizations/acme/units/x".into(),
        }))
        .await;
    expect_error(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
    Ok(())
}

async fn request_id_replays_the_first_result(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let request = CreateServiceUnitRequest {
        parent: "organizations/acme".into(),
        service_unit: Some(ServiceUnit {
            display_name: "North".into(),
            kind: UnitKind::Clinic as i32,
            ..Default::default()
        }),
        service_unit_id: String::new(),
        request_id: "6f1c2b1e-3a43-4d4e-9a55-0e7f8a3b2c10".into(),
    };
    let first = h
        .api
        .create_service_unit(req(request.clone()))
        .await?
        .into_inner();
    let second = h
        .api
        .create_service_unit(req(request.clone()))
        .await?
        .into_inner();
    assert_eq!(first, second, "a retried call returns the first result");
    assert_eq!(
        h.units("organizations/acme").await?.len(),
        1,
        "and does its work once"
    );

    let mut different = request.clone();
    different.service_unit = Some(ServiceUnit {
        display_name: "South".into(),
        kind: UnitKind::Clinic as i32,
        ..Default::default()
    });
    expect_error(
        h.api.create_service_unit(req(different)).await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    let mut not_uuid = request;
    not_uuid.request_id = "retry-1".into();
    let status = expect_error(
        h.api.create_service_unit(req(not_uuid)).await,
        Code::InvalidArgument,
        "REQUEST_ID_INVALID",
    );
    assert_eq!(violated_fields(&status), vec!["request_id"]);
    assert_eq!(h.units("organizations/acme").await?.len(), 1);
    Ok(())
}

async fn invalid_npi_and_duplicate_npi(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let status = expect_error(
        h.provider("organizations/acme", "bad", "1234567890").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["provider.npi"]);
    h.provider("organizations/acme", "okafor", "1234567893")
        .await?;
    let status = expect_error(
        h.provider("organizations/acme", "twin", "1234567893").await,
        Code::AlreadyExists,
        "NPI_ALREADY_REGISTERED",
    );
    assert_eq!(violated_fields(&status), vec!["provider.npi"]);
    let listed = h
        .api
        .list_providers(req(ListProvidersRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(
        listed.providers.len(),
        1,
        "neither refused provider was written"
    );
    Ok(())
}

async fn create_credential(
    h: &Harness,
    provider: &str,
    id: &str,
    unit: &str,
    state: CredentialState,
    period: Option<pm_api::types::Interval>,
) -> Result<Credential, tonic::Status> {
    Ok(h.api
        .create_credential(req(CreateCredentialRequest {
            parent: provider.into(),
            credential: Some(Credential {
                unit: unit.into(),
                state: state as i32,
                effective_period: period,
                ..Default::default()
            }),
            credential_id: id.into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner())
}

async fn credential_names(h: &Harness, provider: &str) -> anyhow::Result<Vec<String>> {
    Ok(h.api
        .list_credentials(req(ListCredentialsRequest {
            parent: provider.into(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .credentials
        .into_iter()
        .map(|c| c.name)
        .collect())
}

async fn credential_periods_may_not_overlap(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    let other_unit = h.unit("organizations/acme", "south", "").await?;
    let provider = h
        .provider("organizations/acme", "okafor", "1234567893")
        .await?;
    create_credential(
        h,
        &provider.name,
        "c1",
        &unit.name,
        CredentialState::Active,
        interval(1_000, Some(2_000)),
    )
    .await?;
    let status = expect_error(
        create_credential(
            h,
            &provider.name,
            "c2",
            &unit.name,
            CredentialState::Active,
            interval(1_500, None),
        )
        .await,
        Code::FailedPrecondition,
        "CREDENTIAL_PERIOD_OVERLAP",
    );
    assert!(status.message().contains("c1"), "{}", status.message());
    // Adjacent periods and other units are fine.
    create_credential(
        h,
        &provider.name,
        "c3",
        &unit.name,
        CredentialState::Active,
        interval(2_000, None),
    )
    .await?;
    create_credential(
        h,
        &provider.name,
        "c4",
        &other_unit.name,
        CredentialState::Active,
        interval(1_500, None),
    )
    .await?;
    let status = expect_error(
        create_credential(
            h,
            &provider.name,
            "c5",
            &unit.name,
            CredentialState::Active,
            interval(500, Some(400)),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        vec!["credential.effective_period.end_time"]
    );
    expect_error(
        create_credential(
            h,
            &provider.name,
            "c6",
            "organizations/acme/units/ghost",
            CredentialState::Active,
            interval(0, None),
        )
        .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(
        credential_names(h, &provider.name).await?.len(),
        3,
        "refused credentials were not written"
    );

    // Widening c1 into c3's period through an update is refused too.
    let c1 = h
        .api
        .get_credential(req(GetCredentialRequest {
            name: format!("{}/credentials/c1", provider.name),
        }))
        .await?
        .into_inner();
    let mut widened = c1.clone();
    widened.effective_period = interval(1_000, None);
    let result = h
        .api
        .update_credential(req(UpdateCredentialRequest {
            credential: Some(widened),
            update_mask: Some(FieldMask {
                paths: vec!["effective_period".into()],
            }),
        }))
        .await;
    expect_error(
        result,
        Code::FailedPrecondition,
        "CREDENTIAL_PERIOD_OVERLAP",
    );
    let mut moved = c1;
    moved.unit = other_unit.name.clone();
    let result = h
        .api
        .update_credential(req(UpdateCredentialRequest {
            credential: Some(moved),
            update_mask: Some(FieldMask {
                paths: vec!["unit".into()],
            }),
        }))
        .await;
    expect_error(result, Code::InvalidArgument, "UPDATE_MASK_INVALID");
    Ok(())
}

async fn credential_check_answers_at_an_instant(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    let child = h.unit("organizations/acme", "child", &unit.name).await?;
    let provider = h
        .provider("organizations/acme", "okafor", "1234567893")
        .await?;
    create_credential(
        h,
        &provider.name,
        "old",
        &unit.name,
        CredentialState::Active,
        interval(1_000, Some(2_000)),
    )
    .await?;
    create_credential(
        h,
        &provider.name,
        "pending",
        &unit.name,
        CredentialState::Pending,
        interval(3_000, None),
    )
    .await?;
    let check = |unit: String, at: i64| {
        let api = h.api.clone();
        let provider = provider.name.clone();
        async move {
            api.check_credential(req(CheckCredentialRequest {
                provider,
                unit,
                time: ts(at),
            }))
            .await
            .map(|r| r.into_inner())
        }
    };
    let inside = check(unit.name.clone(), 1_500).await?;
    assert!(inside.credentialed);
    assert_eq!(
        inside.credential.map(|c| c.name),
        Some(format!("{}/credentials/old", provider.name))
    );
    assert!(
        !check(unit.name.clone(), 2_000).await?.credentialed,
        "the end is exclusive"
    );
    assert!(!check(unit.name.clone(), 500).await?.credentialed);
    let pending = check(unit.name.clone(), 5_000).await?;
    assert!(
        !pending.credentialed,
        "a pending credential does not credential"
    );
    assert!(pending.credential.is_some());
    assert!(
        !check(child.name.clone(), 1_500).await?.credentialed,
        "credentials are per unit, not inherited"
    );
    expect_error(
        check("organizations/acme/units/ghost".into(), 0).await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    expect_error(
        check("organizations/other/units/x".into(), 0).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    Ok(())
}

async fn concurrent_overlapping_credentials_admit_one(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    let provider = h
        .provider("organizations/acme", "okafor", "1234567893")
        .await?;
    let attempts = (0..16).map(|i| {
        let provider = provider.name.clone();
        let unit = unit.name.clone();
        async move {
            create_credential(
                h,
                &provider,
                &format!("c{i}"),
                &unit,
                CredentialState::Active,
                interval(1_000 + i, None),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        admitted, 1,
        "exactly one of the overlapping credentials is admitted"
    );
    for refused in results.into_iter().filter_map(Result::err) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    assert_eq!(credential_names(h, &provider.name).await?.len(), 1);
    Ok(())
}

async fn location_time_zone_is_validated(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let create = |zone: &str| {
        let api = h.api.clone();
        let location = Location {
            display_name: "Main".into(),
            time_zone: zone.into(),
            ..Default::default()
        };
        async move {
            api.create_location(req(CreateLocationRequest {
                parent: "organizations/acme".into(),
                location: Some(location),
                location_id: String::new(),
                request_id: String::new(),
            }))
            .await
        }
    };
    for zone in ["Mars/Olympus", "", "EST5EDT-bogus"] {
        let status = expect_error(
            create(zone).await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(violated_fields(&status), vec!["location.time_zone"]);
    }
    let listed = h
        .api
        .list_locations(req(ListLocationsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert!(listed.locations.is_empty(), "nothing was written");
    let ok = create("America/Chicago").await?.into_inner();
    assert_eq!(ok.time_zone, "America/Chicago");
    Ok(())
}

async fn coverage_periods_and_priorities(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let create = |id: &str, priority: i32, period: Option<pm_api::types::Interval>| {
        let api = h.api.clone();
        let parent = patient.name.clone();
        let coverage = Coverage {
            payer: "payers/medicare".into(),
            member_id: "1EG4-TE5-MK72".into(),
            plan: "Part B".into(),
            priority,
            effective_period: period,
            ..Default::default()
        };
        let id = id.to_string();
        async move {
            api.create_coverage(req(CreateCoverageRequest {
                parent,
                coverage: Some(coverage),
                coverage_id: id,
                request_id: String::new(),
            }))
            .await
        }
    };
    create("primary", 1, interval(0, None)).await?;
    create("secondary", 2, interval(0, None)).await?;
    expect_error(
        create("again", 1, interval(10, Some(20))).await,
        Code::FailedPrecondition,
        "COVERAGE_PRIORITY_OVERLAP",
    );
    let status = expect_error(
        create("backwards", 3, interval(20, Some(10))).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        violated_fields(&status),
        vec!["coverage.effective_period.end_time"]
    );
    let status = expect_error(
        create("nopayer", 0, None).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"coverage.priority".to_string())
            && fields.contains(&"coverage.effective_period".to_string()),
        "{fields:?}"
    );
    let listed = h
        .api
        .list_coverages(req(ListCoveragesRequest {
            parent: patient.name.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(listed.coverages.len(), 2);
    let (primary_only, _) = {
        let page = h
            .api
            .list_coverages(req(ListCoveragesRequest {
                parent: patient.name.clone(),
                filter: "priority = 1".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        (page.coverages, page.next_page_token)
    };
    assert_eq!(primary_only.len(), 1);
    Ok(())
}

async fn patient_identifiers_are_unique_without_leaking_them(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    h.patient("organizations/acme", "p1", "MRN-CANARY-7731")
        .await?;
    let status = expect_error(
        h.patient("organizations/acme", "p2", "MRN-CANARY-7731")
            .await,
        Code::AlreadyExists,
        "PATIENT_IDENTIFIER_TAKEN",
    );
    let printed = format!("{status:?}");
    for phi in ["MRN-CANARY-7731", "Canary", "Testpatient", "1970"] {
        assert!(!printed.contains(phi), "the error leaks {phi}: {printed}");
    }
    let found = h
        .api
        .list_patients(req(ListPatientsRequest {
            parent: "organizations/acme".into(),
            filter: r#"identifier = "urn:test:mrn|MRN-CANARY-7731""#.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(found.patients.len(), 1);
    assert_eq!(found.patients[0].name, "organizations/acme/patients/p1");

    let future = h
        .api
        .create_patient(req(CreatePatientRequest {
            parent: "organizations/acme".into(),
            patient: Some(Patient {
                given_name: "A".into(),
                family_name: "B".into(),
                birth_date: Some(pm_api::types::Date {
                    year: 2999,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            patient_id: String::new(),
            request_id: String::new(),
        }))
        .await;
    assert_eq!(
        violated_fields(&expect_error(
            future,
            Code::InvalidArgument,
            "INVALID_ARGUMENT"
        )),
        vec!["patient.birth_date"]
    );
    Ok(())
}

async fn enroll(
    h: &Harness,
    patient: &str,
    id: &str,
    unit: &str,
    step: &str,
) -> Result<Enrollment, tonic::Status> {
    Ok(h.api
        .create_enrollment(req(CreateEnrollmentRequest {
            parent: patient.into(),
            enrollment: Some(Enrollment {
                unit: unit.into(),
                pathway_step: step.into(),
                ..Default::default()
            }),
            enrollment_id: id.into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner())
}

async fn program_units(h: &Harness) -> anyhow::Result<(ServiceUnit, ServiceUnit)> {
    h.org("acme").await?;
    let step = |id: &str| CarePathwayStep {
        id: id.into(),
        display_name: id.to_uppercase(),
    };
    let clinic = h
        .unit_with(
            "organizations/acme",
            "clinic",
            ServiceUnit {
                display_name: "Clinic".into(),
                kind: UnitKind::Clinic as i32,
                workflow_rules: Some(WorkflowRules {
                    care_pathway_steps: vec![step("intake"), step("care-plan"), step("monthly")],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    // The program inherits the clinic's pathway.
    let program = h
        .unit_with(
            "organizations/acme",
            "ccm",
            ServiceUnit {
                display_name: "CCM".into(),
                kind: UnitKind::Program as i32,
                parent_unit: clinic.name.clone(),
                ..Default::default()
            },
        )
        .await?;
    Ok((clinic, program))
}

async fn enrollment_lifecycle_with_history(h: &Harness) -> anyhow::Result<()> {
    let (clinic, program) = program_units(h).await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let enrollment = enroll(h, &patient.name, "e1", &program.name, "intake").await?;
    assert_eq!(enrollment.state, EnrollmentState::Active as i32);
    assert_eq!(enrollment.history.len(), 1);

    let transfer = TransferEnrollmentRequest {
        name: enrollment.name.clone(),
        unit: String::new(),
        pathway_step: "care-plan".into(),
        reason: "plan drafted".into(),
        etag: enrollment.etag.clone(),
        request_id: "1b7e8a1c-6f2d-4b59-8f0a-5d6c7e8f9a0b".into(),
    };
    let moved = h
        .api
        .transfer_enrollment(req(transfer.clone()))
        .await?
        .into_inner();
    assert_eq!(moved.pathway_step, "care-plan");
    let replayed = h.api.transfer_enrollment(req(transfer)).await?.into_inner();
    assert_eq!(replayed, moved, "a retried transfer does its work once");
    assert_eq!(moved.history.len(), 2);

    let to_clinic = h
        .api
        .transfer_enrollment(req(TransferEnrollmentRequest {
            name: enrollment.name.clone(),
            unit: clinic.name.clone(),
            pathway_step: "monthly".into(),
            reason: "moved".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(to_clinic.unit, clinic.name);

    let discharged = h
        .api
        .discharge_enrollment(req(DischargeEnrollmentRequest {
            name: enrollment.name.clone(),
            reason: "goals met".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(discharged.state, EnrollmentState::Discharged as i32);
    let kinds: Vec<i32> = discharged.history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EnrollmentEventKind::Enrolled as i32,
            EnrollmentEventKind::Transferred as i32,
            EnrollmentEventKind::Transferred as i32,
            EnrollmentEventKind::Discharged as i32
        ]
    );
    let again = h
        .api
        .discharge_enrollment(req(DischargeEnrollmentRequest {
            name: enrollment.name.clone(),
            reason: "twice".into(),
            ..Default::default()
        }))
        .await;
    expect_error(again, Code::FailedPrecondition, "ENROLLMENT_NOT_ACTIVE");
    // Once discharged, the patient may enroll in the program again.
    enroll(h, &patient.name, "e2", &program.name, "intake").await?;
    Ok(())
}

async fn enrollment_rules(h: &Harness) -> anyhow::Result<()> {
    let (_, program) = program_units(h).await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let status = expect_error(
        enroll(h, &patient.name, "x", &program.name, "nope").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["enrollment.pathway_step"]);
    expect_error(
        enroll(h, &patient.name, "x", &program.name, "").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    expect_error(
        enroll(h, &patient.name, "x", "organizations/acme/units/ghost", "").await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    expect_error(
        enroll(
            h,
            "organizations/acme/patients/ghost",
            "x",
            &program.name,
            "intake",
        )
        .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    enroll(h, &patient.name, "e1", &program.name, "intake").await?;
    expect_error(
        enroll(h, &patient.name, "e2", &program.name, "intake").await,
        Code::FailedPrecondition,
        "ALREADY_ENROLLED",
    );
    let listed = h
        .api
        .list_enrollments(req(ListEnrollmentsRequest {
            parent: patient.name.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(
        listed.enrollments.len(),
        1,
        "refused enrollments were not written"
    );
    let discharge_without_reason = h
        .api
        .discharge_enrollment(req(DischargeEnrollmentRequest {
            name: listed.enrollments[0].name.clone(),
            ..Default::default()
        }))
        .await;
    expect_error(
        discharge_without_reason,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    Ok(())
}

async fn patient_accesses(
    h: &Harness,
    patient: &str,
) -> anyhow::Result<Vec<pm_authz::audit::StoredAuditEvent>> {
    let (events, _) =
        pm_authz::audit::accesses_to_patient(h.db(), patient, 0, i64::MAX, 100, None).await?;
    Ok(events)
}

async fn phi_calls_leave_a_verifiable_audit_trail(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    h.api
        .get_patient(req(GetPatientRequest {
            name: patient.name.clone(),
        }))
        .await?;
    h.api
        .list_patients(req(ListPatientsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        }))
        .await?;
    let events = patient_accesses(h, &patient.name).await?;
    let methods: Vec<&str> = events.iter().map(|e| e.event.method.as_str()).collect();
    assert_eq!(
        methods,
        vec![
            "/pm.org.v1.OrgService/CreatePatient",
            "/pm.org.v1.OrgService/GetPatient",
            "/pm.org.v1.OrgService/ListPatients"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.event.outcome == pm_authz::audit::Outcome::Success)
    );
    assert_eq!(
        events[1].event.principal,
        "spiffe://pm.local/service/test-suite"
    );
    assert_eq!(events[1].event.resources, vec![patient.name.clone()]);
    // Non-PHI calls are not in the trail.
    h.unit("organizations/acme", "north", "").await?;
    let report = pm_authz::audit::verify(h.db(), &std::collections::HashMap::new()).await?;
    assert!(report.is_ok(), "{report:?}");
    Ok(())
}

async fn a_refused_write_is_audited_as_failed_and_writes_nothing(
    h: &Harness,
) -> anyhow::Result<()> {
    h.org("acme").await?;
    h.patient("organizations/acme", "p1", "MRN-1").await?;
    expect_error(
        h.patient("organizations/acme", "p2", "MRN-1").await,
        Code::AlreadyExists,
        "PATIENT_IDENTIFIER_TAKEN",
    );
    let events = patient_accesses(h, "organizations/acme/patients/p2").await?;
    assert_eq!(
        events.len(),
        0,
        "the refused create names its parent, not a patient that does not exist"
    );
    let (all, _) = {
        let page = pm_authz::audit::records(h.db(), 0, 100).await?;
        (page, ())
    };
    let outcomes: Vec<_> = all
        .iter()
        .map(|e| (e.event.method.clone(), e.event.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (
                "/pm.org.v1.OrgService/CreatePatient".to_string(),
                pm_authz::audit::Outcome::Success
            ),
            (
                "/pm.org.v1.OrgService/CreatePatient".to_string(),
                pm_authz::audit::Outcome::Failed {
                    code: Code::AlreadyExists as i32
                }
            ),
        ]
    );
    let listed = h
        .api
        .list_patients(req(ListPatientsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(listed.patients.len(), 1);
    Ok(())
}

async fn named_patient(
    h: &Harness,
    id: &str,
    given: &str,
    family: &str,
    born: (i32, i32, i32),
) -> anyhow::Result<Patient> {
    Ok(h.api
        .create_patient(req(CreatePatientRequest {
            parent: "organizations/acme".into(),
            patient: Some(Patient {
                given_name: given.into(),
                family_name: family.into(),
                birth_date: Some(pm_api::types::Date {
                    year: born.0,
                    month: born.1,
                    day: born.2,
                }),
                ..Default::default()
            }),
            patient_id: id.into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner())
}

async fn search(
    h: &Harness,
    family: &str,
    given: &str,
    born: Option<(i32, i32, i32)>,
) -> Result<Vec<String>, tonic::Status> {
    let found = h
        .api
        .search_patients(req(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: family.into(),
            given_name: given.into(),
            birth_date: born.map(|(year, month, day)| pm_api::types::Date { year, month, day }),
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(found
        .patients
        .into_iter()
        .map(|p| p.name.rsplit('/').next().unwrap_or_default().to_string())
        .collect())
}

/// A soft-deleted unit, location, provider and patient come back with UndeleteX: live again, listed
/// without `show_deleted`, a new etag; a stale etag is ABORTED and a live resource is refused.
async fn undelete_restores_a_soft_deleted_resource(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    let unit = h.unit("organizations/acme", "north", "").await?;
    let deleted = h
        .api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: unit.name.clone(),
            etag: unit.etag.clone(),
        }))
        .await?
        .into_inner();
    assert!(deleted.delete_time.is_some());

    let stale = h
        .api
        .undelete_service_unit(req(UndeleteServiceUnitRequest {
            name: unit.name.clone(),
            etag: unit.etag.clone(),
        }))
        .await;
    expect_error(stale, Code::Aborted, "ETAG_MISMATCH");
    let still = h.units("organizations/acme").await?;
    assert!(
        still[0].delete_time.is_some(),
        "a stale undelete writes nothing"
    );

    let restored = h
        .api
        .undelete_service_unit(req(UndeleteServiceUnitRequest {
            name: unit.name.clone(),
            etag: deleted.etag.clone(),
        }))
        .await?
        .into_inner();
    assert!(restored.delete_time.is_none());
    assert_ne!(restored.etag, deleted.etag);
    assert_eq!(restored.display_name, unit.display_name);
    assert_eq!(restored.create_time, unit.create_time);
    let live = h
        .api
        .list_service_units(req(ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert_eq!(live.service_units.len(), 1);

    let again = h
        .api
        .undelete_service_unit(req(UndeleteServiceUnitRequest {
            name: unit.name.clone(),
            etag: String::new(),
        }))
        .await;
    expect_error(again, Code::FailedPrecondition, "RESOURCE_NOT_DELETED");
    let missing = h
        .api
        .undelete_service_unit(req(UndeleteServiceUnitRequest {
            name: "organizations/acme/units/nowhere".into(),
            etag: String::new(),
        }))
        .await;
    expect_error(missing, Code::NotFound, "RESOURCE_NOT_FOUND");

    // A location, a provider and a patient the same way.
    let location = h
        .api
        .create_location(req(CreateLocationRequest {
            parent: "organizations/acme".into(),
            location: Some(Location {
                display_name: "Main".into(),
                time_zone: "America/New_York".into(),
                ..Default::default()
            }),
            location_id: "main".into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    h.api
        .delete_location(req(DeleteLocationRequest {
            name: location.name.clone(),
            etag: String::new(),
        }))
        .await?;
    let location = h
        .api
        .undelete_location(req(UndeleteLocationRequest {
            name: location.name.clone(),
            etag: String::new(),
        }))
        .await?
        .into_inner();
    assert!(location.delete_time.is_none());

    let provider = h
        .provider("organizations/acme", "lee", "1987654328")
        .await?;
    h.api
        .delete_provider(req(DeleteProviderRequest {
            name: provider.name.clone(),
            etag: String::new(),
        }))
        .await?;
    let provider = h
        .api
        .undelete_provider(req(UndeleteProviderRequest {
            name: provider.name.clone(),
            etag: String::new(),
        }))
        .await?
        .into_inner();
    assert!(provider.delete_time.is_none());

    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    h.api
        .delete_patient(req(DeletePatientRequest {
            name: patient.name.clone(),
            etag: String::new(),
        }))
        .await?;
    assert!(search(h, "testpat", "", None).await?.is_empty());
    let patient = h
        .api
        .undelete_patient(req(UndeletePatientRequest {
            name: patient.name.clone(),
            etag: String::new(),
        }))
        .await?
        .into_inner();
    assert!(patient.delete_time.is_none());
    assert_eq!(search(h, "testpat", "", None).await?, vec!["p1"]);
    Ok(())
}

/// Creating with the id of a soft-deleted resource is ALREADY_EXISTS with reason RESOURCE_DELETED
/// and a message that says to undelete it (a live one keeps RESOURCE_ALREADY_EXISTS); nothing is
/// written.
async fn reusing_a_deleted_id_says_to_undelete_it(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    h.unit("organizations/acme", "north", "").await?;
    let live = h.unit("organizations/acme", "north", "").await;
    let status = expect_error(live, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");
    assert!(!status.message().contains("undelete"));

    h.api
        .delete_service_unit(req(DeleteServiceUnitRequest {
            name: "organizations/acme/units/north".into(),
            etag: String::new(),
        }))
        .await?;
    let reused = h.unit("organizations/acme", "north", "").await;
    let status = expect_error(reused, Code::AlreadyExists, "RESOURCE_DELETED");
    assert!(
        status.message().contains("was deleted; undelete it"),
        "{}",
        status.message()
    );
    let units = h.units("organizations/acme").await?;
    assert_eq!(units.len(), 1);
    assert!(units[0].delete_time.is_some(), "still the deleted unit");

    // A patient's: the message names the resource only, no PHI.
    h.patient("organizations/acme", "p1", "MRN-1").await?;
    h.api
        .delete_patient(req(DeletePatientRequest {
            name: "organizations/acme/patients/p1".into(),
            etag: String::new(),
        }))
        .await?;
    let reused = h.patient("organizations/acme", "p1", "MRN-2").await;
    let status = expect_error(reused, Code::AlreadyExists, "RESOURCE_DELETED");
    for phi in ["Canary", "Testpatient", "MRN-", "1970"] {
        assert!(!status.message().contains(phi), "{}", status.message());
    }
    Ok(())
}

/// Undelete runs the rules of a write: a unit under a deleted parent unit, a provider whose NPI and
/// a patient whose identifier another live one took meanwhile are refused, and stay deleted.
async fn undelete_keeps_the_rules_of_a_write(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    h.unit("organizations/acme", "top", "").await?;
    h.unit(
        "organizations/acme",
        "child",
        "organizations/acme/units/top",
    )
    .await?;
    for id in ["child", "top"] {
        h.api
            .delete_service_unit(req(DeleteServiceUnitRequest {
                name: format!("organizations/acme/units/{id}"),
                etag: String::new(),
            }))
            .await?;
    }
    let undelete_unit = |id: &str| {
        h.api.undelete_service_unit(req(UndeleteServiceUnitRequest {
            name: format!("organizations/acme/units/{id}"),
            etag: String::new(),
        }))
    };
    expect_error(
        undelete_unit("child").await,
        Code::FailedPrecondition,
        "PARENT_UNIT_DELETED",
    );
    assert!(
        h.units("organizations/acme")
            .await?
            .iter()
            .all(|u| u.delete_time.is_some())
    );
    undelete_unit("top").await?;
    undelete_unit("child").await?;

    h.provider("organizations/acme", "lee", "1987654328")
        .await?;
    h.api
        .delete_provider(req(DeleteProviderRequest {
            name: "organizations/acme/providers/lee".into(),
            etag: String::new(),
        }))
        .await?;
    h.provider("organizations/acme", "lee-again", "1987654328")
        .await?;
    let taken = h
        .api
        .undelete_provider(req(UndeleteProviderRequest {
            name: "organizations/acme/providers/lee".into(),
            etag: String::new(),
        }))
        .await;
    expect_error(taken, Code::AlreadyExists, "NPI_ALREADY_REGISTERED");

    h.patient("organizations/acme", "p1", "MRN-1").await?;
    h.api
        .delete_patient(req(DeletePatientRequest {
            name: "organizations/acme/patients/p1".into(),
            etag: String::new(),
        }))
        .await?;
    h.patient("organizations/acme", "p2", "MRN-1").await?;
    let taken = h
        .api
        .undelete_patient(req(UndeletePatientRequest {
            name: "organizations/acme/patients/p1".into(),
            etag: String::new(),
        }))
        .await;
    let status = expect_error(taken, Code::AlreadyExists, "PATIENT_IDENTIFIER_TAKEN");
    assert!(!status.message().contains("MRN-1"));
    let p1 = h
        .api
        .get_patient(req(GetPatientRequest {
            name: "organizations/acme/patients/p1".into(),
        }))
        .await?
        .into_inner();
    assert!(
        p1.delete_time.is_some(),
        "a refused undelete writes nothing"
    );
    Ok(())
}

/// "mul", "MÜL" and "Mul" find Müller (and Muller), not Mueller; a prefix of any word of a name
/// matches; the given name and the birth date narrow; a rename moves the patient's keys.
async fn patients_are_found_by_name_prefix_without_case_or_accents(
    h: &Harness,
) -> anyhow::Result<()> {
    h.org("acme").await?;
    named_patient(h, "anna", "Anna", "Müller", (1980, 5, 1)).await?;
    named_patient(h, "bernd", "Bernd", "Muller", (1975, 2, 3)).await?;
    named_patient(h, "carl", "Carl", "Mueller", (1980, 5, 1)).await?;
    named_patient(h, "dora", "Dolores María", "García López", (1990, 12, 24)).await?;
    named_patient(h, "ewa", "Ewa", "Nowak", (1980, 5, 1)).await?;

    for typed in ["mul", "MÜL", "Mül", "muller", "Müller"] {
        assert_eq!(
            search(h, typed, "", None).await?,
            vec!["anna", "bernd"],
            "{typed}"
        );
    }
    assert_eq!(
        search(h, "mu", "", None).await?,
        vec!["anna", "bernd", "carl"]
    );
    assert!(search(h, "mullerx", "", None).await?.is_empty());
    assert!(
        search(h, "ller", "", None).await?.is_empty(),
        "a prefix, not a substring"
    );
    assert_eq!(search(h, "lop", "", None).await?, vec!["dora"]);
    assert_eq!(search(h, "garcia l", "", None).await?, vec!["dora"]);
    assert_eq!(search(h, "", "maria", None).await?, vec!["dora"]);
    assert_eq!(search(h, "mu", "an", None).await?, vec!["anna"]);
    assert_eq!(
        search(h, "mu", "", Some((1980, 5, 1))).await?,
        vec!["anna", "carl"]
    );
    assert_eq!(search(h, "", "e", Some((1980, 5, 1))).await?, vec!["ewa"]);
    assert!(search(h, "mu", "", Some((1981, 5, 1))).await?.is_empty());

    // A rename: the old name no longer finds the patient, the new one does.
    let mut patch = named_patient(h, "fritz", "Fritz", "Schäfer", (1960, 1, 1)).await?;
    assert_eq!(search(h, "schaf", "", None).await?, vec!["fritz"]);
    patch.family_name = "Weiß".into();
    h.api
        .update_patient(req(UpdatePatientRequest {
            patient: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["family_name".into()],
            }),
        }))
        .await?;
    assert!(search(h, "schaf", "", None).await?.is_empty());
    assert_eq!(search(h, "weiss", "", None).await?, vec!["fritz"]);
    Ok(())
}

/// Pages walk every match once in name order, a page token is bound to its query, and bad input is
/// INVALID_ARGUMENT naming the field without repeating what was typed.
async fn patient_search_pages_and_refuses_bad_input_without_phi(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    for i in 0..5 {
        named_patient(h, &format!("p{i}"), "Ana", "Öztürk", (1980, 1, 1 + i)).await?;
    }
    named_patient(h, "other", "Ana", "Smith", (1980, 1, 1)).await?;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .api
            .search_patients(req(SearchPatientsRequest {
                parent: "organizations/acme".into(),
                family_name: "ozt".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        assert!(page.patients.len() <= 2);
        seen.extend(page.patients.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..5)
        .map(|i| format!("organizations/acme/patients/p{i}"))
        .collect();
    assert_eq!(seen, expected);

    let first = h
        .api
        .search_patients(req(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: "ozt".into(),
            page_size: 2,
            ..Default::default()
        }))
        .await?
        .into_inner();
    let moved = h
        .api
        .search_patients(req(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: "smi".into(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        }))
        .await;
    assert_eq!(moved.unwrap_err().code(), Code::InvalidArgument);

    let bad = |family: &str, given: &str, born: Option<pm_api::types::Date>| {
        h.api.search_patients(req(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: family.into(),
            given_name: given.into(),
            birth_date: born,
            ..Default::default()
        }))
    };
    let none = expect_error(
        bad("", "", None).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&none), vec!["family_name", "given_name"]);
    let punctuation = expect_error(
        bad("--'", "", None).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&punctuation), vec!["family_name"]);
    let long = format!("Zqxcanary{}", "a".repeat(80));
    let status = expect_error(
        bad("", &long, None).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["given_name"]);
    assert!(!format!("{status:?}").contains("Zqxcanary"));
    let status = expect_error(
        bad(
            "ozt",
            "",
            Some(pm_api::types::Date {
                year: 1980,
                month: 2,
                day: 30,
            }),
        )
        .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(violated_fields(&status), vec!["birth_date"]);
    assert!(!status.message().contains("1980"));
    Ok(())
}

/// A patient stored before SearchPatients existed (no name keys) is found once the backfill ran;
/// a second run has nothing to do.
async fn patients_stored_before_search_existed_are_indexed(h: &Harness) -> anyhow::Result<()> {
    h.org("acme").await?;
    named_patient(h, "anna", "Anna", "Müller", (1980, 5, 1)).await?;
    named_patient(h, "bernd", "Bernd", "Nowak", (1975, 2, 3)).await?;
    {
        let mut tx = h.db().write("organizations/acme").await?;
        sqlx::query("DELETE FROM resource_attrs WHERE attr IN ('family_key', 'given_key')")
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
    }
    assert!(search(h, "mul", "", None).await?.is_empty());
    assert_eq!(pm_org::store::patients::index_names(h.db()).await?, 2);
    assert_eq!(search(h, "mul", "", None).await?, vec!["anna"]);
    assert_eq!(search(h, "", "bern", None).await?, vec!["bernd"]);
    assert_eq!(pm_org::store::patients::index_names(h.db()).await?, 0);
    Ok(())
}

/// A credential, an enrollment and a coverage come back with Undelete unless a live one took their
/// place meanwhile (an overlapping credential or coverage, a new active enrollment in the unit):
/// then the rule of a new one refuses it and it stays deleted.
async fn undeleted_credentials_enrollments_and_coverages_keep_their_rules(
    h: &Harness,
) -> anyhow::Result<()> {
    let (_, program) = program_units(h).await?;
    let provider = h
        .provider("organizations/acme", "okafor", "1234567893")
        .await?;
    let c1 = create_credential(
        h,
        &provider.name,
        "c1",
        &program.name,
        CredentialState::Active,
        interval(1_000, None),
    )
    .await?;
    let delete_credential = |name: &str| {
        h.api.delete_credential(req(DeleteCredentialRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    let undelete_credential = |name: &str| {
        h.api.undelete_credential(req(UndeleteCredentialRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    delete_credential(&c1.name).await?;
    let back = undelete_credential(&c1.name).await?.into_inner();
    assert!(back.delete_time.is_none());
    delete_credential(&c1.name).await?;
    create_credential(
        h,
        &provider.name,
        "c2",
        &program.name,
        CredentialState::Active,
        interval(1_500, None),
    )
    .await?;
    expect_error(
        undelete_credential(&c1.name).await,
        Code::FailedPrecondition,
        "CREDENTIAL_PERIOD_OVERLAP",
    );

    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let e1 = enroll(h, &patient.name, "e1", &program.name, "intake").await?;
    let delete_enrollment = |name: &str| {
        h.api.delete_enrollment(req(DeleteEnrollmentRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    let undelete_enrollment = |name: &str| {
        h.api.undelete_enrollment(req(UndeleteEnrollmentRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    delete_enrollment(&e1.name).await?;
    assert!(
        undelete_enrollment(&e1.name)
            .await?
            .into_inner()
            .delete_time
            .is_none()
    );
    delete_enrollment(&e1.name).await?;
    enroll(h, &patient.name, "e2", &program.name, "intake").await?;
    expect_error(
        undelete_enrollment(&e1.name).await,
        Code::FailedPrecondition,
        "ALREADY_ENROLLED",
    );

    let coverage = |id: &str| CreateCoverageRequest {
        parent: patient.name.clone(),
        coverage: Some(Coverage {
            payer: "payers/medicare".into(),
            member_id: "1EG4-TE5-MK72".into(),
            plan: "Part B".into(),
            priority: 1,
            effective_period: interval(0, None),
            ..Default::default()
        }),
        coverage_id: id.into(),
        request_id: String::new(),
    };
    let primary = h
        .api
        .create_coverage(req(coverage("primary")))
        .await?
        .into_inner();
    let delete_coverage = |name: &str| {
        h.api.delete_coverage(req(DeleteCoverageRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    let undelete_coverage = |name: &str| {
        h.api.undelete_coverage(req(UndeleteCoverageRequest {
            name: name.into(),
            etag: String::new(),
        }))
    };
    delete_coverage(&primary.name).await?;
    undelete_coverage(&primary.name).await?;
    delete_coverage(&primary.name).await?;
    h.api.create_coverage(req(coverage("replacement"))).await?;
    expect_error(
        undelete_coverage(&primary.name).await,
        Code::FailedPrecondition,
        "COVERAGE_PRIORITY_OVERLAP",
    );
    let stored = h
        .api
        .get_coverage(req(GetCoverageRequest {
            name: primary.name.clone(),
        }))
        .await?
        .into_inner();
    assert!(
        stored.delete_time.is_some(),
        "a refused undelete writes nothing"
    );
    Ok(())
}

/// A referral as RecordIntake takes it: 2026-01-01 to 2026-07-01, for follow-ups only.
fn referral() -> IntakeRecord {
    IntakeRecord {
        requirement: IntakeRequirement::Referral as i32,
        effective_time: ts(1_767_225_600),
        expire_time: ts(1_782_864_000),
        referring_provider: "1234567893".into(),
        visit_types: vec!["FOLLOW_UP".into()],
        visit_count: 3,
        note: "faxed".into(),
        ..Default::default()
    }
}

fn record_intake(name: &str, record: Option<IntakeRecord>, etag: &str) -> RecordIntakeRequest {
    RecordIntakeRequest {
        name: name.into(),
        record,
        etag: etag.into(),
        request_id: String::new(),
    }
}

async fn intake_records_are_recorded_once_and_carried_to_eligibility(
    h: &Harness,
) -> anyhow::Result<()> {
    let (_, program) = program_units(h).await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    // Intake records are output only on the enrollment: sent on create, they are dropped.
    let enrollment = h
        .api
        .create_enrollment(req(CreateEnrollmentRequest {
            parent: patient.name.clone(),
            enrollment: Some(Enrollment {
                unit: program.name.clone(),
                pathway_step: "intake".into(),
                intake_records: vec![referral()],
                ..Default::default()
            }),
            enrollment_id: "e1".into(),
            request_id: String::new(),
        }))
        .await?
        .into_inner();
    assert!(enrollment.intake_records.is_empty());

    let call = RecordIntakeRequest {
        request_id: "5f0c3c1e-2b4a-4d8e-9f6a-1c2d3e4f5a6b".into(),
        ..record_intake(&enrollment.name, Some(referral()), &enrollment.etag)
    };
    let recorded = h.api.record_intake(req(call.clone())).await?.into_inner();
    assert_ne!(recorded.etag, enrollment.etag);
    assert_eq!(
        recorded.intake_records,
        vec![IntakeRecord {
            // Left empty, who recorded it is the caller.
            recorded_by: "spiffe://pm.local/service/test-suite".into(),
            id: "intake-1".into(),
            ..referral()
        }]
    );
    let replayed = h.api.record_intake(req(call)).await?.into_inner();
    assert_eq!(
        replayed, recorded,
        "a retried RecordIntake does its work once"
    );

    // A second record (consent, open-ended, named recorder) is appended after the first; the id
    // and revocation a client sends are the server's to set.
    let consent = IntakeRecord {
        requirement: IntakeRequirement::Consent as i32,
        recorded_by: "front desk".into(),
        effective_time: ts(1_767_225_600),
        ..Default::default()
    };
    let both = h
        .api
        .record_intake(req(record_intake(
            &enrollment.name,
            Some(IntakeRecord {
                id: "intake-1".into(),
                revoke_time: ts(1_767_225_600),
                revoke_reason: "forged".into(),
                ..consent.clone()
            }),
            "",
        )))
        .await?
        .into_inner();
    assert_eq!(both.intake_records.len(), 2);
    assert_eq!(
        both.intake_records[1],
        IntakeRecord {
            id: "intake-2".into(),
            ..consent
        }
    );

    // What Scheduling reads carries them.
    let eligibility = h
        .api
        .get_patient_eligibility(req(GetPatientEligibilityRequest {
            patient: patient.name.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(eligibility.enrollments.len(), 1);
    assert_eq!(
        eligibility.enrollments[0].intake_records,
        both.intake_records
    );

    // Each RecordIntake is a PHI write in the patient's trail (the replay is not a second write).
    let methods: Vec<String> = patient_accesses(h, &patient.name)
        .await?
        .into_iter()
        .map(|e| e.event.method)
        .filter(|m| m.ends_with("/RecordIntake"))
        .collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    Ok(())
}

async fn bad_intake_records_write_nothing(h: &Harness) -> anyhow::Result<()> {
    let (_, program) = program_units(h).await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let enrollment = enroll(h, &patient.name, "e1", &program.name, "intake").await?;
    let name = enrollment.name.clone();
    let with = |change: fn(&mut IntakeRecord)| {
        let mut record = referral();
        change(&mut record);
        Some(record)
    };
    let cases: Vec<(&str, Option<IntakeRecord>, &str, Vec<&str>)> = vec![
        ("no record", None, "FIELD_REQUIRED", vec!["record"]),
        (
            "no requirement",
            with(|r| r.requirement = IntakeRequirement::Unspecified as i32),
            "FIELD_REQUIRED",
            vec!["record.requirement"],
        ),
        (
            "an unknown requirement",
            with(|r| r.requirement = 99),
            "FIELD_REQUIRED",
            vec!["record.requirement"],
        ),
        (
            "no effective time",
            with(|r| r.effective_time = None),
            "FIELD_REQUIRED",
            vec!["record.effective_time"],
        ),
        (
            "expiring before it takes effect",
            with(|r| r.expire_time = ts(1_767_225_599)),
            "INTAKE_RECORD_INVALID",
            vec!["record.expire_time"],
        ),
        (
            "expiring as it takes effect",
            with(|r| r.expire_time = r.effective_time),
            "INTAKE_RECORD_INVALID",
            vec!["record.expire_time"],
        ),
        (
            "a referral without its referring provider",
            with(|r| r.referring_provider = " ".into()),
            "INTAKE_RECORD_INVALID",
            vec!["record.referring_provider"],
        ),
        (
            "a prior authorization without its number",
            with(|r| r.requirement = IntakeRequirement::PriorAuthorization as i32),
            "INTAKE_RECORD_INVALID",
            vec!["record.authorization_number"],
        ),
        (
            "a blank visit type",
            with(|r| r.visit_types = vec!["".into()]),
            "INTAKE_RECORD_INVALID",
            vec!["record.visit_types[0]"],
        ),
        (
            "a negative visit count",
            with(|r| r.visit_count = -1),
            "INTAKE_RECORD_INVALID",
            vec!["record.visit_count"],
        ),
        (
            "a note too long",
            with(|r| r.note = "x".repeat(2001)),
            "INTAKE_RECORD_INVALID",
            vec!["record.note"],
        ),
    ];
    for (case, record, reason, fields) in cases {
        let status = expect_error(
            h.api
                .record_intake(req(record_intake(&name, record, "")))
                .await,
            Code::InvalidArgument,
            reason,
        );
        assert_eq!(violated_fields(&status), fields, "{case}");
        assert!(
            !status.message().contains("1234567893"),
            "{case}: no value echoed"
        );
    }
    expect_error(
        h.api
            .record_intake(req(record_intake(&name, Some(referral()), "stale")))
            .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    expect_error(
        h.api
            .record_intake(req(record_intake(
                "organizations/acme/patients/p1/enrollments/ghost",
                Some(referral()),
                "",
            )))
            .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    expect_error(
        h.api
            .record_intake(req(record_intake(
                "organizations/acme/enrollments/e1",
                Some(referral()),
                "",
            )))
            .await,
        Code::InvalidArgument,
        "RESOURCE_NAME_INVALID",
    );
    let unchanged = h
        .api
        .get_enrollment(req(GetEnrollmentRequest { name: name.clone() }))
        .await?
        .into_inner();
    assert_eq!(
        unchanged, enrollment,
        "no refused RecordIntake wrote anything"
    );

    // A discharged enrollment takes no more records.
    let discharged = h
        .api
        .discharge_enrollment(req(DischargeEnrollmentRequest {
            name: name.clone(),
            reason: "goals met".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    expect_error(
        h.api
            .record_intake(req(record_intake(&name, Some(referral()), "")))
            .await,
        Code::FailedPrecondition,
        "ENROLLMENT_NOT_ACTIVE",
    );
    let after = h
        .api
        .get_enrollment(req(GetEnrollmentRequest { name }))
        .await?
        .into_inner();
    assert_eq!(after, discharged);
    Ok(())
}

async fn intake_records_are_revoked_once_and_bad_revocations_write_nothing(
    h: &Harness,
) -> anyhow::Result<()> {
    let (_, program) = program_units(h).await?;
    let patient = h.patient("organizations/acme", "p1", "MRN-1").await?;
    let enrollment = enroll(h, &patient.name, "e1", &program.name, "intake").await?;
    let name = enrollment.name.clone();
    let recorded = h
        .api
        .record_intake(req(record_intake(&name, Some(referral()), "")))
        .await?
        .into_inner();
    let revoke = |record_id: &str, reason: &str, etag: &str| RevokeIntakeRequest {
        name: name.clone(),
        record_id: record_id.into(),
        reason: reason.into(),
        etag: etag.into(),
        request_id: String::new(),
    };

    // Bad requests: refused, nothing written.
    for (case, request, code, why, fields) in [
        (
            "no record id",
            revoke("", "entered in error", ""),
            Code::InvalidArgument,
            "FIELD_REQUIRED",
            vec!["record_id"],
        ),
        (
            "no reason",
            revoke("intake-1", " ", ""),
            Code::InvalidArgument,
            "FIELD_REQUIRED",
            vec!["reason"],
        ),
        (
            "a reason too long",
            revoke("intake-1", &"x".repeat(201), ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            vec!["reason"],
        ),
        (
            "an id the enrollment does not have",
            revoke("intake-9", "entered in error", ""),
            Code::NotFound,
            "INTAKE_RECORD_NOT_FOUND",
            vec![],
        ),
        (
            "a stale etag",
            revoke("intake-1", "entered in error", &enrollment.etag),
            Code::Aborted,
            "ETAG_MISMATCH",
            vec![],
        ),
    ] {
        let status = expect_error(h.api.revoke_intake(req(request)).await, code, why);
        assert_eq!(violated_fields(&status), fields, "{case}");
    }
    let unchanged = h
        .api
        .get_enrollment(req(GetEnrollmentRequest { name: name.clone() }))
        .await?
        .into_inner();
    assert_eq!(
        unchanged, recorded,
        "no refused RevokeIntake wrote anything"
    );

    // Revoked: kept, with when and why; a second revocation is refused and writes nothing.
    let call = RevokeIntakeRequest {
        request_id: "0c6f1e1a-8b7d-4c5e-9a3f-2b1c0d9e8f7a".into(),
        ..revoke("intake-1", "entered in error", &recorded.etag)
    };
    let revoked = h.api.revoke_intake(req(call.clone())).await?.into_inner();
    assert_eq!(revoked.intake_records.len(), 1);
    let record = &revoked.intake_records[0];
    assert!(record.revoke_time.is_some());
    assert_eq!(record.revoke_reason, "entered in error");
    assert_eq!(
        IntakeRecord {
            revoke_time: None,
            revoke_reason: String::new(),
            ..record.clone()
        },
        recorded.intake_records[0],
        "the rest of the record is kept"
    );
    let replayed = h.api.revoke_intake(req(call)).await?.into_inner();
    assert_eq!(
        replayed, revoked,
        "a retried RevokeIntake does its work once"
    );
    expect_error(
        h.api
            .revoke_intake(req(revoke("intake-1", "twice", "")))
            .await,
        Code::FailedPrecondition,
        "INTAKE_RECORD_REVOKED",
    );
    let after = h
        .api
        .get_enrollment(req(GetEnrollmentRequest { name: name.clone() }))
        .await?
        .into_inner();
    assert_eq!(after, revoked);

    // Audited as a PHI write (the replay is not a second one).
    let revocations = patient_accesses(h, &patient.name)
        .await?
        .into_iter()
        .filter(|e| {
            e.event.method.ends_with("/RevokeIntake")
                && e.event.outcome == pm_authz::audit::Outcome::Success
        })
        .count();
    assert_eq!(revocations, 1);
    Ok(())
}
