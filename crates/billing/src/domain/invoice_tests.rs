#![allow(clippy::unwrap_used)]

use super::*;

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn month(text: &str) -> Month {
    Month::parse("month", text).unwrap()
}

fn visit(charge: &str, date: &str, code: &str, cents: i64) -> VisitCharge {
    VisitCharge {
        charge: charge.into(),
        patient: "organizations/o/patients/p".into(),
        unit: "organizations/o/units/employer".into(),
        payer: "organizations/o/payers/globex".into(),
        contract: "organizations/o/contracts/globex".into(),
        claim_form: "NONE".into(),
        service_date: day(date),
        code: code.into(),
        amount: Cents::new(cents),
    }
}

fn contract() -> InvoiceContract {
    InvoiceContract {
        name: "organizations/o/contracts/globex".into(),
        payer: "organizations/o/payers/globex".into(),
        units: vec!["organizations/o/units/employer".into()],
        from: day("2026-01-01"),
        until: Some(day("2027-01-01")),
        basis: Basis::PerVisit,
    }
}

fn parent_is(unit: &str, ancestor: &str) -> bool {
    unit == ancestor || (unit == "organizations/o/units/site" && ancestor.ends_with("/employer"))
}

#[test]
fn the_basis_and_its_fee_are_checked_together() {
    assert_eq!(basis(0, 0), Ok(Basis::PerVisit));
    assert_eq!(basis(1, 0), Ok(Basis::PerVisit));
    assert_eq!(
        basis(2, 4_500),
        Ok(Basis::PerMemberPerMonth(Cents::new(4_500)))
    );
    for (b, fee, reason) in [
        (2, 0, "MEMBER_MONTH_FEE_REQUIRED"),
        (2, -1, "MEMBER_MONTH_FEE_REQUIRED"),
        (1, 100, "MEMBER_MONTH_FEE_NOT_ALLOWED"),
        (0, 100, "MEMBER_MONTH_FEE_NOT_ALLOWED"),
        (2, MAX_AMOUNT.cents() + 1, "AMOUNT_INVALID"),
    ] {
        let err = basis(b, fee).unwrap_err();
        assert_eq!(err.reason, reason, "{b} {fee}");
        assert_eq!(err.field, "contract.member_month_fee_cents");
    }
    let err = basis(7, 0).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.reason),
        ("contract.invoice_basis", "INVOICE_BASIS_INVALID")
    );
}

#[test]
fn months_parse_strictly_and_know_their_days() {
    let m = month("2026-02");
    assert_eq!(m.to_string(), "2026-02");
    assert_eq!(m.first_day(), day("2026-02-01"));
    assert_eq!(m.last_day(), day("2026-02-28"));
    assert_eq!(month("2026-12").next_first_day(), day("2027-01-01"));
    assert!(m.contains(day("2026-02-28")) && !m.contains(day("2026-03-01")));
    assert_eq!(Month::of(day("2026-02-17")), m);
    for bad in [
        "2026-13",
        "2026-2",
        "202602",
        "2026-02-01",
        "",
        "abcd-ef",
        "2026/02",
    ] {
        let err = Month::parse("month", bad).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason),
            ("month", "MONTH_INVALID"),
            "{bad}"
        );
    }
}

#[test]
fn per_visit_months_are_invoiced_once_ended_member_months_once_begun() {
    let m = month("2026-03");
    assert!(check_invoiceable(m, Basis::PerVisit, day("2026-04-01")).is_ok());
    let err = check_invoiceable(m, Basis::PerVisit, day("2026-03-31")).unwrap_err();
    assert_eq!(err.reason, "INVOICE_MONTH_NOT_ENDED");
    let pmpm = Basis::PerMemberPerMonth(Cents::new(100));
    assert!(check_invoiceable(m, pmpm, day("2026-03-01")).is_ok());
    let err = check_invoiceable(m, pmpm, day("2026-02-28")).unwrap_err();
    assert_eq!(err.reason, "INVOICE_MONTH_NOT_STARTED");
}

#[test]
fn a_per_visit_invoice_takes_its_contracts_invoiced_lines_of_the_month() {
    let c = contract();
    let m = month("2026-03");
    let named = visit("c1", "2026-03-02", "99213", 8_500);
    assert!(takes(&c, m, &named, &parent_is));
    // Another month, a claimed unit, another contract: not taken.
    assert!(!takes(
        &c,
        m,
        &visit("c2", "2026-04-01", "99213", 1),
        &parent_is
    ));
    let mut claimed = named.clone();
    claimed.claim_form = "CMS1500".into();
    assert!(!takes(&c, m, &claimed, &parent_is));
    let mut other = named.clone();
    other.contract = "organizations/o/contracts/initech".into();
    assert!(!takes(&c, m, &other, &parent_is));
    // No contract named: the contract covering its unit (or an ancestor) for its payer, in force.
    let mut unnamed = named.clone();
    unnamed.contract = String::new();
    unnamed.unit = "organizations/o/units/site".into();
    assert!(takes(&c, m, &unnamed, &parent_is));
    unnamed.payer = "organizations/o/payers/other".into();
    assert!(!takes(&c, m, &unnamed, &parent_is));
    let mut lapsed = c.clone();
    lapsed.until = Some(day("2026-03-01"));
    let mut unnamed = named.clone();
    unnamed.contract = String::new();
    assert!(!takes(&lapsed, m, &unnamed, &parent_is));
    assert!(!lapsed.in_force_during(m) && c.in_force_during(m));
}

