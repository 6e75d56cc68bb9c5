//! The Scheduling rows of `pm-bench`, run on each backend after the Org rows.
//!
//! - Booking: `BookAppointment` calls that never conflict (50 provider/patient pairs, each walking its
//!   own slots, 8 weeks of weekday availability), with eligibility, idempotency (a fresh
//!   `request_id` per call), the audit record and the outbox event included; on PostgreSQL against a
//!   bare insert of the same two rows under the same exclusion constraints (`pgbench`, same number
//!   of clients), the two alternating over [`BOOK_ROUNDS`] rounds, each reporting its median round;
//!   then the occupancy guard alone as the slice runs it (`occupancy::reserve` in a write
//!   transaction, under its own lock and under the organization's lock).
//! - Slot search: `FindSlots` over a unit with 200 providers (weekday availability, one time off each,
//!   400 existing bookings) and a 4-week window; against the rows it needs (the unit's rules, every
//!   provider's exceptions, the window's occupancy) read through the slice's store on one connection
//!   and, on PostgreSQL, as three plain SQL queries (`pgbench`, one connection).
//! - History: `ListCalendar` of the booking unit for one week (its 50 providers' availability and
//!   [`CALENDAR_WEEK`] appointments), and `FindSlots` in that unit over the same week, first with
//!   1k and then with 100k completed appointments in the unit's past (seeded through the store, with
//!   their occupancy rows, as finished visits keep them); each call measured over gRPC, one in
//!   flight. A week's cost should not grow with the days the clinic has run: target, the 100k case
//!   within 1.5x of the 1k case. `PM_BENCH_ONLY=calendar` runs these rows alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use pm::mesh::{Mesh, Service};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{
    BillingProfile, Coverage, CreateCoverageRequest, CreateCredentialRequest,
    CreateEnrollmentRequest, CreateLocationRequest, CreatePatientRequest, CreateProviderRequest,
    CreateServiceUnitRequest, Credential, CredentialState, Enrollment, Location, Patient,
    PayerContract, Provider, ServiceUnit, UnitKind, WorkflowRules,
};
use pm_api::scheduling::calendar_entry::Entry;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::{
    Appointment, AppointmentState, AvailabilityException, AvailabilityRule, BookAppointmentRequest,
    CreateAvailabilityExceptionRequest, CreateAvailabilityRuleRequest, CreateVisitTypeRequest,
    ExceptionKind, FindSlotsRequest, ListCalendarRequest, VisitType, Weekday,
};
use pm_runtime::config::Backend;
use pm_runtime::{ApiResult, Db};
use pm_scheduling::availability::{self, Interval};
use pm_scheduling::occupancy::{self, Holder, HolderKind};
use pm_scheduling::{domain, store};
use tonic::Status;
use uuid::Uuid;

use super::{
    Channel, RowResult, Settings, Tally, Target, Workload, channels_to, measure, median_round,
    org_name, print_row,
};

/// Rounds of the booking comparison (booking and bare insert alternate).
const BOOK_ROUNDS: usize = 3;
/// Provider/patient pairs of the booking rows.
const BOOK_PAIRS: usize = 50;
/// Weeks of availability the booking rows walk through.
const BOOK_WEEKS: i64 = 8;
/// Providers of the searched unit.
const FIND_PROVIDERS: usize = 200;
/// The search window.
const FIND_DAYS: i64 = 28;
/// Patients of the searched unit (the first one searches).
const FIND_PATIENTS: usize = 20;
/// Appointments booked in the searched unit before the search rows (two per provider).
const FIND_BOOKINGS: usize = 400;
/// The visit type: 30 minutes and 10 minutes of buffer after it.
const VISIT_MINUTES: i64 = 30;
const BUFFER_MINUTES: i64 = 10;
/// Seeding calls in flight.
const SEED_PARALLELISM: usize = 16;
/// Where the rows' spans start when they need no availability (2030-03-17, far from any booking).
const FAR_FUTURE_MICROS: i64 = 1_900_000_000_000_000;
/// Past appointments of the history rows: the small history, then the large one.
const CALENDAR_HISTORY: [usize; 2] = [1_000, 100_000];
/// Appointments in the week the history rows read.
const CALENDAR_WEEK: usize = 200;
/// Appointments per seeding write of the history rows.
const CALENDAR_SEED_BATCH: usize = 200;
/// The ErrorInfo domain of the bench's own refusals.
const DOMAIN: &str = "bench.pm.dev";

const BOOK_UNIT: &str = "sched-book";
const FIND_UNIT: &str = "sched-find";
const LOCATION: &str = "sched-main";
const PAYER: &str = "payers/aetna";
const VISIT_CODE: &str = "follow-up";

fn unit_name(id: &str) -> String {
    format!("{}/units/{id}", org_name())
}

fn location_name() -> String {
    format!("{}/locations/{LOCATION}", org_name())
}

fn visit_type_name(unit_id: &str) -> String {
    format!("{}/visitTypes/{VISIT_CODE}", unit_name(unit_id))
}

fn provider_name(id: &str) -> String {
    format!("{}/providers/{id}", org_name())
}

fn patient_name(id: &str) -> String {
    format!("{}/patients/{id}", org_name())
}

