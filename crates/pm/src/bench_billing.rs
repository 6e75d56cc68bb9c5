//! Billing's rows of `pm-bench` (PostgreSQL; `PM_BENCH_ONLY=billing` runs them alone): revenue
//! reports and AR aging over `PM_BENCH_BILLING_LINES` charge lines (default 1,000,000) with their
//! ledger, each against the bare SQL of the same rows in the same run, and the 837P writer.
//!
//! - Drill-down level (unit × payer × month), computed from the ledger by `reports::summarize_from_ledger`
//!   against the bare `GROUP BY` of the same join: target ≤ 1.5×.
//! - Summary levels answered from the roll-up (`reports::summarize`) against the bare scan of the
//!   ledger: target ≥ 10× faster, identical totals.
//! - AR aging (`reports::aging`, by date of service) against the bare grouping it reads: ≤ 1.5×.
//! - 837P: claims written per second by the writer (10,000 claims in batches of 5,000 per ST).
//! - Charge posting under booking load ([`posting_lag`]): a whole mesh on PostgreSQL books and
//!   completes visits from 8 callers at full speed; the lag from each completion to its charges in
//!   Billing, p50 and p99 (`PM_BENCH_POSTING_VISITS`, default 300).
//!
//! Each timing is the median of five runs after one warm-up. The lines are generated in SQL
//! (`generate_series`) straight into a fresh schema, which the run drops at the end.

use std::time::{Duration, Instant};

use pm_billing::domain::money::Cents;
use pm_billing::domain::x12;
use pm_billing::reports::{self, AgingBasis, Dimension, Summary};
use pm_runtime::Db;

const ORG: &str = "organizations/bench";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

async fn time<F, Fut, T>(mut run: F) -> anyhow::Result<(Duration, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    run().await?;
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let start = Instant::now();
        last = Some(run().await?);
        samples.push(start.elapsed());
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok((median(samples), last))
}

