//! Billing's typed tables on SQLite and PostgreSQL: one charge per encounter line whatever is
//! replayed, the append-only ledger (the database refuses to change or remove an entry, and the
//! signs are checked), reversals, balances that always equal the sum of their entries (a property
//! over random postings), fee-schedule periods that never overlap (also under concurrent writers),
//! and the charges list's paging and narrowing.

#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use pm_api::billing::{ChargeSource, ChargeState, LedgerEntryKind};
use pm_billing::charges::{self, ChargeQuery, ChargeRow};
use pm_billing::domain::invoice::State;
use pm_billing::domain::money::Cents;
use pm_billing::invoice_store::{self, StoredInvoice, StoredLine};
use pm_billing::store;
use pm_runtime::config::Backend;
use pm_testing::TestSlice;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tonic::Code;

const ORG: &str = "organizations/acme";
const NORTH: &str = "organizations/acme/units/north";
const SOUTH: &str = "organizations/acme/units/south";

pub struct Harness {
    slice: TestSlice,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Harness> {
        Ok(Harness {
            slice: TestSlice::open(backend, pm_billing::MIGRATIONS).await?,
        })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.slice.finish().await
    }

    async fn insert(&self, row: &ChargeRow) -> anyhow::Result<bool> {
        let mut tx = self.slice.db.write(ORG).await?;
        let inserted = charges::insert(tx.conn(), row).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn post(&self, charge: &str, kind: LedgerEntryKind, cents: i64) -> anyhow::Result<()> {
        let mut tx = self.slice.db.write(ORG).await?;
        charges::post(tx.conn(), charge, kind, Cents::new(cents), "test").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn balance(&self, charge: &str) -> anyhow::Result<i64> {
        let mut conn = self.slice.db.read().await?;
        Ok(charges::balance(&mut conn, charge).await?.cents())
    }

    async fn ledger_sum(&self, charge: &str) -> anyhow::Result<i64> {
        let mut conn = self.slice.db.read().await?;
        Ok(charges::ledger(&mut conn, charge)
            .await?
            .iter()
            .map(|e| e.amount_cents)
            .sum())
    }
}

fn charge(id: &str, unit: &str, amount: i64) -> ChargeRow {
    ChargeRow {
        name: format!("{ORG}/charges/{id}"),
        source: ChargeSource::Manual,
        encounter: None,
        patient: format!("{ORG}/patients/p-1"),
        unit: unit.into(),
        provider: format!("{ORG}/providers/dr-a"),
        payer: format!("{ORG}/payers/medicare"),
        billing_entity: format!("{ORG}/billingEntities/group"),
        contract: String::new(),
        code: "99213".into(),
        modifiers: vec!["25".into()],
        units: 1,
        diagnoses: vec!["E11.9".into(), "I10".into()],
        service_date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        place_of_service: "11".into(),
        unit_price: Cents::new(amount),
        amount: Cents::new(amount),
        fee_schedule_version: format!("{ORG}/feeSchedules/std/versions/v1"),
        state: if amount > 0 {
            ChargeState::Open
        } else {
            ChargeState::Held
        },
        hold_reason: if amount > 0 {
            String::new()
        } else {
            "NO_FEE_SCHEDULE_ENTRY".into()
        },
        related_charge: String::new(),
        profile: Default::default(),
        create_us: 1_000,
        update_us: 1_000,
    }
}

async fn one_charge_per_encounter_line(h: &Harness) -> anyhow::Result<()> {
    let mut first = charge("a", NORTH, 9500);
    first.source = ChargeSource::Encounter;
    first.encounter = Some((format!("{ORG}/encounters/e1"), 1));
    assert!(h.insert(&first).await?);
    // The same line again, under the same name or another: nothing new, nothing posted twice.
    assert!(!h.insert(&first).await?);
    let mut renamed = first.clone();
    renamed.name = format!("{ORG}/charges/b");
    assert!(!h.insert(&renamed).await?);
    // Its second line is another charge.
    let mut second = first.clone();
    second.name = format!("{ORG}/charges/c");
    second.encounter = Some((format!("{ORG}/encounters/e1"), 2));
    assert!(h.insert(&second).await?);
    let mut conn = h.slice.db.read().await?;
    assert!(charges::get(&mut conn, &renamed.name).await?.is_none());
    let stored = charges::get(&mut conn, &first.name).await?.unwrap();
    assert_eq!(stored, first, "every column reads back as written");
    drop(conn);
    assert_eq!(h.balance(&first.name).await?, 9500);
    assert_eq!(h.ledger_sum(&first.name).await?, 9500);
    Ok(())
}

async fn the_ledger_is_append_only_and_signed(h: &Harness) -> anyhow::Result<()> {
    let paid = charge("paid", NORTH, 10_000);
    h.insert(&paid).await?;
    h.post(&paid.name, LedgerEntryKind::Payment, -6_000).await?;
    // A positive payment or a negative charge breaks the sign check: nothing written.
    assert!(
        h.post(&paid.name, LedgerEntryKind::Payment, 100)
            .await
            .is_err()
    );
    assert!(
        h.post(&paid.name, LedgerEntryKind::Charge, -100)
            .await
            .is_err()
    );
    // Entries cannot be changed or removed, whoever asks.
    for statement in [
        "UPDATE ledger_entries SET amount_cents = 0",
        "DELETE FROM ledger_entries",
    ] {
        let mut conn = h.slice.db.read().await?;
        let refused = sqlx::query(statement).execute(&mut *conn).await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
    assert_eq!(h.balance(&paid.name).await?, 4_000);
    // A held charge posts nothing.
    let held = charge("held", NORTH, 0);
    h.insert(&held).await?;
    let mut conn = h.slice.db.read().await?;
    assert!(charges::ledger(&mut conn, &held.name).await?.is_empty());
    Ok(())
}

async fn a_reversal_takes_back_what_is_left_once(h: &Harness) -> anyhow::Result<()> {
    let original = charge("orig", NORTH, 12_000);
    h.insert(&original).await?;
    h.post(&original.name, LedgerEntryKind::Adjustment, -2_000)
        .await?;
    let mut tx = h.slice.db.write(ORG).await?;
    charges::reverse(
        tx.conn(),
        &original,
        &format!("{ORG}/charges/fix"),
        "wrong code",
    )
    .await?;
    tx.commit().await?;
    assert_eq!(h.balance(&original.name).await?, 0);
    let mut conn = h.slice.db.read().await?;
    let stored = charges::get(&mut conn, &original.name).await?.unwrap();
    assert_eq!(stored.state, ChargeState::Reversed);
    assert_eq!(stored.related_charge, format!("{ORG}/charges/fix"));
    let kinds: Vec<(i32, i64)> = charges::ledger(&mut conn, &original.name)
        .await?
        .iter()
        .map(|e| (e.kind, e.amount_cents))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (LedgerEntryKind::Charge as i32, 12_000),
            (LedgerEntryKind::Adjustment as i32, -2_000),
            (LedgerEntryKind::Reversal as i32, -10_000),
        ]
    );
    drop(conn);
    let mut tx = h.slice.db.write(ORG).await?;
    let again = charges::reverse(tx.conn(), &original, "x", "again")
        .await
        .unwrap_err();
    assert_eq!(
        (again.code, again.reason),
        (Code::FailedPrecondition, "CHARGE_REVERSED")
    );
    Ok(())
}

/// Random postings on random charges: every balance equals the sum of its ledger entries and the
/// model's sum, on this backend.
async fn balances_are_the_sum_of_their_entries(h: &Harness) -> anyhow::Result<()> {
    let kinds = [
        LedgerEntryKind::Payment,
        LedgerEntryKind::Adjustment,
        LedgerEntryKind::WriteOff,
    ];
    let plan = (
        proptest::collection::vec(1i64..1_000_000, 1..4),
        proptest::collection::vec((0usize..4, 0usize..3, 1i64..500_000), 0..12),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    let mut case = 0;
    for _ in 0..12 {
        let (amounts, postings) = plan.new_tree(&mut runner).unwrap().current();
        case += 1;
        let mut model = Vec::new();
        for (i, amount) in amounts.iter().enumerate() {
            let row = charge(&format!("p{case}-{i}"), NORTH, *amount);
            h.insert(&row).await?;
            model.push((row.name, *amount));
        }
        for (which, kind, cents) in postings {
            let Some((name, sum)) = model.get_mut(which) else {
                continue;
            };
            h.post(name, kinds[kind], -cents).await?;
            *sum -= cents;
        }
        for (name, sum) in &model {
            assert_eq!(h.balance(name).await?, *sum, "{name}");
            assert_eq!(h.ledger_sum(name).await?, *sum, "{name}");
        }
    }
    Ok(())
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

async fn fee_schedule_periods_never_overlap(h: &Harness) -> anyhow::Result<()> {
    let claim = async |version: &str, key: &str, from: NaiveDate, until: Option<NaiveDate>| {
        let mut tx = h.slice.db.write(ORG).await?;
        store::claim_period(tx.conn(), version, key, from, until).await?;
        tx.commit().await
    };
    let v = |s: &str, v: &str| format!("{ORG}/feeSchedules/{s}/versions/{v}");
    claim(
        &v("std", "v1"),
        "organization:acme",
        day(2026, 1, 1),
        Some(day(2027, 1, 1)),
    )
    .await?;
    // Touching periods are fine; the next year follows.
    claim(&v("std", "v2"), "organization:acme", day(2027, 1, 1), None).await?;
    // Another scope is independent.
    claim(&v("mcr", "v1"), "payer:medicare", day(2026, 1, 1), None).await?;
    for (version, from, until) in [
        (v("std", "v3"), day(2026, 6, 1), Some(day(2026, 7, 1))),
        (v("other", "v1"), day(2030, 1, 1), None),
        (v("std", "v4"), day(2025, 1, 1), Some(day(2026, 1, 2))),
    ] {
        let refused = claim(&version, "organization:acme", from, until)
            .await
            .unwrap_err();
        assert_eq!(refused.reason, "FEE_SCHEDULE_VERSIONS_OVERLAP", "{version}");
    }
    // Freed when its schedule is deleted.
    let mut tx = h.slice.db.write(ORG).await?;
    store::release_periods(tx.conn(), &format!("{ORG}/feeSchedules/mcr")).await?;
    tx.commit().await?;
    claim(&v("mcr2", "v1"), "payer:medicare", day(2026, 1, 1), None).await?;
    // Eight writers claiming overlapping periods of one scope at once: exactly one wins.
    let mut writers = Vec::new();
    for i in 0..8 {
        let db = h.slice.db.clone();
        let version = v(&format!("race{i}"), "v1");
        writers.push(tokio::spawn(async move {
            let mut tx = db.write(&format!("{ORG}/race{i}")).await?;
            store::claim_period(tx.conn(), &version, "unit:race", day(2026, 1, 1), None).await?;
            tx.commit().await
        }));
    }
    let mut won = 0;
    for writer in writers {
        if writer.await?.is_ok() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "overlapping periods written concurrently");
    Ok(())
}

async fn charges_list_newest_first_within_the_callers_units(h: &Harness) -> anyhow::Result<()> {
    for i in 0..7 {
        let mut row = charge(
            &format!("l{i}"),
            if i % 2 == 0 { NORTH } else { SOUTH },
            100 + i,
        );
        row.create_us = 10_000 + i;
        h.insert(&row).await?;
    }
    let mut conn = h.slice.db.read().await?;
    let everything = ChargeQuery {
        organization: ORG,
        ..Default::default()
    };
    let (first, token) = charges::list(&mut conn, &everything, 3, "").await?;
    assert_eq!(
        first.iter().map(|c| c.amount.cents()).collect::<Vec<_>>(),
        vec![106, 105, 104]
    );
    let (second, _) = charges::list(&mut conn, &everything, 3, &token).await?;
    assert_eq!(
        second.iter().map(|c| c.amount.cents()).collect::<Vec<_>>(),
        vec![103, 102, 101]
    );
    // The token of one query does not serve another.
    let north_only = ChargeQuery {
        organization: ORG,
        unit: NORTH,
        ..Default::default()
    };
    let refused = charges::list(&mut conn, &north_only, 3, &token)
        .await
        .unwrap_err();
    assert_eq!(refused.reason, "PAGE_TOKEN_INVALID");
    // A caller who sees only the south unit sees only its charges; one who sees nothing, nothing.
    let south = [SOUTH.to_string()];
    let visible = ChargeQuery {
        organization: ORG,
        visible_units: Some(&south),
        ..Default::default()
    };
    let (page, _) = charges::list(&mut conn, &visible, 100, "").await?;
    assert_eq!(page.len(), 3);
    assert!(page.iter().all(|c| c.unit == SOUTH));
    let none: [String; 0] = [];
    let blind = ChargeQuery {
        organization: ORG,
        visible_units: Some(&none),
        ..Default::default()
    };
    assert!(
        charges::list(&mut conn, &blind, 100, "")
            .await?
            .0
            .is_empty()
    );
    Ok(())
}

/// Random charges and postings over a few units, payers, codes and months: every summary read from
/// the roll-up equals the same summary computed from the ledger, for every grouping tried, and the
/// lines behind a cell add up to it.
async fn reports_equal_the_ledger(h: &Harness) -> anyhow::Result<()> {
    use pm_billing::reports::{self, CellFilter, Dimension, Summary};
    let plan = proptest::collection::vec(
        (
            0usize..3,
            0usize..3,
            0usize..2,
            1u32..4,
            1i64..100_000,
            0i64..3,
        ),
        1..30,
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let rows = plan.new_tree(&mut runner).unwrap().current();
    let units = [NORTH, SOUTH, "organizations/acme/units/east"];
    let payers = [
        "organizations/acme/payers/a",
        "organizations/acme/payers/b",
        "",
    ];
    let codes = ["99213", "99490"];
    for (i, (unit, payer, code, month, amount, payments)) in rows.iter().enumerate() {
        let mut row = charge(&format!("r{i}"), units[*unit], *amount);
        row.payer = payers[*payer].into();
        row.code = codes[*code].into();
        row.service_date = day(2026, *month, 15);
        h.insert(&row).await?;
        for _ in 0..*payments {
            h.post(&row.name, LedgerEntryKind::Payment, -(amount / 4).max(1))
                .await?;
        }
    }
    let groupings: [&[Dimension]; 6] = [
        &[],
        &[Dimension::Unit],
        &[Dimension::Unit, Dimension::Payer, Dimension::Month],
        &[Dimension::Code, Dimension::Month],
        &[Dimension::BillingEntity, Dimension::Provider],
        &[Dimension::Payer],
    ];
    let mut conn = h.slice.db.read().await?;
    for group_by in groupings {
        for (from, until) in [("", ""), ("2026-02", "2026-02"), ("2026-02", "")] {
            let summary = Summary {
                organization: ORG,
                group_by,
                from_month: from,
                until_month: until,
                units: None,
            };
            let rolled = reports::summarize(&mut conn, &summary).await?;
            let scanned = reports::summarize_from_ledger(&mut conn, &summary).await?;
            assert_eq!(rolled, scanned, "{group_by:?} {from}..{until}");
        }
    }
    // Drill-down: the lines of the (north, March) cell add up to it.
    let summary = Summary {
        organization: ORG,
        group_by: &[Dimension::Unit, Dimension::Month],
        ..Default::default()
    };
    let cells = reports::summarize(&mut conn, &summary).await?;
    for cell in cells {
        let only = [cell.key[0].clone()];
        let filter = CellFilter {
            organization: ORG,
            units: Some(&only),
            month: Some(&cell.key[1]),
            ..Default::default()
        };
        let mut sum = pm_billing::domain::report::Amounts::default();
        let mut token = String::new();
        loop {
            let (lines, next) = reports::lines(&mut conn, &filter, 2, &token).await?;
            for line in lines {
                sum += line.amounts;
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(sum, cell.amounts, "{:?}", cell.key);
    }
    Ok(())
}

/// Receivables by age: from the date of service into the five buckets at their edges, and from
/// submission (a charge on a submitted claim is 0 days old today; one on no claim is unbilled).
async fn receivables_age_into_their_buckets(h: &Harness) -> anyhow::Result<()> {
    use pm_billing::reports::{self, AgingBasis};
    let as_of = day(2026, 12, 1);
    for (i, (days, amount)) in [(0u64, 100), (30, 200), (31, 400), (90, 800), (121, 1600)]
        .iter()
        .enumerate()
    {
        let mut row = charge(&format!("age{i}"), NORTH, *amount);
        row.service_date = as_of - chrono::Days::new(*days);
        h.insert(&row).await?;
    }
    // A charge paid in full is not receivable.
    let mut paid = charge("age-paid", NORTH, 5_000);
    paid.service_date = as_of - chrono::Days::new(200);
    h.insert(&paid).await?;
    h.post(&paid.name, LedgerEntryKind::Payment, -5_000).await?;
    let mut conn = h.slice.db.read().await?;
    let rows = reports::aging(&mut conn, ORG, AgingBasis::ServiceDate, as_of, None).await?;
    assert_eq!(rows.len(), 1, "one entity × payer");
    let buckets: Vec<i64> = rows[0].1.buckets.iter().map(|c| c.cents()).collect();
    assert_eq!(buckets, vec![300, 400, 800, 0, 1600]);
    assert_eq!(rows[0].1.total().cents(), 3100);
    // Out of the caller's units: nothing.
    let elsewhere = [SOUTH.to_string()];
    assert!(
        reports::aging(
            &mut conn,
            ORG,
            AgingBasis::ServiceDate,
            as_of,
            Some(&elsewhere)
        )
        .await?
        .is_empty()
    );
    // By submission: nothing is submitted yet, so everything is unbilled.
    let today = chrono::Utc::now().date_naive();
    let rows = reports::aging(&mut conn, ORG, AgingBasis::Submission, today, None).await?;
    assert_eq!(rows[0].1.unbilled.cents(), 3100);
    assert_eq!(rows[0].1.total().cents(), 3100);
    Ok(())
}

/// A stored invoice of `contract` for March 2026 over `lines` (charge, amount).
fn stored_invoice(name: &str, contract: &str, lines: &[(&str, i64)]) -> StoredInvoice {
    StoredInvoice {
        name: format!("{ORG}/invoices/{name}"),
        contract: format!("{ORG}/contracts/{contract}"),
        payer: format!("{ORG}/payers/globex"),
        billing_entity: format!("{ORG}/billingEntities/group"),
        month: "2026-03".into(),
        basis: "per_visit".into(),
        units: vec![NORTH.into()],
        state: State::Open,
        total: Cents::new(lines.iter().map(|(_, a)| a).sum()),
        issue_us: 2_000,
        update_us: 2_000,
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, (charge, amount))| StoredLine {
                line_number: i as i32 + 1,
                charge: format!("{ORG}/charges/{charge}"),
                patient: format!("{ORG}/patients/p-1"),
                unit: NORTH.into(),
                service_date: day(2026, 3, 2),
                code: "99213".into(),
                month: String::new(),
                amount: Cents::new(*amount),
                balance: Cents::new(*amount),
                paid: Cents::ZERO,
            })
            .collect(),
    }
}

async fn an_invoice_per_contract_and_month_over_the_ledger(h: &Harness) -> anyhow::Result<()> {
    // A member-month is a charge like any other (the source CHECK takes it), and posts its charge.
    let mut member = charge("member", NORTH, 4_500);
    member.source = ChargeSource::MemberMonth;
    member.code = "PMPM".into();
    member.provider = String::new();
    h.insert(&member).await?;
    let mut conn = h.slice.db.read().await?;
    let read = charges::get(&mut conn, &member.name).await?.unwrap();
    assert_eq!(read.source, ChargeSource::MemberMonth);
    drop(conn);
    assert_eq!(h.balance(&member.name).await?, 4_500);
    // Any other source is still refused by the table.
    let mut conn = h.slice.db.read().await?;
    let refused = sqlx::query(
        "UPDATE charges SET source = 'invented' WHERE name = 'organizations/acme/charges/member'",
    )
    .execute(&mut *conn)
    .await;
    assert!(refused.is_err(), "the source CHECK is gone");
    drop(conn);
    let visit = charge("visit", NORTH, 8_500);
    h.insert(&visit).await?;
    let invoice = stored_invoice(
        "globex-2026-03",
        "globex",
        &[("visit", 8_500), ("member", 4_500)],
    );
    let mut tx = h.slice.db.write(ORG).await?;
    invoice_store::insert(tx.conn(), &invoice).await?;
    tx.commit().await?;
    // Its charges are invoiced: on no other invoice, out of assembly.
    let mut conn = h.slice.db.read().await?;
    assert!(invoice_store::exists_for(&mut conn, &invoice.contract, "2026-03").await?);
    let unclaimed = charges::unclaimed(&mut conn, ORG, true, "", 100).await?;
    assert!(unclaimed.is_empty(), "{unclaimed:?}");
    drop(conn);
    let twice = stored_invoice("other", "other", &[("visit", 8_500)]);
    let mut tx = h.slice.db.write(ORG).await?;
    let err = invoice_store::insert(tx.conn(), &twice).await.unwrap_err();
    assert_eq!(err.code, Code::Aborted, "{err:?}");
    drop(tx);
    // One invoice per contract and month, whatever its name (its charge free to take).
    h.insert(&charge("fresh", NORTH, 100)).await?;
    let again = stored_invoice("globex-again", "globex", &[("fresh", 100)]);
    let mut tx = h.slice.db.write(ORG).await?;
    let err = invoice_store::insert(tx.conn(), &again).await.unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists, "{err:?}");
    drop(tx);
    let mut conn = h.slice.db.read().await?;
    let fresh = charges::get(&mut conn, &format!("{ORG}/charges/fresh"))
        .await?
        .unwrap();
    assert_eq!(
        charges::unclaimed(&mut conn, ORG, false, "", 10).await?,
        vec![fresh]
    );
    drop(conn);
    // The balance is the ledger's: a payment moves it, nothing stored beside it.
    h.post(&visit.name, LedgerEntryKind::Payment, -8_000)
        .await?;
    let mut conn = h.slice.db.read().await?;
    let read = invoice_store::get(&mut conn, &invoice.name).await?.unwrap();
    assert_eq!(read.total.cents(), 13_000);
    assert_eq!(read.balance().cents(), 5_000);
    assert_eq!(read.paid().cents(), 8_000);
    assert_eq!(read.lines[0].balance.cents(), 500);
    assert!(invoice_store::get(&mut conn, &twice.name).await?.is_none());
    Ok(())
}

/// SQLite rebuilds `charges` in migration 2006 (its source CHECK widens): a slice migrated to 2005
/// with charges, claims and ledger entries keeps every row, the ledger's references and its
/// append-only triggers.
#[tokio::test]
async fn sqlite_2006_keeps_charges_and_the_ledger() -> anyhow::Result<()> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("billing.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let all = sqlx::migrate!("./migrations/sqlite");
    let mut before = sqlx::migrate!("./migrations/sqlite");
    before.migrations = all
        .migrations
        .iter()
        .filter(|m| m.version < 2006)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await?;
    sqlx::query(
        "INSERT INTO charges (name, organization, source, encounter, line_number, patient, unit, \
         provider, payer, billing_entity, contract, code, modifiers, units, diagnoses, service_date, \
         place_of_service, unit_price_cents, amount_cents, fee_schedule_version, state, hold_reason, \
         related_charge, profile, create_us, update_us, claim) VALUES ('organizations/acme/charges/a', \
         'organizations/acme', 'encounter', 'organizations/acme/encounters/e', 1, 'p', 'u', 'd', \
         'pay', 'be', 'c', '99213', '', 1, 'I10', '2026-03-02', '11', 9500, 9500, 'v', 'open', '', \
         '', '{}', 1, 2, 'organizations/acme/claims/k')",
    )
    .execute(&pool)
    .await?;
    for (kind, cents) in [("charge", 9_500), ("payment", -4_000)] {
        sqlx::query(
            "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
             VALUES ('organizations/acme', 'organizations/acme/charges/a', $1, $2, 'm', 1)",
        )
        .bind(kind)
        .bind(cents)
        .execute(&pool)
        .await?;
    }
    all.run(&pool).await?;
    let (claim, invoice, encounter): (String, String, String) =
        sqlx::query_as("SELECT claim, invoice, encounter FROM charges WHERE name = $1")
            .bind("organizations/acme/charges/a")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (claim.as_str(), invoice.as_str(), encounter.as_str()),
        (
            "organizations/acme/claims/k",
            "",
            "organizations/acme/encounters/e"
        )
    );
    let sum: i64 = sqlx::query_scalar("SELECT SUM(amount_cents) FROM ledger_entries")
        .fetch_one(&pool)
        .await?;
    assert_eq!(sum, 5_500);
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await?;
    assert!(broken.is_empty(), "{broken:?}");
    for statement in [
        "UPDATE ledger_entries SET amount_cents = 0",
        "DELETE FROM ledger_entries",
    ] {
        assert!(
            sqlx::query(statement).execute(&pool).await.is_err(),
            "{statement}"
        );
    }
    // The ledger still refuses an entry on a charge that does not exist, and the encounter line's
    // unique index came back.
    let orphan = sqlx::query(
        "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
         VALUES ('organizations/acme', 'organizations/acme/charges/none', 'payment', -1, 'm', 1)",
    )
    .execute(&pool)
    .await;
    assert!(orphan.is_err());
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'charges'",
    )
    .fetch_all(&pool)
    .await?;
    for index in [
        "charges_one_per_encounter_line",
        "charges_by_organization",
        "charges_unclaimed",
        "charges_uninvoiced",
    ] {
        assert!(
            indexes.iter().any(|(n,)| n == index),
            "{index}: {indexes:?}"
        );
    }
    pool.close().await;
    Ok(())
}

pm_testing::on_both_backends!(super::Harness;
    an_invoice_per_contract_and_month_over_the_ledger,
    receivables_age_into_their_buckets,
    reports_equal_the_ledger,
    one_charge_per_encounter_line,
    the_ledger_is_append_only_and_signed,
    a_reversal_takes_back_what_is_left_once,
    balances_are_the_sum_of_their_entries,
    fee_schedule_periods_never_overlap,
    charges_list_newest_first_within_the_callers_units,
);