/// The Scheduling rows on `target` (the mesh runs Org, RBAC and Scheduling).
pub(crate) async fn bench(
    settings: &Settings,
    target: &Target,
    mesh: &Mesh,
    org_channels: &[Channel],
    token: &str,
    ceiling: f64,
) -> anyhow::Result<()> {
    let url = mesh
        .url(Service::Scheduling)
        .context("the mesh did not start the Scheduling service")?;
    let channels = channels_to(&target.config, &url, token).await?;
    seed_payer(target, mesh, token).await?;
    let world = seed(org_channels, &channels).await?;
    let label = target.label;
    let postgres = target.config.storage.backend == Backend::Postgres;
    analyze(target).await?;
    let scratch = target.config.data_dir.join("pgbench");
    let one = Settings {
        duration: settings.duration,
        concurrency: 1,
        postgres_url: settings.postgres_url.clone(),
        ..*settings
    };

    // History: a week's calendar and slot search with a small and a large past.
    bench_history(&one, target, &channels, &world.book, ceiling).await?;
    if settings.only_calendar {
        return Ok(());
    }

    // Booking, alternating with the bare insert over a few rounds (each reports its median round).
    let mut booked_rounds = Vec::new();
    let mut bare_rounds = Vec::new();
    for round in 0..BOOK_ROUNDS {
        booked_rounds.push(measure(settings, &channels, &book(world.book.clone())).await?);
        if postgres
            && let Some(bare) = pgbench(
                settings,
                target,
                &scratch,
                "bare occupancy insert",
                settings.concurrency,
                &bare_insert_script(round),
            )
            .await?
        {
            bare_rounds.push(bare);
        }
        // Each round on stderr: how far the rounds (and the machine) drift.
        let rate = |rounds: &[RowResult]| rounds.last().map_or(0.0, RowResult::rate);
        eprintln!(
            "{label} booking round {}: {:.0}/s booked, {:.0}/s bare insert",
            round + 1,
            rate(&booked_rounds),
            rate(&bare_rounds)
        );
    }
    let booked = median_round(booked_rounds)?;
    print_row(label, &booked, Some(ceiling));
    let bare_insert = if bare_rounds.is_empty() {
        None
    } else {
        Some(median_round(bare_rounds)?)
    };
    if let Some(bare) = &bare_insert {
        print_row(label, bare, Some(ceiling));
    }
    let db = Db::open(
        &target.config,
        pm_scheduling::NAME,
        pm_scheduling::MIGRATIONS,
    )
    .await
    .context("opening the Scheduling slice")?;
    let own_lock = measure(settings, &channels, &reserve(db.clone(), Lock::Own)).await?;
    print_row(label, &own_lock, Some(ceiling));
    let org_lock = if postgres {
        let row = measure(
            settings,
            &channels,
            &reserve(db.clone(), Lock::Organization),
        )
        .await?;
        print_row(label, &row, Some(ceiling));
        row.rate()
    } else {
        own_lock.rate()
    };
    match &bare_insert {
        Some(bare) if bare.rate() > 0.0 => println!(
            "{label:<11}   (median of {BOOK_ROUNDS} alternating rounds) booking keeps {:.1}% of a bare insert of its occupancy rows (target >= 40%); the guard alone as the slice runs it keeps {:.1}%, {:.1}% under the organization's lock",
            booked.rate() / bare.rate() * 100.0,
            own_lock.rate() / bare.rate() * 100.0,
            org_lock / bare.rate() * 100.0,
        ),
        None if own_lock.rate() > 0.0 => println!(
            "{label:<11}   booking keeps {:.1}% of the occupancy guard alone (the 40% target is against a bare insert on PostgreSQL)",
            booked.rate() / own_lock.rate() * 100.0,
        ),
        _ => {}
    }

    // Slot search, on statistics that include the bookings just made.
    analyze(target).await?;
    let search = find_slots(&world.find);
    let loaded = measure(settings, &channels, &search).await?;
    print_row(label, &loaded, Some(ceiling));
    let search = Workload {
        rpc: "FindSlots, 1 in flight",
        ..search
    };
    let single = measure(&one, &channels, &search).await?;
    print_row(label, &single, Some(ceiling));
    let reads = measure(
        &one,
        &channels,
        &store_reads(db.clone(), world.find.clone()),
    )
    .await?;
    print_row(label, &reads, Some(ceiling));
    db.close().await;
    let scan = if postgres {
        pgbench(
            settings,
            target,
            &scratch,
            "bare SQL scan, 1 conn",
            1,
            &bare_scan_script(&world.find),
        )
        .await?
    } else {
        None
    };
    if let Some(scan) = &scan {
        print_row(label, scan, Some(ceiling));
    }
    let p50 = single.millis_at(0.5);
    let mut summary = Vec::new();
    if let Some(scan) = scan.as_ref().filter(|s| s.millis_at(0.5) > 0.0) {
        summary.push(format!(
            "{:.1}x a bare SQL scan of the rows it reads (target <= 3x)",
            p50 / scan.millis_at(0.5)
        ));
    }
    if reads.millis_at(0.5) > 0.0 {
        summary.push(format!(
            "{:.1}x the same rows read through the slice's store",
            p50 / reads.millis_at(0.5)
        ));
    }
    if !summary.is_empty() {
        println!(
            "{label:<11}   FindSlots p50 (1 in flight) is {}",
            summary.join("; ")
        );
    }
    Ok(())
}

