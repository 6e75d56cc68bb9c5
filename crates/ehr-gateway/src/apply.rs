//! Applying accepted messages to Org, asynchronously after their ACK: a worker takes the log's
//! `received` messages oldest first; a transient failure (Org down, timeouts) schedules another
//! attempt with exponential backoff capped at `RetryPolicy::max_delay` and holds back that
//! patient's later messages (in order per patient); a refusal for good (INVALID_ARGUMENT and the
//! like) moves the message to `dead` with a PHI-free reason. Registrations carry a request id
//! derived from the log row, so a create retried after a lost reply is done once.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pm_api::org::ListPatientsRequest;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_hl7::Message;
use pm_runtime::Db;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::domain::{self, Action, PatientFacts, Sources};
use crate::store;

/// Why an apply did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// Try again later (the stable reason is kept as the row's last error).
    Transient(&'static str),
    /// Refused for good.
    Refused(&'static str),
}

/// Where patients are written (Org, through its generated client; a fake in tests).
pub trait Downstream: Send + Sync + 'static {
    /// The patient with this identifier, if any.
    fn find(
        &self,
        facts: &PatientFacts,
    ) -> impl Future<Output = Result<Option<String>, ApplyError>> + Send;
    /// Creates the patient; returns its name.
    fn create(
        &self,
        facts: &PatientFacts,
        request_id: &str,
    ) -> impl Future<Output = Result<String, ApplyError>> + Send;
    /// Updates the demographics of patient `name`.
    fn update(
        &self,
        facts: &PatientFacts,
        name: &str,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Org over mTLS with the gateway's own certificate (its service identity).
#[derive(Clone)]
pub struct Org {
    client: OrgServiceClient<Channel>,
}

impl Org {
    /// Org at the other end of `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: OrgServiceClient::new(channel),
        }
    }
}

fn classify(status: &tonic::Status) -> ApplyError {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument => ApplyError::Refused("ORG_INVALID_ARGUMENT"),
        Code::NotFound => ApplyError::Refused("ORG_NOT_FOUND"),
        Code::AlreadyExists => ApplyError::Refused("ORG_ALREADY_EXISTS"),
        Code::FailedPrecondition => ApplyError::Refused("ORG_FAILED_PRECONDITION"),
        Code::OutOfRange => ApplyError::Refused("ORG_OUT_OF_RANGE"),
        Code::PermissionDenied => ApplyError::Transient("ORG_PERMISSION_DENIED"),
        Code::Unauthenticated => ApplyError::Transient("ORG_UNAUTHENTICATED"),
        Code::Unavailable => ApplyError::Transient("ORG_UNAVAILABLE"),
        Code::DeadlineExceeded => ApplyError::Transient("ORG_DEADLINE_EXCEEDED"),
        _ => ApplyError::Transient("ORG_ERROR"),
    }
}

impl Downstream for Org {
    async fn find(&self, facts: &PatientFacts) -> Result<Option<String>, ApplyError> {
        let response = self
            .client
            .clone()
            .list_patients(ListPatientsRequest {
                parent: facts.organization.clone(),
                page_size: 2,
                filter: facts.identifier_filter(),
                ..ListPatientsRequest::default()
            })
            .await
            .map_err(|s| classify(&s))?;
        Ok(response
            .into_inner()
            .patients
            .into_iter()
            .next()
            .map(|p| p.name))
    }

    async fn create(&self, facts: &PatientFacts, request_id: &str) -> Result<String, ApplyError> {
        let patient = self
            .client
            .clone()
            .create_patient(facts.create_request(request_id))
            .await
            .map_err(|s| classify(&s))?;
        Ok(patient.into_inner().name)
    }

    async fn update(&self, facts: &PatientFacts, name: &str) -> Result<(), ApplyError> {
        self.client
            .clone()
            .update_patient(facts.update_request(name))
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }
}

/// How failed applies are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's delay; doubled at each attempt.
    pub base_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
    /// How often the log is polled when nothing wakes the worker.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            poll: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`.
    pub fn delay(&self, attempts: i64) -> Duration {
        let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        self.base_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay)
    }
}

