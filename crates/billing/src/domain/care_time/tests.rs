#![allow(clippy::unwrap_used)]
use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn entry(role: StaffRole, minutes: i32) -> TimeEntry {
    TimeEntry {
        patient: "pat-1".into(),
        staff: "staff-1".into(),
        role,
        minutes,
        performed_at: at(2026, 2, 10, 15),
        billing_practitioner: "prac-1".into(),
    }
}

fn ready() -> Prerequisites {
    Prerequisites {
        consent_since: Some(date(2025, 12, 1)),
        care_plan_since: Some(date(2025, 12, 1)),
    }
}

fn feb_end() -> NaiveDate {
    date(2026, 2, 28)
}

/// Entries of `staff` clinical-staff minutes and `physician` physician minutes, each split in two
/// so that summing across entries is exercised too.
fn month(staff: i32, physician: i32) -> Vec<TimeEntry> {
    let mut entries = Vec::new();
    for (role, minutes) in [
        (StaffRole::ClinicalStaff, staff),
        (StaffRole::Physician, physician),
    ] {
        let first = minutes / 2;
        for part in [first, minutes - first] {
            if part > 0 {
                entries.push(entry(role, part));
            }
        }
    }
    entries
}

/// `(code, units, minutes_covered)` of a close.
fn billed(close: &MonthClose) -> Vec<(&'static str, i32, i32)> {
    close
        .codes
        .iter()
        .map(|c| (c.code, c.units, c.minutes_covered))
        .collect()
}

fn close(program: Program, staff: i32, physician: i32) -> MonthClose {
    close_month(program, &month(staff, physician), ready(), feb_end())
}