/// The history rows (see the module docs): a week of the booking unit read with 1k, then 100k
/// appointments in its past.
async fn bench_history(
    one: &Settings,
    target: &Target,
    channels: &[Channel],
    plan: &BookPlan,
    ceiling: f64,
) -> anyhow::Result<()> {
    let label = target.label;
    let postgres = target.config.storage.backend == Backend::Postgres;
    let db = Db::open(
        &target.config,
        pm_scheduling::NAME,
        pm_scheduling::MIGRATIONS,
    )
    .await
    .context("opening the Scheduling slice")?;
    // The week: from the UTC midnight two days ahead, as the booking rows' slots.
    let week_start = (Utc::now() + TimeDelta::days(2))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let week = Interval::new(week_start, week_start + TimeDelta::days(7))?;
    // The past ends a day before now, on a whole minute.
    let past_end = (Utc::now() - TimeDelta::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let spacing = TimeDelta::minutes(VISIT_MINUTES + BUFFER_MINUTES);
    // The week's own appointments, every day at its own hour (they are not in any open slot's way:
    // no occupancy rows, and the booking rows walk later weeks first only after these rows).
    let week_appointments: Vec<Appointment> = (0..CALENDAR_WEEK)
        .map(|k| {
            let start = week_start
                + TimeDelta::days(i64::try_from(k % 7).unwrap_or(0))
                + TimeDelta::minutes(i64::try_from(k / 7).unwrap_or(0) * 2);
            history_appointment(plan, &format!("week-{k:04}"), k, start, false)
        })
        .collect::<anyhow::Result<_>>()?;
    seed_history(&db, postgres, week_appointments, false).await?;
    let calendar = list_calendar(&plan.unit, week);
    let search = Workload {
        rpc: "FindSlots 50p x 1w",
        ..find_slots_in(plan, week)
    };
    let mut seeded = 0;
    let mut rows = Vec::new();
    for history in CALENDAR_HISTORY {
        let past: Vec<Appointment> = (seeded..history)
            .map(|i| {
                let start = past_end - spacing * i32::try_from(i + 1).unwrap_or(i32::MAX);
                history_appointment(plan, &format!("past-{i:06}"), i, start, true)
            })
            .collect::<anyhow::Result<_>>()?;
        seed_history(&db, postgres, past, true).await?;
        seeded = history;
        analyze(target).await?;
        // Check what the rows read before measuring it.
        let entries = SchedulingServiceClient::new(channels[0].clone())
            .list_calendar(calendar_request(&plan.unit, week))
            .await
            .context("the first ListCalendar")?
            .into_inner()
            .entries;
        let appointments = entries
            .iter()
            .filter(|e| matches!(e.entry, Some(Entry::Appointment(_))))
            .count();
        anyhow::ensure!(
            appointments == CALENDAR_WEEK,
            "the week's calendar shows {appointments} appointments, not {CALENDAR_WEEK}"
        );
        let calendar = Workload {
            rpc: if history < 10_000 {
                "ListCalendar 1w, 1k past"
            } else {
                "ListCalendar 1w, 100k pst"
            },
            ..calendar.clone()
        };
        let measured = measure(one, channels, &calendar).await?;
        print_row(label, &measured, Some(ceiling));
        let found = measure(one, channels, &search).await?;
        print_row(label, &found, Some(ceiling));
        // The calendar's appointment read alone through the store: the window's, and (as before
        // the spans table) every appointment of the organization.
        let window = measure(one, channels, &calendar_reads(db.clone(), week, false)).await?;
        print_row(label, &window, Some(ceiling));
        let everything = measure(one, channels, &calendar_reads(db.clone(), week, true)).await?;
        print_row(label, &everything, Some(ceiling));
        rows.push((measured, found, window, everything));
    }
    db.close().await;
    if let [
        (small_calendar, small_search, small_window, small_all),
        (large_calendar, large_search, large_window, large_all),
    ] = rows.as_slice()
    {
        let ratio = |large: &RowResult, small: &RowResult| {
            large.millis_at(0.5) / small.millis_at(0.5).max(f64::EPSILON)
        };
        println!(
            "{label:<11}   a week with 100k past appointments vs 1k (p50, 1 in flight; target <= 1.5x): ListCalendar {:.2}x ({:.2} vs {:.2} ms), FindSlots {:.2}x ({:.2} vs {:.2} ms)",
            ratio(large_calendar, small_calendar),
            large_calendar.millis_at(0.5),
            small_calendar.millis_at(0.5),
            ratio(large_search, small_search),
            large_search.millis_at(0.5),
            small_search.millis_at(0.5),
        );
        println!(
            "{label:<11}   the calendar's appointment read through the store, 100k vs 1k: the window's {:.2}x ({:.2} vs {:.2} ms); every appointment of the organization (before the spans table) {:.2}x ({:.2} vs {:.2} ms)",
            ratio(large_window, small_window),
            large_window.millis_at(0.5),
            small_window.millis_at(0.5),
            ratio(large_all, small_all),
            large_all.millis_at(0.5),
            small_all.millis_at(0.5),
        );
    }
    Ok(())
}

/// Appointment `id` of the booking unit, the `i`-th pair's, over one visit from `start`: completed
/// (a past one) or booked.
fn history_appointment(
    plan: &BookPlan,
    id: &str,
    i: usize,
    start: DateTime<Utc>,
    past: bool,
) -> anyhow::Result<Appointment> {
    let (provider, patient) = plan
        .pairs
        .get(i % plan.pairs.len().max(1))
        .cloned()
        .context("the booking unit has no provider/patient pairs")?;
    let state = if past {
        AppointmentState::Completed
    } else {
        AppointmentState::Booked
    };
    let interval = Interval::new(start, start + TimeDelta::minutes(VISIT_MINUTES))?;
    Ok(Appointment {
        name: format!("{}/appointments/{id}", org_name()),
        unit: plan.unit.clone(),
        patient,
        provider,
        location: location_name(),
        visit_type: plan.visit_type.clone(),
        interval: Some(domain::wire_interval(interval)),
        state: state as i32,
        ..Default::default()
    })
}

/// Writes `appointments` through the store, [`CALENDAR_SEED_BATCH`] at a time, with their
/// occupancy rows when `occupy` (the past ones: spaced so that no holder overlaps itself).
async fn seed_history(
    db: &Db,
    postgres: bool,
    appointments: Vec<Appointment>,
    occupy: bool,
) -> anyhow::Result<()> {
    for chunk in appointments.chunks(CALENDAR_SEED_BATCH) {
        let mut inserts = Vec::new();
        for a in chunk {
            let interval = domain::interval(a.interval.as_ref(), "interval")?;
            let (stored, statements) = store::appointment_insert_statements(a.clone());
            inserts.extend(statements);
            if occupy {
                let holders = [
                    Holder {
                        kind: HolderKind::Provider,
                        name: stored.provider.clone(),
                    },
                    Holder {
                        kind: HolderKind::Patient,
                        name: stored.patient.clone(),
                    },
                ];
                let span = (
                    interval.start().timestamp_micros(),
                    (interval.end() + TimeDelta::minutes(BUFFER_MINUTES)).timestamp_micros(),
                );
                inserts.push(occupancy::reserve_statement(
                    &stored.name,
                    &holders,
                    span,
                    None,
                    postgres,
                )?);
            }
        }
        pm_runtime::batch::commit_inserts(db, inserts, async |_| Ok(()))
            .await
            .context("seeding past appointments")?;
    }
    Ok(())
}

fn calendar_request(unit: &str, week: Interval) -> ListCalendarRequest {
    ListCalendarRequest {
        scope: unit.into(),
        window: Some(domain::wire_interval(week)),
        show_inactive: false,
        raw_availability: false,
    }
}

fn list_calendar(unit: &str, week: Interval) -> Workload {
    let request = calendar_request(unit, week);
    Workload::new("ListCalendar", move |channel, _| {
        let request = request.clone();
        async move {
            SchedulingServiceClient::new(channel)
                .list_calendar(request)
                .await
                .map(drop)
        }
    })
}

/// The appointments a week's calendar reads, through the store on one connection: the window's
/// (`store::appointments_in_window`), or every live one of the organization (`all`: the read the
/// calendar made before the spans table).
fn calendar_reads(db: Db, week: Interval, all: bool) -> Workload {
    let rpc = if all {
        "store: all org appts"
    } else {
        "store: window's appts"
    };
    let unit = [unit_name(BOOK_UNIT)];
    Workload::new(rpc, move |_, _| {
        let (db, unit) = (db.clone(), unit.clone());
        async move {
            let result: ApiResult<()> = async {
                let mut conn = db.read().await?;
                if all {
                    let collection = format!("{}/appointments", org_name());
                    pm_runtime::docstore::all_live::<Appointment>(&mut conn, &collection).await?;
                } else {
                    store::appointments_in_window(
                        &mut conn,
                        store::SpanScope::Units(&unit),
                        week.start().timestamp_micros(),
                        week.end().timestamp_micros(),
                    )
                    .await?;
                }
                Ok(())
            }
            .await;
            result.map_err(|e| e.into_status(DOMAIN))
        }
    })
}

fn find_slots_in(plan: &BookPlan, window: Interval) -> Workload {
    let request = FindSlotsRequest {
        unit: plan.unit.clone(),
        patient: plan.pairs.first().map(|p| p.1.clone()).unwrap_or_default(),
        visit_type: plan.visit_type.clone(),
        window: Some(domain::wire_interval(window)),
        ..Default::default()
    };
    Workload::new("FindSlots", move |channel, _| {
        let request = request.clone();
        async move {
            SchedulingServiceClient::new(channel)
                .find_slots(request)
                .await
                .map(drop)
        }
    })
}

/// Refreshes PostgreSQL's planner statistics of the Org and Scheduling slices. The rows were
/// loaded seconds ago, faster than autovacuum's analyze follows in a running system; without it the
/// planner works from empty tables' estimates, which no deployment sees for long.
async fn analyze(target: &Target) -> anyhow::Result<()> {
    if target.config.storage.backend != Backend::Postgres {
        return Ok(());
    }
    for (service, migrations) in [
        (pm_org::NAME, pm_org::MIGRATIONS),
        (pm_scheduling::NAME, pm_scheduling::MIGRATIONS),
    ] {
        let db = Db::open(&target.config, service, migrations).await?;
        db.analyze()
            .await
            .with_context(|| format!("analyzing the {service} slice"))?;
        db.close().await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seeding, through the public APIs (not timed).

/// What the booking rows book: pair `n % pairs` at slot `n / pairs`, for the n-th call.
struct BookPlan {
    unit: String,
    visit_type: String,
    pairs: Vec<(String, String)>,
    starts: Vec<DateTime<Utc>>,
    next: AtomicUsize,
}

impl BookPlan {
    /// The next booking; `None` once every planned slot is taken.
    fn next(&self) -> Option<BookAppointmentRequest> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (provider, patient) = self.pairs.get(n % self.pairs.len().max(1))?;
        let start = self.starts.get(n / self.pairs.len().max(1))?;
        Some(book_request(
            &self.unit,
            &self.visit_type,
            provider,
            patient,
            *start,
        ))
    }
}

/// The searched unit and what the rows read of it.
struct FindPlan {
    unit: String,
    visit_type: String,
    patient: String,
    providers: Vec<String>,
    window: Interval,
}

struct World {
    book: Arc<BookPlan>,
    find: Arc<FindPlan>,
}

fn book_request(
    unit: &str,
    visit_type: &str,
    provider: &str,
    patient: &str,
    start: DateTime<Utc>,
) -> BookAppointmentRequest {
    BookAppointmentRequest {
        parent: org_name(),
        appointment: Some(Appointment {
            unit: unit.into(),
            patient: patient.into(),
            provider: provider.into(),
            location: location_name(),
            visit_type: visit_type.into(),
            interval: Some(pm_api::types::Interval {
                start_time: Some(domain::timestamp(start)),
                end_time: None,
            }),
            ..Default::default()
        }),
        hold_ttl: None,
        request_id: Uuid::new_v4().to_string(),
        appointment_id: String::new(),
    }
}

/// Runs `calls` with [`SEED_PARALLELISM`] in flight; fails on the first failure.
async fn all<F>(calls: impl IntoIterator<Item = F>) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(calls)
        .buffer_unordered(SEED_PARALLELISM)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// A valid NPI (ten digits, Luhn over the `80840` prefix) made of `base` (nine digits) and its
/// check digit.
fn npi(base: u32) -> anyhow::Result<String> {
    let body = format!("{:09}", base % 1_000_000_000);
    let sum: u32 = format!("80840{body}")
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            // Rightmost digit of the payload (next to the check digit) is doubled.
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    let npi = format!("{body}{}", (10 - sum % 10) % 10);
    anyhow::ensure!(
        pm_org::domain::is_valid_npi(&npi),
        "generated an invalid NPI {npi}"
    );
    Ok(npi)
}

fn since_2024() -> Option<pm_api::types::Interval> {
    Some(pm_api::types::Interval {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_704_067_200,
            nanos: 0,
        }),
        end_time: None,
    })
}

