//! PHI auditing as every service's handlers do it: the record of one call, staged in a write's own
//! transaction (both commit or neither does; the audit writer then seals it into the chain), or
//! group-committed for a read before its answer leaves (a read that cannot be audited fails).

use std::sync::Arc;

use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, names};
use sqlx::{AnyConnection, Connection as _};

use crate::audit::{self, AuditEvent, AuditWriter, Outcome};
use crate::layer::{self, Caller};

/// The audit record of one call by `caller` to `service`.
pub fn audit_event(
    service: &str,
    caller: &Caller,
    method: &str,
    outcome: Outcome,
    resources: Vec<String>,
    patients: Vec<String>,
) -> AuditEvent {
    let who = caller
        .principal
        .clone()
        .or_else(|| caller.peer.clone())
        .unwrap_or_else(|| "anonymous".into());
    // Access while holding a live break-glass grant in the organization is recorded with the HL7 v3
    // ActReason "BTG" (break the glass) as its purpose, whatever purpose the caller stated.
    let organization = resources
        .first()
        .map(|r| names::organization_of(r).to_string())
        .unwrap_or_default();
    let now = now_micros();
    let break_glass = caller.grants.iter().any(|g| {
        g.break_glass
            && g.organization == organization
            && g.expire_micros.is_none_or(|end| end > now)
    });
    let purpose = if break_glass {
        Some("BTG".to_string())
    } else {
        caller.purpose.clone()
    };
    AuditEvent {
        calling_service: caller.service.clone(),
        resources,
        patients: patients.into_iter().filter(|p| !p.is_empty()).collect(),
        source: caller.source.map(|a| a.to_string()),
        purpose,
        ..AuditEvent::new(service, method, who, outcome)
    }
}

/// Finds the patients an answer concerns.
type PatientsOf<T> = Box<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// What the audit record of a PHI call names: the resource it is about, whether it writes, and the
/// patients it concerns.
pub struct Audited<T> {
    resource: String,
    write: bool,
    patients: PatientsOf<T>,
    asked: Vec<String>,
}

impl<T> Audited<T> {
    /// A read of `resource`: its record names the patients `patients` finds in the answer.
    pub fn read(
        resource: impl Into<String>,
        patients: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            resource: resource.into(),
            write: false,
            patients: Box::new(patients),
            asked: Vec::new(),
        }
    }

    /// A write of `resource`: when it succeeds, the handler has recorded it in the write's own
    /// transaction ([`PhiAudit::record_write`]); a failure is recorded by [`PhiAudit::serve`].
    pub fn write(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            write: true,
            patients: Box::new(|_| Vec::new()),
            asked: Vec::new(),
        }
    }

    /// Patients the record of a failed or refused call names (those the call asked about).
    pub fn naming(mut self, asked: Vec<String>) -> Self {
        self.asked = asked;
        self
    }
}

/// A PHI call as its handler sees it (the same as any call's, [`layer::Call`]).
pub type PhiCall<'a> = layer::Call<'a>;

/// How a service audits its PHI calls.
#[derive(Clone)]
pub struct PhiAudit {
    service: &'static str,
    writer: Option<Arc<AuditWriter>>,
}

impl PhiAudit {
    /// Audits through `writer` (shared with the service's authorization layer).
    pub fn new(service: &'static str, writer: Arc<AuditWriter>) -> Self {
        Self {
            service,
            writer: Some(writer),
        }
    }

    /// No auditing at all: only for benchmarks that measure what auditing costs.
    pub fn disabled_for_benchmarks(service: &'static str) -> Self {
        Self {
            service,
            writer: None,
        }
    }

    /// Records a successful PHI write in the write's own transaction: stages its record (no lock on
    /// the chain), which commits with the write or not at all and is sealed into the chain by the
    /// audit writer shortly after (see [`audit::seal`]).
    pub async fn record_write(
        &self,
        conn: &mut AnyConnection,
        caller: &Caller,
        method: &str,
        resource: &str,
        patients: Vec<String>,
    ) -> ApiResult<()> {
        if !conn.is_in_transaction() {
            return Err(ApiError::internal(
                "recording a write",
                &"audit records of writes must be staged inside the write's transaction",
            ));
        }
        self.write_record(caller, method, resource, patients)?
            .execute(conn)
            .await
    }

    /// The statement that records a successful PHI write, for a write that sends its statements
    /// together ([`pm_runtime::batch`]): what [`PhiAudit::record_write`] writes.
    pub fn write_record(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        patients: Vec<String>,
    ) -> ApiResult<pm_runtime::batch::Insert> {
        let event = audit_event(
            self.service,
            caller,
            method,
            Outcome::Success,
            vec![resource.to_string()],
            patients,
        );
        // The writer's next batch seals it too.
        if let Some(writer) = &self.writer {
            writer.note_staged();
        }
        audit::staging_insert(&event)
    }

    /// Serves one PHI call: `handle` runs as the caller the authorization layer attached, with the
    /// method it matched; then the outcome is audited as [`PhiAudit::audited`] does, naming what
    /// `audited` says of the request.
    pub async fn serve<Req: pm_api::RpcRequest, T>(
        &self,
        request: tonic::Request<Req>,
        audited: impl FnOnce(&Req) -> Audited<T>,
        handle: impl AsyncFnOnce(PhiCall<'_>, Req) -> ApiResult<T>,
    ) -> ApiResult<T> {
        // The layer's rule; without the layer (a store suite calling the handler), the request's.
        let rule = layer::rule_of(&request).or_else(|err| Req::rule().ok_or(err));
        let caller = layer::require_caller(&request);
        let audit = audited(request.get_ref());
        let request = request.into_inner();
        let (rule, result) = match (rule, &caller) {
            (Ok(rule), Ok(who)) => {
                let call = layer::Call {
                    caller: who,
                    method: rule.method,
                    permission: rule.permission,
                };
                (rule, handle(call, request).await)
            }
            (Err(err), _) => return Err(err),
            (_, Err(err)) => return Err(err.clone()),
        };
        self.audited(
            caller,
            rule.method,
            audit.write,
            &audit.resource,
            result,
            audit.patients,
            audit.asked,
        )
        .await
    }

    /// Audits a PHI call once it has an outcome. Reads are recorded (group-committed) before their
    /// answer leaves: a read that cannot be audited fails. Successful writes were staged in their
    /// own transaction (see [`PhiAudit::record_write`]); failed and refused calls are recorded here,
    /// naming `error_patients`.
    #[allow(clippy::too_many_arguments)]
    pub async fn audited<T>(
        &self,
        caller: ApiResult<Caller>,
        method: &str,
        write: bool,
        resource: &str,
        result: ApiResult<T>,
        patients: impl Fn(&T) -> Vec<String>,
        error_patients: Vec<String>,
    ) -> ApiResult<T> {
        let Ok(caller) = caller else { return result };
        let (outcome, patients) = match &result {
            Ok(_) if write => return result,
            Ok(value) => (Outcome::Success, patients(value)),
            Err(err) => (Outcome::from_code(err.code), error_patients),
        };
        let Some(writer) = &self.writer else {
            return result;
        };
        let event = audit_event(
            self.service,
            &caller,
            method,
            outcome,
            vec![resource.to_string()],
            patients,
        );
        match writer.record(event).await {
            Ok(()) => result,
            Err(err) if result.is_ok() => {
                tracing::error!(method, "a read could not be audited: refusing it");
                Err(ApiError::unavailable("audit", &err.message))
            }
            Err(err) => {
                tracing::error!(method, error = %err.message, "a failed call could not be audited");
                result
            }
        }
    }
}