#[test]
fn a_per_visit_invoice_totals_its_lines_oldest_first() {
    let composed = compose_visits(&[
        visit("c3", "2026-03-20", "99214", 13_500),
        visit("c1", "2026-03-02", "99213", 8_500),
        visit("c2", "2026-03-02", "99213", 8_500),
        visit("c0", "2026-03-05", "99213", 0),
    ])
    .unwrap();
    let charges: Vec<&str> = composed.lines.iter().map(|l| l.charge.as_str()).collect();
    assert_eq!(charges, ["c1", "c2", "c3"]);
    assert_eq!(composed.total, Cents::new(30_500));
    assert_eq!(
        composed.total,
        composed.lines.iter().map(|l| l.amount).sum::<Cents>()
    );
    assert!(composed.lines.iter().all(|l| l.month.is_none()));
    assert_eq!(compose_visits(&[]), None);
}

#[test]
fn a_member_month_invoice_bills_each_patient_once() {
    let m = month("2026-03");
    let member = |p: &str, u: &str| Member {
        patient: p.into(),
        unit: u.into(),
    };
    let composed = compose_members(
        &[member("p2", "u1"), member("p1", "u2"), member("p1", "u1")],
        m,
        Cents::new(4_500),
        &|p| format!("charge-{p}"),
    )
    .unwrap();
    assert_eq!(composed.lines.len(), 2);
    assert_eq!(composed.total, Cents::new(9_000));
    let first = &composed.lines[0];
    assert_eq!(
        (
            first.charge.as_str(),
            first.patient.as_str(),
            first.unit.as_str()
        ),
        ("charge-p1", "p1", "u1")
    );
    assert_eq!(first.code, MEMBER_MONTH_CODE);
    assert_eq!(first.month, Some(m));
    assert_eq!(first.service_date, day("2026-03-31"));
    assert_eq!(compose_members(&[], m, Cents::new(1), &|p| p.into()), None);
}

#[test]
fn enrollment_spans_count_any_instant_of_the_window() {
    let history = [
        (100, Event::In("employer".into())),
        (200, Event::In("clinic".into())),
        (300, Event::Out),
        (400, Event::In("employer".into())),
    ];
    let spans = spans(&history);
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].until_us, Some(200));
    assert_eq!(spans[1].until_us, Some(300));
    assert_eq!(spans[2].until_us, None);
    let employer = |u: &str| u == "employer";
    assert_eq!(units_during(&spans, 150, 160, &employer), ["employer"]);
    // Transferred out at 200: a window from 200 on does not see the first span.
    assert!(units_during(&spans, 200, 400, &employer).is_empty());
    assert_eq!(units_during(&spans, 399, 401, &employer), ["employer"]);
    assert!(units_during(&spans, 0, 100, &employer).is_empty());
    assert_eq!(units_during(&spans, 250, 260, &|_| true), ["clinic"]);
}

fn owed(charge: &str, date: &str, line: i32, cents: i64) -> Owed {
    Owed {
        charge: charge.into(),
        service_date: day(date),
        line_number: line,
        balance: Cents::new(cents),
    }
}

#[test]
fn a_payment_is_allocated_oldest_first_and_never_beyond_the_balance() {
    let lines = [
        owed("late", "2026-03-20", 3, 13_500),
        owed("early", "2026-03-02", 1, 8_500),
        owed("same-day", "2026-03-02", 2, 8_500),
        owed("paid", "2026-03-01", 4, 0),
    ];
    let parts = allocate(&lines, Cents::new(10_000)).unwrap();
    assert_eq!(
        parts,
        [
            ("early".to_string(), Cents::new(8_500)),
            ("same-day".to_string(), Cents::new(1_500))
        ]
    );
    let all = allocate(&lines, Cents::new(30_500)).unwrap();
    assert_eq!(
        all.iter().map(|(_, c)| *c).sum::<Cents>(),
        Cents::new(30_500)
    );
    assert_eq!(all.len(), 3);
    assert_eq!(
        allocate(&lines, Cents::new(30_501)),
        Err(Unallocated::ExceedsBalance(Cents::new(30_500)))
    );
    assert_eq!(allocate(&lines, Cents::ZERO), Err(Unallocated::NotPositive));
    assert_eq!(
        allocate(&lines, Cents::new(-5)),
        Err(Unallocated::NotPositive)
    );
}

#[test]
fn a_credit_on_a_corrected_line_counts_against_what_the_others_owe() {
    // A paid 85.00 visit corrected to 135.00: the original holds the 85.00 as a credit, the
    // replacement owes 135.00; the invoice owes the 50.00 difference and takes no more.
    let lines = [
        owed("original", "2026-03-02", 1, -8_500),
        owed("replacement", "2026-03-02", 2, 13_500),
    ];
    assert_eq!(
        allocate(&lines, Cents::new(5_001)),
        Err(Unallocated::ExceedsBalance(Cents::new(5_000)))
    );
    assert_eq!(
        allocate(&lines, Cents::new(5_000)).unwrap(),
        [("replacement".to_string(), Cents::new(5_000))]
    );
    let credit_only = [owed("original", "2026-03-02", 1, -100)];
    assert_eq!(
        allocate(&credit_only, Cents::new(1)),
        Err(Unallocated::ExceedsBalance(Cents::ZERO))
    );
}

#[test]
fn the_ledger_decides_the_state() {
    assert_eq!(state(Cents::new(100), Cents::ZERO), State::Open);
    assert_eq!(state(Cents::new(40), Cents::new(60)), State::PartiallyPaid);
    assert_eq!(state(Cents::ZERO, Cents::new(100)), State::Paid);
    for s in [State::Open, State::PartiallyPaid, State::Paid] {
        assert_eq!(State::parse(s.as_str()), s);
    }
}