fn minutes(m: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: m * 60,
        nanos: 0,
    })
}

/// The payer the bench's units accept, in Billing (Org refuses a billing profile naming a payer
/// Billing does not know).
async fn seed_payer(target: &Target, mesh: &Mesh, token: &str) -> anyhow::Result<()> {
    use pm_api::billing::billing_service_client::BillingServiceClient;
    use pm_api::billing::{CreatePayerRequest, Payer};
    let url = mesh
        .url(Service::Billing)
        .context("the mesh did not start the Billing service")?;
    let channels = channels_to(&target.config, &url, token).await?;
    let channel = channels
        .into_iter()
        .next()
        .context("no channel to Billing")?;
    let created = BillingServiceClient::new(channel)
        .create_payer(CreatePayerRequest {
            parent: org_name(),
            payer: Some(Payer {
                display_name: "Aetna".into(),
                payer_id: "60054".into(),
                claim_filing_indicator: "CI".into(),
                timely_filing_days: 180,
                ..Default::default()
            }),
            payer_id: PAYER.trim_start_matches("payers/").into(),
            request_id: String::new(),
        })
        .await;
    match created {
        Err(status) if status.code() != tonic::Code::AlreadyExists => Err(status.into()),
        _ => Ok(()),
    }
}

/// Org's side (two units accepting one payer and allowing the visit type, a location in New York,
/// credentialed providers, enrolled and covered patients), then Scheduling's (the visit type,
/// weekday 08:00-18:00 rules, time off, the searched unit's existing bookings).
async fn seed(org_channels: &[Channel], channels: &[Channel]) -> anyhow::Result<World> {
    let org = |i: usize| OrgServiceClient::new(org_channels[i % org_channels.len()].clone());
    let scheduling = |i: usize| SchedulingServiceClient::new(channels[i % channels.len()].clone());

    for id in [BOOK_UNIT, FIND_UNIT] {
        org(0)
            .create_service_unit(CreateServiceUnitRequest {
                parent: org_name(),
                service_unit: Some(ServiceUnit {
                    display_name: format!("Scheduling {id}"),
                    kind: UnitKind::Clinic as i32,
                    billing_profile: Some(BillingProfile {
                        accepted_payers: vec![PayerContract {
                            payer: PAYER.into(),
                            contract: String::new(),
                        }],
                        self_pay_allowed: Some(false),
                        ..Default::default()
                    }),
                    workflow_rules: Some(WorkflowRules {
                        allowed_visit_types: vec![VISIT_CODE.into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                service_unit_id: id.into(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("creating unit {id}"))?;
        scheduling(0)
            .create_visit_type(CreateVisitTypeRequest {
                parent: unit_name(id),
                visit_type: Some(VisitType {
                    code: VISIT_CODE.into(),
                    display_name: "Follow-up".into(),
                    duration: minutes(VISIT_MINUTES),
                    buffer_after: minutes(BUFFER_MINUTES),
                    ..Default::default()
                }),
                visit_type_id: VISIT_CODE.into(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("creating the visit type of {id}"))?;
    }
    org(0)
        .create_location(CreateLocationRequest {
            parent: org_name(),
            location: Some(Location {
                display_name: "Main street".into(),
                time_zone: "America/New_York".into(),
                ..Default::default()
            }),
            location_id: LOCATION.into(),
            request_id: String::new(),
        })
        .await
        .context("creating the location")?;

    let book_providers: Vec<String> = (0..BOOK_PAIRS).map(|i| format!("bp-{i:03}")).collect();
    let find_providers: Vec<String> = (0..FIND_PROVIDERS).map(|i| format!("fp-{i:03}")).collect();
    let providers: Vec<(String, &str)> = book_providers
        .iter()
        .map(|p| (p.clone(), BOOK_UNIT))
        .chain(find_providers.iter().map(|p| (p.clone(), FIND_UNIT)))
        .collect();
    all(providers.iter().enumerate().map(|(i, (id, unit))| {
        let (mut org, id, unit) = (org(i), id.clone(), unit_name(unit));
        async move {
            org.create_provider(CreateProviderRequest {
                parent: org_name(),
                provider: Some(Provider {
                    display_name: format!("Dr {id}"),
                    npi: npi(100_000_000 + u32::try_from(i)?)?,
                    taxonomy_code: "207Q00000X".into(),
                    ..Default::default()
                }),
                provider_id: id.clone(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("creating provider {id}"))?;
            org.create_credential(CreateCredentialRequest {
                parent: provider_name(&id),
                credential: Some(Credential {
                    unit,
                    state: CredentialState::Active as i32,
                    effective_period: since_2024(),
                    ..Default::default()
                }),
                credential_id: "main".into(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("credentialing provider {id}"))?;
            Ok(())
        }
    }))
    .await?;

    let book_patients: Vec<String> = (0..BOOK_PAIRS).map(|i| format!("bpat-{i:03}")).collect();
    let find_patients: Vec<String> = (0..FIND_PATIENTS).map(|i| format!("fpat-{i:03}")).collect();
    let patients: Vec<(String, &str)> = book_patients
        .iter()
        .map(|p| (p.clone(), BOOK_UNIT))
        .chain(find_patients.iter().map(|p| (p.clone(), FIND_UNIT)))
        .collect();
    all(patients.iter().enumerate().map(|(i, (id, unit))| {
        let (mut org, id, unit) = (org(i), id.clone(), unit_name(unit));
        async move {
            org.create_patient(CreatePatientRequest {
                parent: org_name(),
                patient: Some(Patient {
                    given_name: "Bench".into(),
                    family_name: format!("Patient {id}"),
                    birth_date: Some(pm_api::types::Date {
                        year: 1960,
                        month: 1,
                        day: 1,
                    }),
                    ..Default::default()
                }),
                patient_id: id.clone(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("creating patient {id}"))?;
            org.create_enrollment(CreateEnrollmentRequest {
                parent: patient_name(&id),
                enrollment: Some(Enrollment {
                    unit,
                    ..Default::default()
                }),
                enrollment_id: "main".into(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("enrolling patient {id}"))?;
            org.create_coverage(CreateCoverageRequest {
                parent: patient_name(&id),
                coverage: Some(Coverage {
                    payer: PAYER.into(),
                    member_id: format!("M-{id}"),
                    plan: "PPO".into(),
                    priority: 1,
                    effective_period: since_2024(),
                    ..Default::default()
                }),
                coverage_id: "primary".into(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("covering patient {id}"))?;
            Ok(())
        }
    }))
    .await?;

    // Weekday rules; the first one created tells where the open hours fall (in UTC).
    let weekdays = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
    ];
    let rules: Vec<(String, &str, Weekday)> = providers
        .iter()
        .flat_map(|(id, unit)| weekdays.iter().map(move |day| (id.clone(), *unit, *day)))
        .collect();
    let created = std::sync::Mutex::new(Vec::new());
    all(rules.iter().enumerate().map(|(i, (id, unit, day))| {
        let (mut s, id, unit, day, created) =
            (scheduling(i), id.clone(), unit_name(unit), *day, &created);
        async move {
            let rule = s
                .create_availability_rule(CreateAvailabilityRuleRequest {
                    parent: provider_name(&id),
                    availability_rule: Some(AvailabilityRule {
                        unit,
                        location: location_name(),
                        weekday: day as i32,
                        start_time: "08:00".into(),
                        end_time: "18:00".into(),
                        effective_from: Some(pm_api::types::Date {
                            year: 2024,
                            month: 1,
                            day: 1,
                        }),
                        ..Default::default()
                    }),
                    availability_rule_id: String::new(),
                    request_id: String::new(),
                })
                .await
                .with_context(|| format!("creating an availability rule of {id}"))?
                .into_inner();
            if id == "bp-000"
                && let Ok(mut created) = created.lock()
            {
                created.push(rule);
            }
            Ok(())
        }
    }))
    .await?;
    let weekly = created
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a seeding task panicked"))?
        .iter()
        .map(domain::weekly_rule)
        .collect::<ApiResult<Vec<_>>>()?;

    // Everything happens from the UTC midnight two days ahead (so every slot is in the future).
    let now = Utc::now();
    let origin = (now + TimeDelta::days(2))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let open =
        |days: i64| availability::expand(&weekly, &[], origin, origin + TimeDelta::days(days));

    // The booking rows' slots: each open block cut into visit + buffer lengths.
    let padded = TimeDelta::minutes(VISIT_MINUTES + BUFFER_MINUTES);
    let mut starts = Vec::new();
    for block in open(BOOK_WEEKS * 7) {
        let mut start = block.start();
        while start + padded <= block.end() {
            starts.push(start);
            start += padded;
        }
    }
    let book = Arc::new(BookPlan {
        unit: unit_name(BOOK_UNIT),
        visit_type: visit_type_name(BOOK_UNIT),
        pairs: book_providers
            .iter()
            .zip(&book_patients)
            .map(|(p, q)| (provider_name(p), patient_name(q)))
            .collect(),
        starts,
        next: AtomicUsize::new(0),
    });

    // The searched unit: two hours off for each provider, and two bookings each (patient k % 20
    // on day k / 20 at 10:00, provider k % 200: nobody is booked twice at once).
    let days = open(FIND_DAYS);
    anyhow::ensure!(!days.is_empty(), "no open hours in the search window");
    let day = |i: usize| days[i % days.len()];
    all(find_providers.iter().enumerate().map(|(i, id)| {
        let (mut s, id, block) = (scheduling(i), id.clone(), day(i * 7));
        async move {
            let off = Interval::new(
                block.start() + TimeDelta::hours(6),
                block.start() + TimeDelta::hours(8),
            )?;
            s.create_availability_exception(CreateAvailabilityExceptionRequest {
                parent: provider_name(&id),
                availability_exception: Some(AvailabilityException {
                    kind: ExceptionKind::TimeOff as i32,
                    interval: Some(domain::wire_interval(off)),
                    description: "Training".into(),
                    ..Default::default()
                }),
                availability_exception_id: String::new(),
                request_id: String::new(),
            })
            .await
            .with_context(|| format!("creating time off for {id}"))?;
            Ok(())
        }
    }))
    .await?;
    all((0..FIND_BOOKINGS).map(|k| {
        let mut s = scheduling(k);
        let request = book_request(
            &unit_name(FIND_UNIT),
            &visit_type_name(FIND_UNIT),
            &provider_name(&find_providers[k % FIND_PROVIDERS]),
            &patient_name(&find_patients[k % FIND_PATIENTS]),
            day(k / FIND_PATIENTS).start() + TimeDelta::hours(2),
        );
        async move {
            s.book_appointment(request)
                .await
                .with_context(|| format!("booking seed appointment {k}"))?;
            Ok(())
        }
    }))
    .await?;
    let find = Arc::new(FindPlan {
        unit: unit_name(FIND_UNIT),
        visit_type: visit_type_name(FIND_UNIT),
        patient: patient_name(&find_patients[0]),
        providers: find_providers.iter().map(|p| provider_name(p)).collect(),
        window: Interval::new(origin, origin + TimeDelta::days(FIND_DAYS))?,
    });

    // One search before measuring: a seeding mistake would otherwise be measured as an empty answer.
    let found = scheduling(0)
        .find_slots(find_request(&find))
        .await
        .context("the first FindSlots")?
        .into_inner();
    anyhow::ensure!(
        !found.slots.is_empty(),
        "FindSlots found no slot in the seeded unit: {:?}",
        found.exclusions.first()
    );
    Ok(World { book, find })
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn book(plan: Arc<BookPlan>) -> Workload {
    Workload::new("BookAppointment", move |channel, _| {
        let request = plan.next();
        async move {
            let request = request
                .ok_or_else(|| Status::resource_exhausted("the bench ran out of planned slots"))?;
            SchedulingServiceClient::new(channel)
                .book_appointment(request)
                .await
                .map(drop)
        }
    })
}

/// Whose write lock the occupancy rows take.
#[derive(Clone, Copy)]
enum Lock {
    /// One of its own per call (uncontended: the cost of the statement only).
    Own,
    /// The bench organization's, as every booking of the organization does.
    Organization,
}

/// The double-booking guard alone as the slice runs it: a write transaction (with its lock), the
/// pre-check and the insert of a provider and a patient row, commit. Each of [`BOOK_PAIRS`] holder
/// pairs walks its own 40-minute spans, so nothing conflicts.
fn reserve(db: Db, lock: Lock) -> Workload {
    let (rpc, tag) = match lock {
        Lock::Own => ("occupancy tx, own lock", "own"),
        Lock::Organization => ("occupancy tx, org lock", "org"),
    };
    let next = Arc::new(AtomicUsize::new(0));
    Workload::new(rpc, move |_, random| {
        let (db, n) = (db.clone(), next.fetch_add(1, Ordering::Relaxed));
        async move {
            let pair = n % BOOK_PAIRS;
            let span = (VISIT_MINUTES + BUFFER_MINUTES) * 60_000_000;
            let start = FAR_FUTURE_MICROS + i64::try_from(n / BOOK_PAIRS).unwrap_or(0) * span;
            let holders = [
                Holder {
                    kind: HolderKind::Provider,
                    name: provider_name(&format!("{tag}-{pair:03}")),
                },
                Holder {
                    kind: HolderKind::Patient,
                    name: patient_name(&format!("{tag}-{pair:03}")),
                },
            ];
            let scope = match lock {
                Lock::Own => format!("organizations/lock-{random}"),
                Lock::Organization => org_name(),
            };
            let appointment = format!("{}/appointments/{tag}-{n}", org_name());
            let result = async {
                let mut tx = db.write(&scope).await?;
                occupancy::reserve(
                    tx.conn(),
                    &appointment,
                    &holders,
                    (start, start + span),
                    None,
                )
                .await?;
                tx.commit().await
            }
            .await;
            result.map_err(|e| e.into_status(DOMAIN))
        }
    })
}

fn find_request(plan: &FindPlan) -> FindSlotsRequest {
    FindSlotsRequest {
        unit: plan.unit.clone(),
        patient: plan.patient.clone(),
        visit_type: plan.visit_type.clone(),
        window: Some(domain::wire_interval(plan.window)),
        ..Default::default()
    }
}

fn find_slots(plan: &FindPlan) -> Workload {
    let request = find_request(plan);
    Workload::new("FindSlots 200p x 4w", move |channel, _| {
        let request = request.clone();
        async move {
            SchedulingServiceClient::new(channel)
                .find_slots(request)
                .await
                .map(drop)
        }
    })
}

/// The padded window FindSlots reads occupancy over (micros).
fn padded_window(plan: &FindPlan) -> (i64, i64) {
    (
        plan.window.start().timestamp_micros(),
        (plan.window.end() + TimeDelta::minutes(BUFFER_MINUTES)).timestamp_micros(),
    )
}

/// The rows FindSlots needs, read through the slice's store on one connection: the unit's rules,
/// each provider's exceptions, the providers' and the patient's occupancy in the window.
fn store_reads(db: Db, plan: Arc<FindPlan>) -> Workload {
    Workload::new("store reads, 1 conn", move |_, _| {
        let (db, plan) = (db.clone(), plan.clone());
        async move {
            let result: ApiResult<()> = async {
                let (from, until) = padded_window(&plan);
                let mut conn = db.read().await?;
                store::rules_of_unit(&mut conn, &plan.unit).await?;
                store::exceptions_of_all(&mut conn, &plan.providers).await?;
                occupancy::busy(
                    &mut conn,
                    HolderKind::Provider,
                    &plan.providers,
                    from,
                    until,
                )
                .await?;
                occupancy::busy(
                    &mut conn,
                    HolderKind::Patient,
                    std::slice::from_ref(&plan.patient),
                    from,
                    until,
                )
                .await?;
                Ok(())
            }
            .await;
            result.map_err(|e| e.into_status(DOMAIN))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The bare baselines: pgbench on the Scheduling slice's schema (PostgreSQL only).

/// Two occupancy rows (provider, patient) in one transaction, each pgbench client walking its own
/// 40-minute spans of its own holders (its own in each `round`): nothing conflicts, the exclusion
/// constraints still check.
fn bare_insert_script(round: usize) -> String {
    let span = (VISIT_MINUTES + BUFFER_MINUTES) * 60_000_000;
    let org = org_name();
    let insert = |kind: &str, collection: &str| {
        format!(
            "INSERT INTO occupancy (appointment, kind, holder, start_us, end_us) VALUES \
             ('{org}/appointments/bare{round}-' || :client_id || '-' || :n, '{kind}', \
             '{org}/{collection}/bare{round}-' || :client_id, :s, :e);\n"
        )
    };
    format!(
        "\\set n :n + 1\n\\set s {FAR_FUTURE_MICROS} + :n * {span}\n\\set e :s + {span}\n\
         BEGIN;\n{}{}COMMIT;\n",
        insert("provider", "providers"),
        insert("patient", "patients"),
    )
}

/// The rows FindSlots needs as three plain queries: the unit's rules (with their bodies), every
/// provider's exceptions, the providers' and the patient's occupancy in the window.
fn bare_scan_script(plan: &FindPlan) -> String {
    let quoted = |values: &mut dyn Iterator<Item = String>| {
        values
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let exceptions = quoted(
        &mut plan
            .providers
            .iter()
            .map(|p| store::collection(&store::AVAILABILITY_EXCEPTION, p)),
    );
    let providers = quoted(&mut plan.providers.iter().cloned());
    let patient = quoted(&mut std::iter::once(plan.patient.clone()));
    let unit = quoted(&mut std::iter::once(plan.unit.clone()));
    let (from, until) = padded_window(plan);
    let now = pm_runtime::time::now_micros();
    format!(
        "SELECT r.name, r.revision, r.create_time, r.update_time, r.delete_time, r.body \
         FROM resource_attrs a JOIN resources r ON r.name = a.name \
         WHERE a.attr = 'rule_unit' AND a.value = {unit} AND r.delete_time IS NULL ORDER BY r.name;\n\
         SELECT name, revision, create_time, update_time, delete_time, body FROM resources \
         WHERE collection IN ({exceptions}) AND delete_time IS NULL ORDER BY name;\n\
         SELECT holder, appointment, start_us, end_us FROM occupancy \
         WHERE ((kind = 'provider' AND holder IN ({providers})) OR (kind = 'patient' AND holder = {patient})) \
         AND start_us < {until} AND end_us > {from} AND (expire_us IS NULL OR expire_us > {now}) \
         ORDER BY holder, start_us;\n"
    )
}

/// Runs `script` with pgbench (`clients` connections, prepared statements, the row's duration in
/// whole seconds) on the Scheduling slice's schema; the per-transaction log gives the latencies.
/// `None` (and a line saying why) when pgbench is not installed.
async fn pgbench(
    settings: &Settings,
    target: &Target,
    scratch: &Path,
    rpc: &'static str,
    clients: usize,
    script: &str,
) -> anyhow::Result<Option<RowResult>> {
    let dir = scratch.join(Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script_path = dir.join("script.sql");
    std::fs::write(&script_path, script)?;
    let seconds = settings.duration.as_secs_f64().round().max(1.0);
    let schema = format!(
        "{}{}",
        target.config.storage.postgres_schema_prefix,
        pm_scheduling::NAME
    );
    let mut command = std::process::Command::new("pgbench");
    command
        .env("PGOPTIONS", format!("-c search_path={schema}"))
        .args(["-n", "-M", "prepared", "-D", "n=0"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.clamp(1, 2)))
        .arg(format!("--time={seconds}"))
        .arg("--log")
        .arg(format!("--log-prefix={}", dir.join("tx").display()))
        .arg(format!("--file={}", script_path.display()))
        .arg(target.config.storage.postgres_url.expose());
    let output = match tokio::task::spawn_blocking(move || command.output()).await? {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "{:<11} {rpc:<24} skipped: pgbench is not installed",
                target.label
            );
            return Ok(None);
        }
        Err(err) => return Err(err).context("running pgbench"),
    };
    let mut tally = Tally::new()?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tx."));
        if !is_log {
            continue;
        }
        // `client transaction latency_us script epoch_s epoch_us`; latency is `failed` or
        // `skipped` for a transaction that did not commit.
        for line in std::fs::read_to_string(&path)?.lines() {
            match line.split_whitespace().nth(2).map(str::parse::<u64>) {
                Some(Ok(micros)) => tally.record(Ok(()), Duration::from_micros(micros)),
                _ => tally.record(
                    Err(Status::aborted(format!("pgbench: {line}"))),
                    Duration::ZERO,
                ),
            }
        }
    }
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .find(|l| l.contains("ERROR") || l.contains("aborted") || l.contains("error"))
            .or_else(|| stderr.lines().last())
            .unwrap_or("no output")
            .to_string();
        tally.record(
            Err(Status::internal(format!(
                "pgbench {}: {reason}",
                output.status
            ))),
            Duration::ZERO,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(RowResult {
        rpc,
        tally,
        elapsed: Duration::from_secs_f64(seconds),
    }))
}