/// Loads `lines` charges over 40 units, 6 payers, 20 codes, 12 months and 50 providers, each with its
/// charge entry, a payment on two of three and an adjustment on one of five; then the roll-up.
async fn load(db: &Db, lines: i64) -> anyhow::Result<()> {
    let mut conn = db.read().await?;
    let statements = [
        format!(
            "INSERT INTO charges (organization, name, source, encounter, line_number, patient, unit, \
             provider, payer, billing_entity, contract, code, modifiers, units, diagnoses, service_date, \
             place_of_service, unit_price_cents, amount_cents, fee_schedule_version, state, hold_reason, \
             related_charge, profile, create_us, update_us) \
             SELECT '{ORG}', '{ORG}/charges/c' || i, 'manual', NULL, NULL, \
             '{ORG}/patients/p' || (i % 20000), '{ORG}/units/u' || (i % 40), '{ORG}/providers/d' || (i % 50), \
             '{ORG}/payers/p' || (i % 6), '{ORG}/billingEntities/e' || (i % 3), '', \
             (99201 + i % 20)::text, '', 1, 'E11.9', \
             to_char(DATE '2026-01-01' + ((i % 365)::int), 'YYYY-MM-DD'), '11', \
             5000 + (i % 97) * 100, 5000 + (i % 97) * 100, '', 'open', '', '', '{{}}', i, i \
             FROM generate_series(1, {lines}) AS i"
        ),
        "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
         SELECT organization, name, 'charge', amount_cents, 'bench', create_us FROM charges"
            .to_string(),
        "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
         SELECT organization, name, 'payment', -(amount_cents * 3 / 5), 'bench', create_us FROM charges \
         WHERE create_us % 3 <> 0"
            .to_string(),
        "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
         SELECT organization, name, 'adjustment', -(amount_cents / 10), 'bench', create_us FROM charges \
         WHERE create_us % 5 = 0"
            .to_string(),
        "INSERT INTO revenue_rollup (organization, unit, payer, billing_entity, provider, code, month, \
         charged_cents, reversed_cents, paid_cents, adjusted_cents) \
         SELECT c.organization, c.unit, c.payer, c.billing_entity, c.provider, c.code, \
         substr(c.service_date, 1, 7), \
         SUM(CASE WHEN l.kind = 'charge' THEN l.amount_cents ELSE 0 END), \
         SUM(CASE WHEN l.kind = 'reversal' THEN l.amount_cents ELSE 0 END), \
         SUM(CASE WHEN l.kind = 'payment' THEN l.amount_cents ELSE 0 END), \
         SUM(CASE WHEN l.kind IN ('adjustment', 'write_off') THEN l.amount_cents ELSE 0 END) \
         FROM ledger_entries l JOIN charges c ON c.name = l.charge \
         GROUP BY c.organization, c.unit, c.payer, c.billing_entity, c.provider, c.code, \
         substr(c.service_date, 1, 7)"
            .to_string(),
        "ANALYZE".to_string(),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The bare SQL of a drill-down level: the same join and grouping, no decoding into cells.
async fn bare(db: &Db, sql: &str) -> anyhow::Result<usize> {
    let mut conn = db.read().await?;
    Ok(sqlx::query(sql).fetch_all(&mut *conn).await?.len())
}

fn row(label: &str, ours: Duration, bare: Duration, note: &str) {
    let ratio = ours.as_secs_f64() / bare.as_secs_f64().max(1e-9);
    println!(
        "{label:<44} {:>9.1} ms  bare {:>9.1} ms  ratio {ratio:>6.2}x  {note}",
        ours.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3
    );
}

/// The rows, on a fresh schema of PostgreSQL at `url`.
pub async fn run(url: &str) -> anyhow::Result<()> {
    let lines: i64 = std::env::var("PM_BENCH_BILLING_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let schema = format!(
        "pmbench_billing_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let db = Db::open_postgres_bounded(
        url,
        &schema,
        4,
        Duration::from_secs(300),
        pm_billing::MIGRATIONS,
    )
    .await?;
    let outcome = rows(&db, lines).await;
    db.close().await;
    Db::drop_postgres_schema(url, &schema).await?;
    outcome
}

async fn rows(db: &Db, lines: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    load(db, lines).await?;
    println!(
        "billing: {lines} charge lines with their ledger loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Drill-down level from the ledger against its bare GROUP BY.
    let drill = [Dimension::Unit, Dimension::Payer, Dimension::Month];
    let summary = Summary {
        organization: ORG,
        group_by: &drill,
        ..Default::default()
    };
    let (ours, cells) = time(|| async {
        let mut conn = db.read().await?;
        Ok(reports::summarize_from_ledger(&mut conn, &summary).await?)
    })
    .await?;
    let bare_sql = format!(
        "SELECT c.unit, c.payer, substr(c.service_date, 1, 7), \
         CAST(SUM(CASE WHEN l.kind = 'charge' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind = 'reversal' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind = 'payment' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind IN ('adjustment', 'write_off') THEN l.amount_cents ELSE 0 END) AS BIGINT) \
         FROM ledger_entries l JOIN charges c ON c.name = l.charge WHERE c.organization = '{ORG}' \
         GROUP BY c.unit, c.payer, substr(c.service_date, 1, 7)"
    );
    let (bare_time, bare_rows) = time(|| bare(db, &bare_sql)).await?;
    anyhow::ensure!(
        bare_rows == cells.len(),
        "the bare query found {bare_rows} cells, ours {}",
        cells.len()
    );
    row(
        "revenue drill-down unit×payer×month (ledger)",
        ours,
        bare_time,
        "target ≤ 1.5x",
    );
    // Summary levels from the roll-up against the bare scan of the ledger, with identical totals.
    for (label, group_by) in [
        ("summary by unit (roll-up)", &[Dimension::Unit][..]),
        ("summary unit×payer×month (roll-up)", &drill[..]),
        ("summary by month (roll-up)", &[Dimension::Month][..]),
    ] {
        let summary = Summary {
            organization: ORG,
            group_by,
            ..Default::default()
        };
        let (rolled_time, rolled) = time(|| async {
            let mut conn = db.read().await?;
            Ok(reports::summarize(&mut conn, &summary).await?)
        })
        .await?;
        let (scan_time, scanned) = time(|| async {
            let mut conn = db.read().await?;
            Ok(reports::summarize_from_ledger(&mut conn, &summary).await?)
        })
        .await?;
        anyhow::ensure!(
            rolled == scanned,
            "{label}: the roll-up differs from the ledger"
        );
        let speedup = scan_time.as_secs_f64() / rolled_time.as_secs_f64().max(1e-9);
        println!(
            "{label:<44} {:>9.1} ms  scan {:>9.1} ms  {speedup:>6.1}x faster  identical totals; target ≥ 10x",
            rolled_time.as_secs_f64() * 1e3,
            scan_time.as_secs_f64() * 1e3
        );
    }
    // AR aging against the bare grouping it reads.
    let as_of = chrono::NaiveDate::from_ymd_opt(2027, 1, 15).unwrap_or_default();
    let (ours, aged) = time(|| async {
        let mut conn = db.read().await?;
        Ok(reports::aging(&mut conn, ORG, AgingBasis::ServiceDate, as_of, None).await?)
    })
    .await?;
    let bare_aging = format!(
        "SELECT c.billing_entity, c.payer, c.service_date, CAST(SUM(l.amount_cents) AS BIGINT) \
         FROM ledger_entries l JOIN charges c ON c.name = l.charge WHERE c.organization = '{ORG}' \
         GROUP BY c.billing_entity, c.payer, c.service_date"
    );
    let (bare_time, _) = time(|| bare(db, &bare_aging)).await?;
    row(
        &format!("AR aging by entity×payer ({} rows)", aged.len()),
        ours,
        bare_time,
        "target ≤ 1.5x",
    );
    export_837();
    Ok(())
}

/// The 837P writer over 10,000 claims of two lines each.
fn export_837() {
    let claims = 10_000;
    let batch = bench_batch(claims);
    let started = Instant::now();
    let written = x12::write_837p(&batch);
    let elapsed = started.elapsed();
    match written {
        Ok(file) => println!(
            "837P writer: {claims} claims in {:.1} ms ({:.0} claims/s, {} KiB)",
            elapsed.as_secs_f64() * 1e3,
            claims as f64 / elapsed.as_secs_f64().max(1e-9),
            file.len() / 1024
        ),
        Err(e) => println!("837P writer refused the bench batch: {e}"),
    }
}

fn bench_batch(claims: usize) -> x12::Batch {
    let address = |zip: &str| x12::Address {
        line1: "100 MAIN STREET".into(),
        line2: None,
        city: "BOSTON".into(),
        state: "MA".into(),
        zip: zip.into(),
    };
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default();
    let line = |code: &str, cents: i64, pointers: Vec<u8>| x12::ServiceLine {
        code: code.into(),
        modifiers: Vec::new(),
        charge: Cents::new(cents),
        units: 1,
        diagnosis_pointers: pointers,
        service_date: day,
        prior: None,
    };
    x12::Batch {
        envelope: x12::Envelope {
            sender_id: "ACMEMED".into(),
            receiver_id: "CLEARINGHOUSE".into(),
            gs_sender: "ACMEMED".into(),
            gs_receiver: "CLEARINGHOUSE".into(),
            usage: x12::Usage::Test,
            interchange_control: 1,
            group_control: 1,
            created: day.and_hms_opt(12, 0, 0).unwrap_or_default(),
        },
        submitter: x12::Submitter {
            name: "ACME MEDICAL GROUP".into(),
            id: "ACMEMED".into(),
            contact_name: "JORDAN".into(),
            phone: "6175550100".into(),
        },
        receiver: x12::Receiver {
            name: "CLEARINGHOUSE".into(),
            id: "CLEARINGHOUSE".into(),
        },
        billing_provider: x12::BillingProvider {
            organization_name: "ACME MEDICAL GROUP".into(),
            npi: "1234567893".into(),
            ein: "123456789".into(),
            taxonomy: "261QP2300X".into(),
            address: address("021101234"),
            pay_to: None,
        },
        claims: (0..claims)
            .map(|i| x12::Claim {
                claim_id: format!("BENCH{i:08}"),
                total: Cents::new(5800 + 6049),
                place_of_service: "11".into(),
                frequency: x12::Frequency::Original,
                diagnoses: vec!["E119".into(), "I10".into()],
                subscriber: x12::Subscriber {
                    member_id: format!("M{i:09}"),
                    last_name: "FICTIVEZ".into(),
                    first_name: "ROSA".into(),
                    birth_date: chrono::NaiveDate::from_ymd_opt(1972, 5, 21).unwrap_or_default(),
                    sex: x12::Sex::Female,
                    address: address("02110"),
                    group_number: None,
                    claim_filing_indicator: "MB".into(),
                },
                payer: x12::Payer {
                    name: "MEDICARE".into(),
                    payer_id: "MEDICARE".into(),
                    address: None,
                },
                rendering_provider: None,
                lines: vec![
                    line("G0506", 5800, vec![1, 2]),
                    line("99490", 6049, vec![2]),
                ],
                other_payer: None,
            })
            .collect(),
    }
}

/// Visits the posting-lag row books and completes (`PM_BENCH_POSTING_VISITS`, default 300).
const POSTING_VISITS: usize = 300;
/// Callers booking and completing at once in the posting-lag row.
const POSTING_WORKERS: usize = 8;

/// Charge posting keeps up with booking: on a whole mesh on PostgreSQL with the demo seeded,
/// `POSTING_WORKERS` callers book and complete Rosa's CCM enrollment visits (two service lines
/// each) as fast as the mesh takes them; each encounter's lag is from the completion's answer to
/// the commit of its charges in Billing (the charge's `create_time`; one clock, one machine).
pub async fn posting_lag(root: &std::path::Path, postgres_url: &str) -> anyhow::Result<()> {
    let visits: usize = std::env::var("PM_BENCH_POSTING_VISITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POSTING_VISITS);
    let target = super::Target::postgres(root.join("posting"), postgres_url);
    let mesh = pm::mesh::start(
        &target.config,
        &pm::mesh::Service::ALL,
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    let outcome = posting_rows(&target.config, &mesh, visits).await;
    let stopped = mesh.stop(super::STOP_GRACE).await;
    let cleanup = target.cleanup().await;
    outcome.and(stopped).and(cleanup)
}

type Authed = pm_runtime::client::AuthedChannel;

/// A channel to `service` as the demo's administrator.
async fn as_admin(
    config: &pm_runtime::config::Config,
    mesh: &pm::mesh::Mesh,
    service: pm::mesh::Service,
    token: &str,
) -> anyhow::Result<Authed> {
    use anyhow::Context as _;
    let url = mesh
        .url(service)
        .with_context(|| format!("the mesh did not start {}", service.name()))?;
    let channel = pm_runtime::client::channel(config, pm_runtime::tls::CLIENT, &url).await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        pm_runtime::client::Bearer::new(token)?,
    ))
}

async fn posting_rows(
    config: &pm_runtime::config::Config,
    mesh: &pm::mesh::Mesh,
    visits: usize,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use pm::mesh::Service;
    use pm_api::billing::billing_service_client::BillingServiceClient;
    use pm_api::org::org_service_client::OrgServiceClient;
    use pm_api::rbac::rbac_service_client::RbacServiceClient;
    use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;

    let rbac_url = mesh.url(Service::Rbac).context("no RBAC")?;
    let mut rbac = RbacServiceClient::new(
        pm_runtime::client::channel(config, pm_runtime::tls::CLIENT, &rbac_url).await?,
    );
    pm::demo::seed_access(&mut rbac, &mut pm::demo::SeedReport::default()).await?;
    let token = rbac
        .issue_token(pm_api::rbac::IssueTokenRequest {
            principal: pm::demo::ADMIN.into(),
            ttl: None,
        })
        .await?
        .into_inner()
        .token;
    let mut org = OrgServiceClient::new(as_admin(config, mesh, Service::Org, &token).await?);
    let billing_channel = as_admin(config, mesh, Service::Billing, &token).await?;
    let mut billing = BillingServiceClient::new(billing_channel.clone());
    let scheduling_channel = as_admin(config, mesh, Service::Scheduling, &token).await?;
    pm::demo::seed(&mut org, &mut billing).await?;
    pm::demo::seed_scheduling(&mut SchedulingServiceClient::new(
        scheduling_channel.clone(),
    ))
    .await?;
    let slots = free_slots(&scheduling_channel, visits).await?;
    anyhow::ensure!(
        slots.len() >= visits,
        "found {} free slots for {visits} visits",
        slots.len()
    );
    let before = charge_names(&billing_channel).await?.len();
    let started = Instant::now();
    let completed = book_and_complete(&scheduling_channel, slots).await?;
    let elapsed = started.elapsed();
    let lags = lags_of(&billing_channel, &completed, before).await?;
    let rate = completed.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let percentile = |p: f64| -> Duration {
        let at = ((lags.len() as f64 - 1.0) * p).round() as usize;
        lags.get(at).copied().unwrap_or_default()
    };
    println!(
        "{:<44} {rate:>9.1} visits/s booked and completed ({} visits, {POSTING_WORKERS} callers); \
         EncounterCompleted -> charges lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        "charge posting under booking load",
        completed.len(),
        percentile(0.5).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

/// The next free slots of Rosa's CCM enrollment visit, week by week from next Monday.
async fn free_slots(
    channel: &Authed,
    wanted: usize,
) -> anyhow::Result<Vec<pm_api::scheduling::Slot>> {
    use pm_api::scheduling::FindSlotsRequest;
    use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
    use pm_api::types::Interval;
    let mut client = SchedulingServiceClient::new(channel.clone());
    let mut slots = Vec::new();
    let mut from = chrono::Utc::now() + chrono::TimeDelta::days(1);
    while slots.len() < wanted && from < chrono::Utc::now() + chrono::TimeDelta::days(700) {
        let until = from + chrono::TimeDelta::days(28);
        let stamp = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        };
        let page = client
            .find_slots(FindSlotsRequest {
                unit: format!("{ORG_DEMO}/units/ccm-program"),
                patient: format!("{ORG_DEMO}/patients/p-0004"),
                visit_type: format!("{ORG_DEMO}/units/ccm-program/visitTypes/ccm-enrollment"),
                window: Some(Interval {
                    start_time: Some(stamp(from)),
                    end_time: Some(stamp(until)),
                }),
                max_slots: 1000,
                ..Default::default()
            })
            .await?
            .into_inner();
        slots.extend(page.slots);
        from = until;
    }
    // One visit per provider and start: a patient cannot be in two places at once.
    slots.sort_by_key(|s| {
        s.interval
            .as_ref()
            .and_then(|i| i.start_time)
            .map(|t| t.seconds)
    });
    slots.dedup_by_key(|s| {
        s.interval
            .as_ref()
            .and_then(|i| i.start_time)
            .map(|t| t.seconds)
    });
    slots.truncate(wanted);
    Ok(slots)
}

const ORG_DEMO: &str = "organizations/acme";

/// Books and completes every slot from `POSTING_WORKERS` callers; returns each encounter with the
/// instant its completion was answered.
async fn book_and_complete(
    channel: &Authed,
    slots: Vec<pm_api::scheduling::Slot>,
) -> anyhow::Result<Vec<(String, std::time::SystemTime)>> {
    use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
    use pm_api::scheduling::{
        Appointment, BookAppointmentRequest, CompleteAppointmentRequest, ServiceLine,
    };
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(slots));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..POSTING_WORKERS {
        let (queue, channel) = (queue.clone(), channel.clone());
        workers.spawn(async move {
            let mut client = SchedulingServiceClient::new(channel);
            let mut done = Vec::new();
            loop {
                let Some(slot) = queue.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(done);
                };
                let booked = client
                    .book_appointment(BookAppointmentRequest {
                        parent: ORG_DEMO.into(),
                        appointment: Some(Appointment {
                            unit: format!("{ORG_DEMO}/units/ccm-program"),
                            patient: format!("{ORG_DEMO}/patients/p-0004"),
                            provider: slot.provider.clone(),
                            location: slot.location.clone(),
                            visit_type: format!(
                                "{ORG_DEMO}/units/ccm-program/visitTypes/ccm-enrollment"
                            ),
                            interval: slot.interval,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let line = |code: &str, pointers: &[i32]| ServiceLine {
                    code: code.into(),
                    units: 1,
                    diagnosis_pointers: pointers.to_vec(),
                    ..Default::default()
                };
                let completed = client
                    .complete_appointment(CompleteAppointmentRequest {
                        name: booked.name,
                        diagnoses: vec!["E11.9".into(), "I10".into()],
                        service_lines: vec![line("G0506", &[1, 2]), line("99490", &[2])],
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let answered = std::time::SystemTime::now();
                if let Some(encounter) = completed.encounter {
                    done.push((encounter.name, answered));
                }
            }
        });
    }
    let mut completed = Vec::new();
    while let Some(worker) = workers.join_next().await {
        completed.extend(worker??);
    }
    Ok(completed)
}

/// Every charge of the demo organization, by name, with its encounter and creation instant.
async fn charge_names(
    channel: &Authed,
) -> anyhow::Result<Vec<(String, String, Option<prost_types::Timestamp>)>> {
    use pm_api::billing::ListChargesRequest;
    use pm_api::billing::billing_service_client::BillingServiceClient;
    let mut client = BillingServiceClient::new(channel.clone());
    let mut charges = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_charges(ListChargesRequest {
                parent: ORG_DEMO.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        charges.extend(
            page.charges
                .into_iter()
                .map(|c| (c.name, c.encounter, c.create_time)),
        );
        if page.next_page_token.is_empty() {
            return Ok(charges);
        }
        page_token = page.next_page_token;
    }
}

/// Each encounter's lag, sorted: from its completion's answer to its last charge's commit. Waits
/// (up to a minute) for Billing to have charged every encounter.
async fn lags_of(
    channel: &Authed,
    completed: &[(String, std::time::SystemTime)],
    before: usize,
) -> anyhow::Result<Vec<Duration>> {
    let wanted = before + 2 * completed.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let charges = loop {
        let charges = charge_names(channel).await?;
        if charges.len() >= wanted || Instant::now() > deadline {
            break charges;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(
        charges.len() >= wanted,
        "Billing made {} of {} charges within a minute",
        charges.len() - before,
        wanted - before
    );
    let mut last: std::collections::HashMap<&str, std::time::SystemTime> =
        std::collections::HashMap::new();
    for (_, encounter, created) in &charges {
        let Some(created) = created else { continue };
        let at = std::time::UNIX_EPOCH
            + Duration::new(
                u64::try_from(created.seconds).unwrap_or_default(),
                u32::try_from(created.nanos).unwrap_or_default(),
            );
        let entry = last.entry(encounter.as_str()).or_insert(at);
        *entry = (*entry).max(at);
    }
    let mut lags: Vec<Duration> = completed
        .iter()
        .filter_map(|(encounter, answered)| {
            let charged = last.get(encounter.as_str())?;
            Some(charged.duration_since(*answered).unwrap_or_default())
        })
        .collect();
    lags.sort();
    Ok(lags)
}
