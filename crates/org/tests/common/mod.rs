//! A harness that runs the Org service's handlers against a real database: a fresh SQLite file or a
//! fresh PostgreSQL schema per test.

#![allow(dead_code, clippy::unwrap_used)]

use pm_api::org::org_service_server::OrgService;
use pm_api::org::*;
use pm_runtime::config::Backend;
use pm_runtime::testing::TestSlice;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// A request as the authorization layer hands it over: these suites test the store and the rules,
/// so the caller is a service (no scope checks); the authorization matrix tests scopes.
pub fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(pm_authz::layer::Caller {
        service: Some("test-suite".into()),
        peer: Some("spiffe://pm.local/service/test-suite".into()),
        ..Default::default()
    });
    request
}

pub struct Harness {
    pub api: pm_org::handlers::OrgApi,
    slice: TestSlice,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Harness> {
        let slice = TestSlice::open(backend, pm_org::MIGRATIONS).await?;
        Ok(Harness {
            api: pm_org::handlers::OrgApi::new(slice.db.clone()),
            slice,
        })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.slice.finish().await
    }

    pub fn db(&self) -> &pm_runtime::Db {
        &self.slice.db
    }

    pub async fn org(&self, id: &str) -> anyhow::Result<Organization> {
        let org = Organization {
            display_name: format!("Org {id}"),
            time_zone: "America/New_York".into(),
            ..Default::default()
        };
        Ok(self
            .api
            .create_organization(req(CreateOrganizationRequest {
                organization: Some(org),
                organization_id: id.into(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }

    pub async fn unit(
        &self,
        org: &str,
        id: &str,
        parent_unit: &str,
    ) -> Result<ServiceUnit, Status> {
        self.unit_with(
            org,
            id,
            ServiceUnit {
                display_name: format!("Unit {id}"),
                kind: UnitKind::Clinic as i32,
                parent_unit: parent_unit.into(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn unit_with(
        &self,
        org: &str,
        id: &str,
        unit: ServiceUnit,
    ) -> Result<ServiceUnit, Status> {
        Ok(self
            .api
            .create_service_unit(req(CreateServiceUnitRequest {
                parent: org.into(),
                service_unit: Some(unit),
                service_unit_id: id.into(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }

    pub async fn units(&self, org: &str) -> anyhow::Result<Vec<ServiceUnit>> {
        Ok(self
            .api
            .list_service_units(req(ListServiceUnitsRequest {
                parent: org.into(),
                page_size: 1000,
                show_deleted: true,
                ..Default::default()
            }))
            .await?
            .into_inner()
            .service_units)
    }

    pub async fn provider(&self, org: &str, id: &str, npi: &str) -> Result<Provider, Status> {
        Ok(self
            .api
            .create_provider(req(CreateProviderRequest {
                parent: org.into(),
                provider: Some(Provider {
                    display_name: format!("Dr {id}"),
                    npi: npi.into(),
                    ..Default::default()
                }),
                provider_id: id.into(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }

    pub async fn patient(&self, org: &str, id: &str, mrn: &str) -> Result<Patient, Status> {
        Ok(self
            .api
            .create_patient(req(CreatePatientRequest {
                parent: org.into(),
                patient: Some(Patient {
                    given_name: "Canary".into(),
                    family_name: "Testpatient".into(),
                    birth_date: Some(pm_api::types::Date {
                        year: 1970,
                        month: 1,
                        day: 2,
                    }),
                    identifiers: vec![PatientIdentifier {
                        system: "urn:test:mrn".into(),
                        value: mrn.into(),
                    }],
                    ..Default::default()
                }),
                patient_id: id.into(),
                request_id: String::new(),
            }))
            .await?
            .into_inner())
    }
}

/// Asserts a status's code and ErrorInfo reason; returns the status for more checks.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("expected {code:?}/{reason}, got {value:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .expect("every error carries an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "org.pm.dev");
    status
}

/// The field paths of a status's BadRequest violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

pub fn interval(start: i64, end: Option<i64>) -> Option<pm_api::types::Interval> {
    Some(pm_api::types::Interval {
        start_time: ts(start),
        end_time: end.and_then(ts),
    })
}
