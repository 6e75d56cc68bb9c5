//! The apply worker on both backends, against a scripted downstream: a downstream that is down
//! leaves messages `received` with their attempts and reason, then applies them once in order per
//! patient when it is back; a refusal for good moves the message to `dead`; an update of an unknown
//! patient is dead too. (The real Org is exercised end to end in `tests/ehr_gateway_e2e.rs` of the
//! workspace when the mesh runs the gateway.)
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_ehr_gateway::apply::{ApplyError, Downstream, RetryPolicy, Worker};
use pm_ehr_gateway::domain::{PatientFacts, Permission, Source, Sources};
use pm_ehr_gateway::intake::Intake;
use pm_ehr_gateway::store::{self, State};
use pm_testing::{Backend, TestSlice};
use tokio::sync::Notify;

#[derive(Default)]
struct Script {
    down: bool,
    refuse: bool,
    patients: Vec<(String, String, String)>,
    calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Script>>);

impl Fake {
    fn check(&self) -> Result<(), ApplyError> {
        let s = self.0.lock().unwrap();
        if s.down {
            return Err(ApplyError::Transient("ORG_UNAVAILABLE"));
        }
        if s.refuse {
            return Err(ApplyError::Refused("ORG_INVALID_ARGUMENT"));
        }
        Ok(())
    }
}

impl Downstream for Fake {
    async fn find(&self, facts: &PatientFacts) -> Result<Option<String>, ApplyError> {
        self.check()?;
        let s = self.0.lock().unwrap();
        Ok(s.patients
            .iter()
            .find(|(key, _, _)| *key == facts.key())
            .map(|(_, name, _)| name.clone()))
    }

    async fn create(&self, facts: &PatientFacts, _request_id: &str) -> Result<String, ApplyError> {
        self.check()?;
        let mut s = self.0.lock().unwrap();
        let name = format!("organizations/acme/patients/p{}", s.patients.len() + 1);
        s.patients
            .push((facts.key(), name.clone(), facts.family_name.clone()));
        s.calls.push(format!("create {}", facts.family_name));
        Ok(name)
    }

    async fn update(&self, facts: &PatientFacts, name: &str) -> Result<(), ApplyError> {
        self.check()?;
        let mut s = self.0.lock().unwrap();
        if let Some(p) = s.patients.iter_mut().find(|(_, n, _)| n == name) {
            p.2 = facts.family_name.clone();
        }
        s.calls.push(format!("update {}", facts.family_name));
        Ok(())
    }
}

struct Harness {
    slice: TestSlice,
    intake: Intake,
    worker: Worker<Fake>,
    fake: Fake,
}

impl Harness {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let slice = TestSlice::open(backend, pm_ehr_gateway::MIGRATIONS).await?;
        let sources = Sources::new(
            "ehr.sources",
            vec![Source {
                id: "north".into(),
                sending_application: String::new(),
                sending_facility: "NORTHHOSP".into(),
                organization: "organizations/acme".into(),
                identifier_systems: vec![("NORTHHOSP".into(), "urn:north:mrn".into())],
                any_authority: false,
                permissions: vec![Permission::RegisterPatients, Permission::UpdatePatients],
            }],
            None,
        )?;
        let fake = Fake::default();
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            poll: Duration::from_millis(10),
        };
        Ok(Self {
            intake: Intake::new(slice.db.clone(), sources.clone()),
            worker: Worker::new(
                slice.db.clone(),
                sources,
                fake.clone(),
                policy,
                Arc::new(Notify::new()),
            ),
            slice,
            fake,
        })
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.slice.finish().await
    }

    async fn send(&self, trigger: &str, control_id: &str, pid: &str) -> String {
        let raw = format!(
            "MSH|^~\\&|EPIC|NORTHHOSP|PMGW|PRACTICE|20260105083000||ADT^{trigger}|{control_id}|P|2.5.1\rPID|{pid}\r"
        );
        self.intake.handle(&raw).await
    }

    async fn state(&self, control_id: &str) -> anyhow::Result<store::LogRow> {
        store::find(&self.slice.db, "north", control_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("not logged"))
    }
}

async fn downstream_down_waits_then_applies_once_in_order(h: &Harness) -> anyhow::Result<()> {
    h.fake.0.lock().unwrap().down = true;
    h.send("A04", "M1", "1||5^^^NORTHHOSP||ROE^ANN||19900101|F")
        .await;
    h.send("A08", "M2", "1||5^^^NORTHHOSP||POE^ANN||19900101|F")
        .await;
    for _ in 0..3 {
        h.worker.pass().await?;
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
    let first = h.state("M1").await?;
    assert_eq!(first.state, State::Received);
    assert!(first.attempts >= 2, "{}", first.attempts);
    assert_eq!(first.last_error, "ORG_UNAVAILABLE");
    // The update waited behind the registration: never tried.
    assert_eq!(h.state("M2").await?.attempts, 0);
    h.fake.0.lock().unwrap().down = false;
    tokio::time::sleep(Duration::from_millis(6)).await;
    assert_eq!(h.worker.pass().await?, 2);
    assert_eq!(h.worker.pass().await?, 0);
    assert_eq!(h.state("M1").await?.state, State::Applied);
    assert_eq!(h.state("M2").await?.state, State::Applied);
    let s = h.fake.0.lock().unwrap();
    assert_eq!(s.calls, vec!["create ROE", "update POE"]);
    assert_eq!(s.patients.len(), 1);
    Ok(())
}

async fn refusal_for_good_is_dead_with_its_reason(h: &Harness) -> anyhow::Result<()> {
    h.fake.0.lock().unwrap().refuse = true;
    h.send("A04", "M3", "1||6^^^NORTHHOSP||ROE^ANN||19900101|F")
        .await;
    h.worker.pass().await?;
    let row = h.state("M3").await?;
    assert_eq!(row.state, State::Dead);
    assert_eq!(row.last_error, "ORG_INVALID_ARGUMENT");
    h.fake.0.lock().unwrap().refuse = false;
    // An update of a patient nobody registered is dead as well.
    h.send("A08", "M4", "1||7^^^NORTHHOSP||ROE^ANN||19900101|F")
        .await;
    h.worker.pass().await?;
    let row = h.state("M4").await?;
    assert_eq!(row.state, State::Dead);
    assert_eq!(row.last_error, "PATIENT_UNKNOWN");
    assert!(h.fake.0.lock().unwrap().calls.is_empty());
    Ok(())
}

async fn registration_finds_an_existing_patient_by_identifier(h: &Harness) -> anyhow::Result<()> {
    h.fake.0.lock().unwrap().patients.push((
        "urn:north:mrn|8".into(),
        "organizations/acme/patients/known".into(),
        "ROE".into(),
    ));
    h.send("A01", "M5", "1||8^^^NORTHHOSP||ROE^ANN||19900101|F")
        .await;
    assert_eq!(h.worker.pass().await?, 1);
    assert!(h.fake.0.lock().unwrap().calls.is_empty());
    let xref = store::xref(&h.slice.db, "north", "urn:north:mrn", "8").await?;
    assert_eq!(xref.as_deref(), Some("organizations/acme/patients/known"));
    Ok(())
}

pm_testing::on_both_backends!(super::Harness;
    downstream_down_waits_then_applies_once_in_order,
    refusal_for_good_is_dead_with_its_reason,
    registration_finds_an_existing_patient_by_identifier,
);