type Expected = Result<Vec<(&'static str, i32, i32)>, (i32, i32)>;

fn check_table(program: Program, role: StaffRole, table: &[(i32, Expected)]) {
    for (minutes, expected) in table {
        let (staff, physician) = match role {
            StaffRole::ClinicalStaff => (*minutes, 0),
            StaffRole::Physician => (0, *minutes),
        };
        let closed = close(program, staff, physician);
        match expected {
            Ok(codes) => {
                assert_eq!(closed.not_billed, None, "{program:?} {minutes}");
                assert_eq!(billed(&closed), *codes, "{program:?} {minutes}");
            }
            Err((counted, needed)) => {
                assert!(closed.codes.is_empty(), "{program:?} {minutes}");
                assert_eq!(
                    closed.not_billed,
                    Some(NotBilled::BelowThreshold {
                        minutes: *counted,
                        needed: *needed
                    }),
                    "{program:?} {minutes}"
                );
            }
        }
        assert_eq!(closed.total_minutes, i64::from(*minutes));
    }
}

#[test]
fn ccm_clinical_staff_thresholds() {
    // CMS MLN909188 via ../shared/notes/oracles.md: 99490 at >= 20 clinical staff minutes,
    // 99439 per additional full 20, at most 2 per month.
    let table: &[(i32, Expected)] = &[
        (0, Err((0, 20))),
        (1, Err((1, 20))),
        (19, Err((19, 20))),
        (20, Ok(vec![("99490", 1, 20)])),
        (39, Ok(vec![("99490", 1, 20)])),
        (40, Ok(vec![("99490", 1, 20), ("99439", 1, 20)])),
        (59, Ok(vec![("99490", 1, 20), ("99439", 1, 20)])),
        (60, Ok(vec![("99490", 1, 20), ("99439", 2, 40)])),
        (79, Ok(vec![("99490", 1, 20), ("99439", 2, 40)])),
        (80, Ok(vec![("99490", 1, 20), ("99439", 2, 40)])),
        (500, Ok(vec![("99490", 1, 20), ("99439", 2, 40)])),
    ];
    check_table(Program::Ccm, StaffRole::ClinicalStaff, table);
}

#[test]
fn ccm_physician_thresholds() {
    // CMS MLN909188 via ../shared/notes/oracles.md: 99491 at >= 30 minutes by the physician/QHP
    // personally, 99437 per additional full 30 (no monthly cap stated).
    let table: &[(i32, Expected)] = &[
        (29, Err((29, 30))),
        (30, Ok(vec![("99491", 1, 30)])),
        (59, Ok(vec![("99491", 1, 30)])),
        (60, Ok(vec![("99491", 1, 30), ("99437", 1, 30)])),
        (89, Ok(vec![("99491", 1, 30), ("99437", 1, 30)])),
        (90, Ok(vec![("99491", 1, 30), ("99437", 2, 60)])),
        (150, Ok(vec![("99491", 1, 30), ("99437", 4, 120)])),
    ];
    check_table(Program::Ccm, StaffRole::Physician, table);
}

#[test]
fn complex_ccm_thresholds() {
    // CMS MLN909188 via ../shared/notes/oracles.md: 99487 at >= 60 clinical staff minutes,
    // 99489 per additional full 30.
    let table: &[(i32, Expected)] = &[
        (20, Err((20, 60))),
        (59, Err((59, 60))),
        (60, Ok(vec![("99487", 1, 60)])),
        (89, Ok(vec![("99487", 1, 60)])),
        (90, Ok(vec![("99487", 1, 60), ("99489", 1, 30)])),
        (119, Ok(vec![("99487", 1, 60), ("99489", 1, 30)])),
        (120, Ok(vec![("99487", 1, 60), ("99489", 2, 60)])),
    ];
    check_table(Program::ComplexCcm, StaffRole::ClinicalStaff, table);
}

#[test]
fn pcm_physician_thresholds() {
    // CMS MLN909188 via ../shared/notes/oracles.md: PCM 99424 (physician, >= 30) and 99425 per
    // additional 30.
    let table: &[(i32, Expected)] = &[
        (29, Err((29, 30))),
        (30, Ok(vec![("99424", 1, 30)])),
        (59, Ok(vec![("99424", 1, 30)])),
        (60, Ok(vec![("99424", 1, 30), ("99425", 1, 30)])),
        (90, Ok(vec![("99424", 1, 30), ("99425", 2, 60)])),
    ];
    check_table(Program::Pcm, StaffRole::Physician, table);
}

#[test]
fn pcm_clinical_staff_thresholds() {
    // CMS MLN909188 via ../shared/notes/oracles.md: PCM 99426 (clinical staff, >= 30) and 99427
    // per additional 30.
    let table: &[(i32, Expected)] = &[
        (29, Err((29, 30))),
        (30, Ok(vec![("99426", 1, 30)])),
        (59, Ok(vec![("99426", 1, 30)])),
        (60, Ok(vec![("99426", 1, 30), ("99427", 1, 30)])),
        (89, Ok(vec![("99426", 1, 30), ("99427", 1, 30)])),
        (90, Ok(vec![("99426", 1, 30), ("99427", 2, 60)])),
    ];
    check_table(Program::Pcm, StaffRole::ClinicalStaff, table);
}

#[test]
fn a_month_bills_one_family_the_one_with_more_units() {
    // CMS MLN909188 via ../shared/notes/oracles.md: 99490 counts clinical staff time, 99491 the
    // physician's personal time; this module bills one family per month (see module docs).
    // (program, staff minutes, physician minutes, expected codes)
    let table: &[(Program, i32, i32, &[&str])] = &[
        // Staff 3 units vs physician 1 unit: staff.
        (Program::Ccm, 60, 30, &["99490", "99439"]),
        // Staff 1 unit vs physician 2 units: physician.
        (Program::Ccm, 20, 60, &["99491", "99437"]),
        // 1 unit each: physician covers 30 minutes, staff 20: physician.
        (Program::Ccm, 20, 30, &["99491"]),
        // 3 units each (staff capped): physician covers 90, staff 60: physician.
        (Program::Ccm, 80, 90, &["99491", "99437"]),
        // Only one family qualifies.
        (Program::Ccm, 19, 30, &["99491"]),
        (Program::Ccm, 40, 29, &["99490", "99439"]),
        // PCM: staff 2 units vs physician 1.
        (Program::Pcm, 60, 30, &["99426", "99427"]),
        // PCM tie on units and minutes covered: physician.
        (Program::Pcm, 30, 30, &["99424"]),
        // Complex CCM counts staff time only.
        (Program::ComplexCcm, 60, 120, &["99487"]),
    ];
    for (program, staff, physician, expected) in table {
        let closed = close(*program, *staff, *physician);
        let codes: Vec<&str> = closed.codes.iter().map(|c| c.code).collect();
        assert_eq!(codes, *expected, "{program:?} {staff} {physician}");
        assert_eq!(closed.total_minutes, i64::from(staff + physician));
    }
}

#[test]
fn the_choice_is_explained_in_the_base_code() {
    let both = close(Program::Ccm, 60, 30);
    assert!(
        both.codes[0].why.contains("99491 (1 units) also qualified"),
        "{}",
        both.codes[0].why
    );
    let one = close(Program::Ccm, 40, 12);
    assert!(
        one.codes[0]
            .why
            .contains("12 physician/QHP minutes are below 99491's 30"),
        "{}",
        one.codes[0].why
    );
    let complex = close(Program::ComplexCcm, 60, 45);
    assert!(
        complex.codes[0]
            .why
            .contains("45 physician/QHP minutes not counted")
    );
    let capped = close(Program::Ccm, 100, 0);
    assert!(
        capped.codes[1].why.contains("capped at 2"),
        "{}",
        capped.codes[1].why
    );
    let alone = close(Program::Ccm, 20, 0);
    assert_eq!(
        alone.codes[0].why,
        "CCM: 20 clinical staff minutes reach 99490's 20"
    );
}

#[test]
fn below_threshold_reports_the_family_closest_to_billing() {
    // CMS MLN909188 via ../shared/notes/oracles.md: 99490 >= 20 (staff), 99491 >= 30 (physician).
    let table = [
        // (staff, physician, counted, needed)
        (15, 25, 15, 20), // both 5 short: staff (first) wins the tie
        (10, 25, 25, 30), // physician 5 short, staff 10
        (0, 0, 0, 20),
        (0, 29, 29, 30),
    ];
    for (staff, physician, counted, needed) in table {
        let closed = close(Program::Ccm, staff, physician);
        assert_eq!(
            closed.not_billed,
            Some(NotBilled::BelowThreshold {
                minutes: counted,
                needed
            }),
            "{staff} {physician}"
        );
    }
    // Complex CCM ignores physician minutes even when they would reach 60.
    assert_eq!(
        close(Program::ComplexCcm, 50, 90).not_billed,
        Some(NotBilled::BelowThreshold {
            minutes: 50,
            needed: 60
        })
    );
}

#[test]
fn one_billing_practitioner_per_month() {
    // CMS MLN909188 via ../shared/notes/oracles.md: one billing practitioner per patient per month.
    let mut entries = month(60, 0);
    entries[0].billing_practitioner = "prac-2".into();
    entries.push(TimeEntry {
        billing_practitioner: "prac-0".into(),
        ..entry(StaffRole::Physician, 40)
    });
    let closed = close_month(Program::Ccm, &entries, ready(), feb_end());
    let not_billed = closed.not_billed.clone().unwrap();
    assert_eq!(not_billed.reason(), MULTIPLE_BILLING_PRACTITIONERS);
    assert_eq!(
        not_billed,
        NotBilled::MultipleBillingPractitioners {
            practitioners: vec!["prac-0".into(), "prac-1".into(), "prac-2".into()]
        }
    );
    assert!(not_billed.why().contains("prac-0, prac-1, prac-2"));
    assert!(closed.codes.is_empty());
    assert_eq!(closed.practitioner, "");
    assert_eq!(closed.total_minutes, 100);

    // Two are already too many, whatever the role of the entries naming them.
    let mut two = month(30, 30);
    two[3].billing_practitioner = "prac-9".into();
    let closed = close_month(Program::Pcm, &two, ready(), feb_end());
    assert_eq!(
        closed.not_billed.map(|n| n.why()),
        Some(
            "one billing practitioner per patient per month, but the entries name prac-1, prac-9"
                .into()
        )
    );
}

#[test]
fn consent_and_care_plan_must_be_in_force_by_month_end() {
    // CMS MLN909188 via ../shared/notes/oracles.md: consent and a care plan are prerequisites.
    let on = |d: NaiveDate| Some(d);
    // (consent, care plan, month_end passed, expected reason or None when billed)
    type Row = (
        Option<NaiveDate>,
        Option<NaiveDate>,
        NaiveDate,
        Option<&'static str>,
    );
    let table: &[Row] = &[
        (
            on(date(2026, 2, 28)),
            on(date(2026, 2, 28)),
            feb_end(),
            None,
        ),
        (on(date(2026, 2, 1)), on(date(2026, 1, 5)), feb_end(), None),
        (None, on(date(2026, 1, 5)), feb_end(), Some(CONSENT_MISSING)),
        (
            on(date(2026, 3, 1)),
            on(date(2026, 1, 5)),
            feb_end(),
            Some(CONSENT_MISSING),
        ),
        (
            on(date(2026, 1, 1)),
            None,
            feb_end(),
            Some(CARE_PLAN_MISSING),
        ),
        (
            on(date(2026, 1, 1)),
            on(date(2026, 3, 1)),
            feb_end(),
            Some(CARE_PLAN_MISSING),
        ),
        // Both missing: consent is reported first.
        (None, None, feb_end(), Some(CONSENT_MISSING)),
        // A mid-month date names the month; its last day is what counts.
        (
            on(date(2026, 2, 27)),
            on(date(2026, 2, 27)),
            date(2026, 2, 3),
            None,
        ),
    ];
    for (consent, care_plan, month_end, expected) in table {
        let prerequisites = Prerequisites {
            consent_since: *consent,
            care_plan_since: *care_plan,
        };
        let closed = close_month(Program::Ccm, &month(20, 0), prerequisites, *month_end);
        assert_eq!(
            closed.not_billed.as_ref().map(NotBilled::reason),
            *expected,
            "{consent:?} {care_plan:?}"
        );
        assert_eq!(closed.codes.is_empty(), expected.is_some());
        assert_eq!(
            closed.month,
            MonthKey {
                year: 2026,
                month: 2
            }
        );
    }
    // A missing prerequisite wins over a short month.
    let short = close_month(
        Program::Ccm,
        &month(5, 0),
        Prerequisites::default(),
        feb_end(),
    );
    assert_eq!(short.not_billed, Some(NotBilled::ConsentMissing));
}

#[test]
fn bad_groups_and_bad_entries_bill_nothing() {
    let mut two_patients = month(40, 0);
    two_patients[1].patient = "pat-2".into();
    let mut bad_minutes = month(40, 0);
    bad_minutes.push(entry(StaffRole::ClinicalStaff, 0));
    let mut too_long = month(40, 0);
    too_long.insert(0, entry(StaffRole::Physician, 1441));
    let mut blank_staff = month(40, 0);
    blank_staff[1].staff = " ".into();
    let table: &[(Vec<TimeEntry>, NotBilled)] = &[
        (two_patients, NotBilled::MultiplePatients),
        (
            bad_minutes,
            NotBilled::EntryInvalid {
                entry: 2,
                reason: MINUTES_INVALID,
            },
        ),
        (
            too_long,
            NotBilled::EntryInvalid {
                entry: 0,
                reason: MINUTES_INVALID,
            },
        ),
        (
            blank_staff,
            NotBilled::EntryInvalid {
                entry: 1,
                reason: FIELD_REQUIRED,
            },
        ),
    ];
    for (entries, expected) in table {
        let closed = close_month(Program::Ccm, entries, ready(), feb_end());
        assert_eq!(closed.not_billed.as_ref(), Some(expected));
        assert!(closed.codes.is_empty());
        assert_eq!(closed.patient, "");
    }
}

#[test]
fn a_billed_month_names_patient_practitioner_and_month() {
    let closed = close(Program::Ccm, 20, 0);
    assert_eq!(closed.patient, "pat-1");
    assert_eq!(closed.practitioner, "prac-1");
    assert_eq!(
        closed.month,
        MonthKey {
            year: 2026,
            month: 2
        }
    );
    assert_eq!(closed.month.to_string(), "2026-02");
    let empty = close_month(Program::Ccm, &[], ready(), feb_end());
    assert_eq!(empty.patient, "");
    assert_eq!(empty.total_minutes, 0);
}

#[test]
fn reason_codes_are_stable() {
    let table = [
        (NotBilled::MultiplePatients, "MULTIPLE_PATIENTS"),
        (
            NotBilled::MultipleBillingPractitioners {
                practitioners: vec![],
            },
            "MULTIPLE_BILLING_PRACTITIONERS",
        ),
        (NotBilled::ConsentMissing, "CONSENT_MISSING"),
        (NotBilled::CarePlanMissing, "CARE_PLAN_MISSING"),
        (
            NotBilled::BelowThreshold {
                minutes: 1,
                needed: 20,
            },
            "BELOW_THRESHOLD",
        ),
        (
            NotBilled::EntryInvalid {
                entry: 0,
                reason: MINUTES_INVALID,
            },
            "MINUTES_INVALID",
        ),
    ];
    for (not_billed, reason) in table {
        assert_eq!(not_billed.reason(), reason);
        assert!(!not_billed.why().contains("pat-"));
    }
}

#[test]
fn month_is_taken_in_the_patients_zone() {
    let table = [
        // 03:00Z on 1 March is 22:00 on 28 February in New York (EST, UTC-5).
        (at(2026, 3, 1, 3), "America/New_York", Some((2026, 2))),
        (at(2026, 3, 1, 5), "America/New_York", Some((2026, 3))),
        (at(2026, 3, 1, 3), "UTC", Some((2026, 3))),
        // 14:00Z on 31 January is 01:00 on 1 February in Sydney (AEDT, UTC+11).
        (at(2026, 1, 31, 14), "Australia/Sydney", Some((2026, 2))),
        (at(2026, 1, 31, 12), "Australia/Sydney", Some((2026, 1))),
        // New Year in Los Angeles: 07:59Z on 1 January is still December there.
        (at(2026, 1, 1, 7), "America/Los_Angeles", Some((2025, 12))),
        (at(2026, 3, 1, 3), "Mars/Olympus_Mons", None),
        (at(2026, 3, 1, 3), "", None),
    ];
    for (instant, zone, expected) in table {
        let expected = expected.map(|(year, month)| MonthKey { year, month });
        assert_eq!(month_of(instant, zone), expected, "{instant} {zone}");
    }
}

#[test]
fn month_key_last_day() {
    let table = [
        ((2026, 2), Some(date(2026, 2, 28))),
        ((2028, 2), Some(date(2028, 2, 29))),
        ((2026, 12), Some(date(2026, 12, 31))),
        ((2026, 4), Some(date(2026, 4, 30))),
        ((2026, 13), None),
        ((2026, 0), None),
    ];
    for ((year, month), expected) in table {
        assert_eq!(
            MonthKey { year, month }.last_day(),
            expected,
            "{year}-{month}"
        );
    }
}

#[test]
fn check_entry_rules() {
    let now = at(2026, 3, 10, 12);
    let feb = MonthKey {
        year: 2026,
        month: 2,
    };
    let ny = "America/New_York";
    let with = |change: fn(&mut TimeEntry)| {
        let mut e = entry(StaffRole::ClinicalStaff, 20);
        e.performed_at = at(2026, 3, 5, 12);
        change(&mut e);
        e
    };
    // (entry, closed months, zone, expected (field, reason) or None)
    type Row = (
        TimeEntry,
        Vec<MonthKey>,
        &'static str,
        Option<(&'static str, &'static str)>,
    );
    let table: Vec<Row> = vec![
        (with(|_| {}), vec![feb], ny, None),
        (with(|e| e.minutes = 1), vec![], ny, None),
        (with(|e| e.minutes = 1440), vec![], ny, None),
        (
            with(|e| e.minutes = 0),
            vec![],
            ny,
            Some(("minutes", MINUTES_INVALID)),
        ),
        (
            with(|e| e.minutes = -5),
            vec![],
            ny,
            Some(("minutes", MINUTES_INVALID)),
        ),
        (
            with(|e| e.minutes = 1441),
            vec![],
            ny,
            Some(("minutes", MINUTES_INVALID)),
        ),
        (
            with(|e| e.patient.clear()),
            vec![],
            ny,
            Some(("patient", FIELD_REQUIRED)),
        ),
        (
            with(|e| e.staff = "  ".into()),
            vec![],
            ny,
            Some(("staff", FIELD_REQUIRED)),
        ),
        (
            with(|e| e.billing_practitioner.clear()),
            vec![],
            ny,
            Some(("billing_practitioner", FIELD_REQUIRED)),
        ),
        (
            with(|_| {}),
            vec![],
            "Nowhere/Else",
            Some(("patient_zone", ZONE_UNKNOWN)),
        ),
        // In a closed month: 03:00Z on 1 March is February in New York, and February is closed.
        (
            with(|e| e.performed_at = at(2026, 3, 1, 3)),
            vec![feb],
            ny,
            Some(("performed_at", MONTH_CLOSED)),
        ),
        // The same instant is March in UTC, which is open.
        (
            with(|e| e.performed_at = at(2026, 3, 1, 3)),
            vec![feb],
            "UTC",
            None,
        ),
        // Exactly now is allowed; a second later is not.
        (
            with(|e| e.performed_at = at(2026, 3, 10, 12)),
            vec![],
            ny,
            None,
        ),
        (
            with(|e| e.performed_at = at(2026, 3, 10, 12) + chrono::Duration::seconds(1)),
            vec![],
            ny,
            Some(("performed_at", PERFORMED_IN_FUTURE)),
        ),
    ];
    for (e, closed, zone, expected) in table {
        let got = check_entry_at(&e, &closed, zone, now);
        let got = got.err().map(|i| (i.field.clone(), i.reason));
        let expected = expected.map(|(f, r)| (f.to_string(), r));
        assert_eq!(got, expected, "{e:?} {zone}");
    }
}

#[test]
fn check_entry_uses_the_clock_and_never_echoes_the_patient() {
    let mut e = entry(StaffRole::Physician, 30);
    e.performed_at = at(2020, 1, 1, 0);
    assert_eq!(check_entry(&e, &[], "UTC"), Ok(()));
    e.performed_at = at(2999, 1, 1, 0);
    let invalid = check_entry(&e, &[], "UTC").unwrap_err();
    assert_eq!(invalid.reason, PERFORMED_IN_FUTURE);
    for minutes in [0, 5000] {
        e.minutes = minutes;
        let invalid = check_entry(&e, &[], "UTC").unwrap_err();
        assert!(!invalid.to_string().contains("pat-1"));
    }
}

/// Caps where the rule text states one (CMS MLN909188 via ../shared/notes/oracles.md).
fn cap_of(code: &str) -> Option<i32> {
    (code == "99439").then_some(2)
}

fn entries_strategy() -> impl Strategy<Value = Vec<TimeEntry>> {
    prop::collection::vec((any::<bool>(), 1..=MAX_ENTRY_MINUTES), 0..12).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(physician, minutes)| {
                let role = if physician {
                    StaffRole::Physician
                } else {
                    StaffRole::ClinicalStaff
                };
                entry(role, minutes)
            })
            .collect()
    })
}

