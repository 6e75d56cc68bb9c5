//! The internal `pm.audit.v1.AuditService` every PHI-holding service serves over its own trail, so
//! that Org can answer "who accessed patient X" across the mesh.

use pm_api::audit::audit_service_server::AuditService;
use pm_api::audit::{AccessRecord, ListPatientAccessesRequest, ListPatientAccessesResponse};
use pm_runtime::time::{now_micros, to_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db, names};
use tonic::{Request, Response, Status};

use crate::audit::{self, Outcome, StoredAuditEvent};
use crate::layer::require_caller;
use crate::phi::PhiAudit;

/// The ErrorInfo domain of the audit service's errors.
const DOMAIN: &str = "audit.pm.dev";
const METHOD: &str = "/pm.audit.v1.AuditService/ListPatientAccesses";

/// A service's trail, served.
pub struct AuditApi {
    db: Db,
    service: &'static str,
    phi: PhiAudit,
}

impl AuditApi {
    /// The trail of `service` in `db`; reading it is itself audited through `phi`.
    pub fn new(db: Db, service: &'static str, phi: PhiAudit) -> Self {
        Self { db, service, phi }
    }
}

/// The wire form of a stored record of `service`'s trail.
pub fn access_record(service: &str, stored: &StoredAuditEvent) -> AccessRecord {
    let event = &stored.event;
    let (outcome, status_code) = match event.outcome {
        Outcome::Success => ("success", 0),
        Outcome::Denied => ("denied", tonic::Code::PermissionDenied as i32),
        Outcome::Failed { code } => ("failed", code),
    };
    AccessRecord {
        service: service.to_string(),
        seq: stored.seq,
        time: Some(to_timestamp(event.time)),
        method: event.method.clone(),
        principal: event.principal.clone(),
        calling_service: event.calling_service.clone().unwrap_or_default(),
        resources: event.resources.clone(),
        source: event.source.clone().unwrap_or_default(),
        purpose: event.purpose.clone().unwrap_or_default(),
        outcome: outcome.into(),
        status_code,
        fhir_audit_event: audit::to_fhir_audit_event(stored).to_string(),
    }
}

/// One page of `service`'s records naming the patient, after `after_seq` (0: from the start).
pub async fn patient_page(
    db: &Db,
    service: &str,
    req: &ListPatientAccessesRequest,
) -> ApiResult<ListPatientAccessesResponse> {
    names::patterns::PATIENT.parse("patient", &req.patient)?;
    // Out-of-range ends would saturate to a window that silently matches nothing: refuse them.
    for (field, ts) in [("start_time", &req.start_time), ("end_time", &req.end_time)] {
        if ts
            .as_ref()
            .is_some_and(|ts| !pm_runtime::time::is_valid(ts))
        {
            return Err(ApiError::invalid(
                field,
                "a normalized instant in years 1 to 9999",
            ));
        }
    }
    let from = req.start_time.as_ref().map_or(0, to_micros);
    let to = req.end_time.as_ref().map_or_else(now_micros, to_micros);
    let page_size = usize::try_from(req.page_size).unwrap_or(0);
    let after = (req.after_seq > 0).then_some(req.after_seq);
    let (records, next) =
        audit::accesses_to_patient(db, &req.patient, from, to, page_size, after).await?;
    Ok(ListPatientAccessesResponse {
        records: records.iter().map(|r| access_record(service, r)).collect(),
        next_after_seq: next.unwrap_or(0),
    })
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_patient_accesses(
        &self,
        request: Request<ListPatientAccessesRequest>,
    ) -> Result<Response<ListPatientAccessesResponse>, Status> {
        let who = require_caller(&request);
        let req = request.into_inner();
        // People ask Org, which checks their organization; a trail serves only services (Org).
        let result = match &who {
            Ok(caller) if caller.is_service() => patient_page(&self.db, self.service, &req).await,
            Ok(_) => Err(pm_runtime::ApiError::new(
                tonic::Code::PermissionDenied,
                "PERMISSION_DENIED",
                "a service's audit trail is read through Org's ListPatientAccesses",
            )),
            Err(err) => Err(err.clone()),
        };
        let patient = req.patient.clone();
        let answer = self
            .phi
            .audited(
                who,
                METHOD,
                false,
                &req.patient,
                result,
                |_| vec![patient.clone()],
                vec![req.patient.clone()],
            )
            .await;
        pm_runtime::grpc::reply(answer, DOMAIN)
    }
}
