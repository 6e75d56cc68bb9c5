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

pm_runtime::on_both_backends!(
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