fn program_strategy() -> impl Strategy<Value = Program> {
    prop_oneof![
        Just(Program::Ccm),
        Just(Program::ComplexCcm),
        Just(Program::Pcm)
    ]
}

proptest! {
    #[test]
    fn codes_respect_caps_and_cover_no_more_than_recorded(
        program in program_strategy(),
        entries in entries_strategy(),
    ) {
        let closed = close_month(program, &entries, ready(), feb_end());
        let covered: i64 = closed.codes.iter().map(|c| i64::from(c.minutes_covered)).sum();
        prop_assert!(covered <= closed.total_minutes);
        prop_assert_eq!(closed.codes.is_empty(), closed.not_billed.is_some());
        if let Some(base) = closed.codes.first() {
            prop_assert_eq!(base.units, 1);
        }
        // At most a base code and its add-on, and every unit positive.
        prop_assert!(closed.codes.len() <= 2);
        for code in &closed.codes {
            prop_assert!(code.units >= 1);
            if let Some(cap) = cap_of(code.code) {
                prop_assert!(code.units <= cap, "{} x {}", code.code, code.units);
            }
        }
    }

    #[test]
    fn one_role_is_billed_and_only_its_minutes_count(
        program in program_strategy(),
        entries in entries_strategy(),
    ) {
        let closed = close_month(program, &entries, ready(), feb_end());
        let Some(base) = closed.codes.first() else { return Ok(()) };
        let role = match base.code {
            "99491" | "99424" => StaffRole::Physician,
            _ => StaffRole::ClinicalStaff,
        };
        let role_minutes: i64 = entries
            .iter()
            .filter(|e| e.role == role)
            .map(|e| i64::from(e.minutes))
            .sum();
        let covered: i64 = closed.codes.iter().map(|c| i64::from(c.minutes_covered)).sum();
        prop_assert!(covered <= role_minutes);
    }

    #[test]
    fn same_input_same_output_in_any_order(
        program in program_strategy(),
        (entries, shuffled) in entries_strategy()
            .prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
        practitioners in prop::collection::vec(prop_oneof![Just("prac-1"), Just("prac-2")], 12),
    ) {
        // Mixing practitioners also checks that their listing does not depend on order.
        let name = |mut entries: Vec<TimeEntry>| {
            for e in entries.iter_mut() {
                let index = usize::try_from(e.minutes).unwrap_or(0) % practitioners.len();
                e.billing_practitioner = practitioners[index].to_string();
            }
            entries
        };
        let (entries, shuffled) = (name(entries), name(shuffled));
        let first = close_month(program, &entries, ready(), feb_end());
        prop_assert_eq!(&first, &close_month(program, &entries, ready(), feb_end()));
        prop_assert_eq!(&first, &close_month(program, &shuffled, ready(), feb_end()));
    }

    #[test]
    fn month_of_agrees_with_the_zone_offset(secs in 0_i64..4_102_444_800) {
        // Whatever the instant, New York's month is UTC's month or the one before.
        let instant = DateTime::from_timestamp(secs, 0).unwrap();
        let ny = month_of(instant, "America/New_York").unwrap();
        let utc = month_of(instant, "UTC").unwrap();
        let previous = MonthKey::of_date(MonthKey::of_date(instant.date_naive())
            .last_day().unwrap().with_day(1).unwrap().pred_opt().unwrap());
        prop_assert!(ny == utc || ny == previous);
    }
}