/// The apply worker.
pub struct Worker<D> {
    db: Db,
    sources: Sources,
    downstream: D,
    policy: RetryPolicy,
    wake: Arc<Notify>,
}

impl<D: Downstream> Worker<D> {
    /// A worker applying `db`'s log through `downstream`; `wake` is notified on new messages.
    pub fn new(
        db: Db,
        sources: Sources,
        downstream: D,
        policy: RetryPolicy,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            sources,
            downstream,
            policy,
            wake,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "ehr apply pass failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.policy.poll) => {}
            }
        }
    }

    /// One pass over the waiting messages; returns how many were applied.
    pub async fn pass(&self) -> pm_runtime::ApiResult<usize> {
        let now = pm_runtime::time::now_micros();
        let mut held = HashSet::new();
        let mut applied = 0;
        for row in store::pending(&self.db, 200).await? {
            let facts = match self.map(&row) {
                Ok(mapped) => mapped,
                Err(reason) => {
                    tracing::info!(id = row.id, reason, "ehr message dead");
                    store::dead(&self.db, row.id, reason).await?;
                    continue;
                }
            };
            let (action, facts) = facts;
            let key = facts.key();
            if held.contains(&key) {
                continue;
            }
            if row.next_attempt_us > now {
                held.insert(key);
                continue;
            }
            match self.apply(&row, action, &facts).await {
                Ok(patient) => {
                    store::applied(
                        &self.db,
                        row.id,
                        &row.source,
                        &facts.identifier_system,
                        &facts.identifier_value,
                        &patient,
                    )
                    .await?;
                    tracing::info!(id = row.id, "ehr message applied");
                    applied += 1;
                }
                Err(ApplyError::Transient(reason)) => {
                    let delay = self.policy.delay(row.attempts);
                    let next = now + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2);
                    tracing::info!(
                        id = row.id,
                        reason,
                        attempts = row.attempts + 1,
                        "ehr apply retry"
                    );
                    store::retry_later(&self.db, row.id, next, reason).await?;
                    held.insert(key);
                }
                Err(ApplyError::Refused(reason)) => {
                    tracing::info!(id = row.id, reason, "ehr message dead");
                    store::dead(&self.db, row.id, reason).await?;
                }
            }
        }
        Ok(applied)
    }

    fn map(&self, row: &store::Pending) -> Result<(Action, PatientFacts), &'static str> {
        let source = self
            .sources
            .by_id(&row.source)
            .ok_or("SOURCE_NOT_CONFIGURED")?;
        let message = Message::parse(&row.raw).map_err(|_| "UNPARSEABLE")?;
        let mapped = domain::map_adt(&message, source).map_err(|r| r.reason)?;
        Ok((mapped.action, mapped.patient))
    }

    async fn apply(
        &self,
        row: &store::Pending,
        action: Action,
        facts: &PatientFacts,
    ) -> Result<String, ApplyError> {
        let known = store::xref(
            &self.db,
            &row.source,
            &facts.identifier_system,
            &facts.identifier_value,
        )
        .await
        .map_err(|_| ApplyError::Transient("LOG_UNAVAILABLE"))?;
        let existing = match known {
            Some(name) => Some(name),
            None => self.downstream.find(facts).await?,
        };
        match (action, existing) {
            (Action::Register, Some(name)) => Ok(name),
            (Action::Register, None) => {
                let request_id = uuid::Uuid::new_v5(
                    &REQUEST_IDS,
                    format!("{}/{}", row.source, row.id).as_bytes(),
                );
                self.downstream.create(facts, &request_id.to_string()).await
            }
            (Action::Update, None) => Err(ApplyError::Refused("PATIENT_UNKNOWN")),
            (Action::Update, Some(name)) => {
                self.downstream.update(facts, &name).await?;
                Ok(name)
            }
        }
    }
}

/// The namespace of the request ids of registrations (UUID v5 of `source/row id`).
const REQUEST_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x5e0c_7a1d_4c8b_4f0e_9a57_e4d2_6a0b_1c14);
