//! Which fee-schedule entry prices a claim line, and a trace of why.
//!
//! An organisation keeps several fee schedules, each scoped to the whole organisation, a unit
//! (and its subtree), a program, a contract or a payer. A line is priced by the most specific
//! schedule that applies to it, is in force on the service date and lists the line's code:
//! contract, then payer, then program, then units from the line's own unit up to the root, then
//! the organisation. [`resolve`] also returns one [`Candidate`] per schedule so a billing clerk
//! can see why each schedule did or did not price the line (ExplainPrice).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use chrono::NaiveDate;

use crate::domain::codes::{Modifier, ProcedureCode};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;

/// What a schedule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every line of the organisation.
    Organization,
    /// Lines of the named unit and its subtree.
    Unit(String),
    /// Lines of the named program unit (and its subtree): matched against the line's nearest
    /// program unit ([`Line::program_unit`]).
    Program(String),
    /// Lines billed under the named contract.
    Contract(String),
    /// Lines billed to the named payer.
    Payer(String),
}

/// One priced code (with a modifier set) in a schedule version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeEntry {
    /// The procedure code (CPT/HCPCS).
    pub code: String,
    /// The modifiers this price is for; empty for the base price of the code.
    pub modifiers: Vec<String>,
    /// The price per unit.
    pub amount: Cents,
    /// What the code is, for people.
    pub description: String,
}

/// A schedule's prices over one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The version's name (`2026`, `2026-Q3`).
    pub name: String,
    /// First day in force.
    pub effective_from: NaiveDate,
    /// First day no longer in force (exclusive); `None` while open-ended.
    pub effective_until: Option<NaiveDate>,
    /// The prices.
    pub entries: Vec<FeeEntry>,
}

/// A named fee schedule with its scope and dated versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The schedule's name; ties between schedules of one level are broken by it, ascending.
    pub name: String,
    /// What the schedule applies to.
    pub scope: Scope,
    /// Its versions; [`check_versions_disjoint`] keeps them from overlapping.
    pub versions: Vec<Version>,
}

/// What is priced: the facts about one claim line that select a schedule and an entry.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The procedure code.
    pub code: &'a str,
    /// The line's modifiers (order does not matter).
    pub modifiers: &'a [String],
    /// The date of service: picks the version in force.
    pub service_date: NaiveDate,
    /// The payer billed, if any.
    pub payer: Option<&'a str>,
    /// The contract billed under, if any.
    pub contract: Option<&'a str>,
    /// The nearest ancestor-or-self unit of kind PROGRAM, if any.
    pub program_unit: Option<&'a str>,
    /// The line's unit first, then its parent, … up to the root unit.
    pub unit_lineage: &'a [String],
}

/// How specific a schedule is for a line. The derived order is the resolution order: `Contract`
/// first … `Organization` last, nearer units before farther ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A contract schedule matching the line's contract.
    Contract,
    /// A payer schedule matching the line's payer.
    Payer,
    /// A program schedule matching the line's program unit.
    Program,
    /// A unit schedule for the line's unit (`distance` 0) or an ancestor (`distance` steps up).
    Unit {
        /// Steps from the line's unit up to the schedule's unit.
        distance: usize,
    },
    /// The organisation-wide schedule.
    Organization,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Contract => f.write_str("contract level"),
            Level::Payer => f.write_str("payer level"),
            Level::Program => f.write_str("program level"),
            Level::Unit { distance: 0 } => f.write_str("the line's own unit"),
            Level::Unit { distance: 1 } => f.write_str("unit level, 1 level up"),
            Level::Unit { distance } => write!(f, "unit level, {distance} levels up"),
            Level::Organization => f.write_str("organization level"),
        }
    }
}

/// What became of one schedule when pricing a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This schedule priced the line.
    Chosen,
    /// It applies, but a nearer level (or nearer unit, or an earlier name at the same level)
    /// already priced the line; `by` names that schedule.
    Outranked {
        /// The schedule that priced the line.
        by: String,
    },
    /// It does not apply to this line: the message says why (other payer, other contract,
    /// other unit, not this line's program).
    NotApplicable(String),
    /// It applies, but no version's `[from, until)` contains the service date.
    NoVersionInForce,
    /// It applies and a version is in force, but that version has no entry for the code (with
    /// these modifiers, or a base price).
    NoEntry {
        /// The version in force.
        version: String,
    },
}

/// One schedule's line in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The schedule's name.
    pub schedule: String,
    /// Its level for this line; `None` when it does not apply.
    pub level: Option<Level>,
    /// The version in force on the service date, if the schedule applies and one is.
    pub version: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
    /// A sentence for a billing clerk.
    pub detail: String,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Price per unit.
    pub amount: Cents,
    /// The schedule that priced the line.
    pub schedule: String,
    /// Its version in force on the service date.
    pub version: String,
    /// The schedule's level for this line.
    pub level: Level,
    /// The modifiers of the entry used (empty when the base price was used).
    pub entry_modifiers: Vec<String>,
    /// Every schedule passed in, once, in resolution order then the ones that do not apply.
    pub trace: Vec<Candidate>,
}

/// No schedule priced the line; the trace says why for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpriced {
    /// Every schedule passed in, once, in resolution order then the ones that do not apply.
    pub trace: Vec<Candidate>,
}

/// Prices `line` from `schedules`: the first schedule in resolution order (contract → payer →
/// program → unit, nearest first → organisation; ties by name ascending) that applies, has a
/// version in force on the service date, and has an entry for the code wins.
///
/// The trace lists every schedule exactly once: applicable ones in resolution order, then the
/// ones that do not apply in the order given.
pub fn resolve(schedules: &[Schedule], line: &Line) -> Result<Price, Unpriced> {
    let mut applicable = Vec::new();
    let mut not_applicable = Vec::new();
    for (index, schedule) in schedules.iter().enumerate() {
        match level_for(&schedule.scope, line) {
            Ok(level) => applicable.push((level, schedule, index)),
            Err(why) => not_applicable.push(Candidate {
                schedule: schedule.name.clone(),
                level: None,
                version: None,
                outcome: Outcome::NotApplicable(why.clone()),
                detail: why,
            }),
        }
    }
    // The index makes the order total even if two schedules share a name.
    applicable.sort_by(|a, b| (a.0, &a.1.name, a.2).cmp(&(b.0, &b.1.name, b.2)));

    let mut trace = Vec::with_capacity(schedules.len());
    let mut chosen: Option<Price> = None;
    for (level, schedule, _) in applicable {
        let candidate = match &chosen {
            Some(price) => outranked(schedule, level, line, &price.schedule),
            None => {
                let (candidate, price) = try_schedule(schedule, level, line);
                chosen = price;
                candidate
            }
        };
        trace.push(candidate);
    }
    trace.extend(not_applicable);
    match chosen {
        Some(price) => Ok(Price { trace, ..price }),
        None => Err(Unpriced { trace }),
    }
}

/// The schedule's level for this line, or why it does not apply.
fn level_for(scope: &Scope, line: &Line) -> Result<Level, String> {
    match scope {
        Scope::Organization => Ok(Level::Organization),
        Scope::Contract(name) => match line.contract {
            Some(c) if c == name => Ok(Level::Contract),
            Some(c) => Err(format!(
                "does not apply: it is for contract {name}; the line is billed under contract {c}"
            )),
            None => Err(format!(
                "does not apply: it is for contract {name}; the line is not billed under a contract"
            )),
        },
        Scope::Payer(name) => match line.payer {
            Some(p) if p == name => Ok(Level::Payer),
            Some(p) => Err(format!(
                "does not apply: it is for payer {name}; the line is billed to payer {p}"
            )),
            None => Err(format!(
                "does not apply: it is for payer {name}; the line is not billed to a payer"
            )),
        },
        Scope::Program(name) => match line.program_unit {
            Some(p) if p == name => Ok(Level::Program),
            Some(p) => Err(format!(
                "does not apply: it is for program {name}; the line belongs to program {p}"
            )),
            None => Err(format!(
                "does not apply: it is for program {name}; the line's unit is not part of a program"
            )),
        },
        Scope::Unit(name) => match line.unit_lineage.iter().position(|u| u == name) {
            Some(distance) => Ok(Level::Unit { distance }),
            None => Err(format!(
                "does not apply: it is for unit {name}, which is neither the line's unit \
                 nor one of its parents"
            )),
        },
    }
}

/// The candidate for an applicable schedule that comes after the one that priced the line.
fn outranked(schedule: &Schedule, level: Level, line: &Line, by: &str) -> Candidate {
    Candidate {
        schedule: schedule.name.clone(),
        level: Some(level),
        version: version_in_force(&schedule.versions, line.service_date).map(|v| v.name.clone()),
        outcome: Outcome::Outranked { by: by.to_string() },
        detail: format!(
            "applies ({level}), but schedule {by} comes first and already priced the line"
        ),
    }
}

/// Tries one applicable schedule: its candidate, and the price if it priced the line.
fn try_schedule(schedule: &Schedule, level: Level, line: &Line) -> (Candidate, Option<Price>) {
    let candidate = |version: Option<&Version>, outcome, detail| Candidate {
        schedule: schedule.name.clone(),
        level: Some(level),
        version: version.map(|v| v.name.clone()),
        outcome,
        detail,
    };
    let Some(version) = version_in_force(&schedule.versions, line.service_date) else {
        let detail = no_version_detail(&schedule.versions, line.service_date);
        return (candidate(None, Outcome::NoVersionInForce, detail), None);
    };
    let Some((entry, base)) = find_entry(&version.entries, line) else {
        let outcome = Outcome::NoEntry {
            version: version.name.clone(),
        };
        let detail = no_entry_detail(version, line);
        return (candidate(Some(version), outcome, detail), None);
    };
    let detail = chosen_detail(version, entry, level, base);
    let price = Price {
        amount: entry.amount,
        schedule: schedule.name.clone(),
        version: version.name.clone(),
        level,
        entry_modifiers: entry.modifiers.clone(),
        trace: Vec::new(),
    };
    (
        candidate(Some(version), Outcome::Chosen, detail),
        Some(price),
    )
}

/// Whether `date` falls in `[effective_from, effective_until)`.
fn in_force(version: &Version, date: NaiveDate) -> bool {
    version.effective_from <= date && version.effective_until.is_none_or(|until| date < until)
}

/// The version in force on `date`. Versions should not overlap ([`check_versions_disjoint`]);
/// if they do anyway, the one that started last wins (then the greater name), so the answer
/// does not depend on storage order.
fn version_in_force(versions: &[Version], date: NaiveDate) -> Option<&Version> {
    versions
        .iter()
        .filter(|v| in_force(v, date))
        .max_by(|a, b| (a.effective_from, &a.name).cmp(&(b.effective_from, &b.name)))
}

/// Why no version is in force: the nearest version before and after the service date.
fn no_version_detail(versions: &[Version], date: NaiveDate) -> String {
    if versions.is_empty() {
        return "applies, but has no versions".to_string();
    }
    let ended_before = versions
        .iter()
        .filter_map(|v| {
            v.effective_until
                .filter(|until| *until <= date)
                .map(|u| (u, v))
        })
        .max_by_key(|(until, _)| *until);
    let starts_after = versions
        .iter()
        .filter(|v| v.effective_from > date)
        .min_by_key(|v| v.effective_from);
    let mut parts = Vec::new();
    if let Some((until, v)) = ended_before {
        // `until` is exclusive; people think in last days.
        let last_day = until.pred_opt().unwrap_or(until);
        parts.push(format!(
            "version {} ends {last_day}, before the service date {date}",
            v.name
        ));
    }
    if let Some(v) = starts_after {
        parts.push(format!(
            "version {} starts {}, after the service date {date}",
            v.name, v.effective_from
        ));
    }
    if parts.is_empty() {
        return format!("applies, but no version is in force on {date}");
    }
    format!("applies, but no version is in force: {}", parts.join("; "))
}

/// The entry pricing the line in a version, and whether it is the base price used for a line
/// with modifiers. An entry with exactly the line's modifier set wins over the base price.
fn find_entry<'v>(entries: &'v [FeeEntry], line: &Line) -> Option<(&'v FeeEntry, bool)> {
    let wanted = modifier_set(line.modifiers);
    let for_code = || entries.iter().filter(|e| e.code == line.code);
    let exact = for_code().find(|e| modifier_set(&e.modifiers) == wanted);
    match exact {
        Some(entry) => Some((entry, false)),
        None => for_code()
            .find(|e| e.modifiers.is_empty())
            .map(|e| (e, true)),
    }
}

fn modifiers_text(modifiers: &[String]) -> String {
    if modifiers.is_empty() {
        "no modifiers".to_string()
    } else {
        format!("modifiers {}", modifiers.join(", "))
    }
}

fn no_entry_detail(version: &Version, line: &Line) -> String {
    let has_code = version.entries.iter().any(|e| e.code == line.code);
    if has_code {
        format!(
            "version {} prices {} only with other modifiers and has no base price \
             (line has {})",
            version.name,
            line.code,
            modifiers_text(line.modifiers)
        )
    } else {
        format!("version {} has no entry for {}", version.name, line.code)
    }
}

fn chosen_detail(version: &Version, entry: &FeeEntry, level: Level, base: bool) -> String {
    let how = if base {
        "base price (modifiers not priced separately)".to_string()
    } else {
        format!(
            "entry for {} with {}",
            entry.code,
            modifiers_text(&entry.modifiers)
        )
    };
    format!(
        "priced at {} per unit by version {} ({level}): {how}",
        entry.amount, version.name
    )
}

/// Checks a schedule's versions: each period non-empty (`EFFECTIVE_PERIOD_INVALID` on
/// `versions[i].effective_until`) and no two overlapping (`FEE_SCHEDULE_VERSIONS_OVERLAP` on
/// `versions[i], versions[j]`, the message naming both).
pub fn check_versions_disjoint(versions: &[Version]) -> Result<(), Invalid> {
    for (i, v) in versions.iter().enumerate() {
        if let Some(until) = v.effective_until.filter(|until| *until <= v.effective_from) {
            return Err(Invalid::new(
                format!("versions[{i}].effective_until"),
                "EFFECTIVE_PERIOD_INVALID",
                format!(
                    "version {} ends ({until}, exclusive) on or before it starts ({})",
                    v.name, v.effective_from
                ),
            ));
        }
    }
    let mut by_start: Vec<(usize, &Version)> = versions.iter().enumerate().collect();
    by_start.sort_by_key(|(i, v)| (v.effective_from, *i));
    // Sorted by start, any overlap shows up between neighbours: if an earlier version reaches
    // past a later start, it reaches past every start in between too.
    for pair in by_start.windows(2) {
        if let [(i, a), (j, b)] = pair
            && a.effective_until
                .is_none_or(|until| until > b.effective_from)
        {
            return Err(Invalid::new(
                format!("versions[{i}], versions[{j}]"),
                "FEE_SCHEDULE_VERSIONS_OVERLAP",
                format!(
                    "versions {} ({}) and {} ({}) are both in force on {}",
                    a.name,
                    period_text(a),
                    b.name,
                    period_text(b),
                    b.effective_from
                ),
            ));
        }
    }
    Ok(())
}

fn period_text(v: &Version) -> String {
    match v.effective_until {
        Some(until) => format!("from {} until {until}, exclusive", v.effective_from),
        None => format!("from {}, open-ended", v.effective_from),
    }
}

/// The most entries one version may hold.
pub const MAX_ENTRIES: usize = 20_000;

/// Checks a version's entries: at most [`MAX_ENTRIES`] (`FEE_ENTRIES_TOO_MANY` on `entries`),
/// valid codes and modifiers (codes.rs reasons on `entries[i].code` / `entries[i].modifiers[k]`),
/// amounts above zero (`AMOUNT_NOT_POSITIVE` on `entries[i].amount`), and no two entries with
/// the same code and modifier set (`FEE_ENTRY_DUPLICATE` on `entries[i]`). Stops at the first.
pub fn check_entries(entries: &[FeeEntry]) -> Result<(), Invalid> {
    if entries.len() > MAX_ENTRIES {
        return Err(Invalid::new(
            "entries",
            "FEE_ENTRIES_TOO_MANY",
            format!(
                "a version holds at most {MAX_ENTRIES} entries, got {}",
                entries.len()
            ),
        ));
    }
    let mut seen: HashMap<(&str, BTreeSet<&str>), usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        check_entry(entry).map_err(|e| e.under(&format!("entries[{i}]")))?;
        let key = (entry.code.as_str(), modifier_set(&entry.modifiers));
        if let Some(first) = seen.insert(key, i) {
            return Err(duplicate(
                format!("entries[{i}]"),
                &format!("entries[{first}]"),
            ));
        }
    }
    Ok(())
}

/// Checks one entry's code, modifiers and amount; field paths relative to the entry.
fn check_entry(entry: &FeeEntry) -> Result<(), Invalid> {
    ProcedureCode::parse("code", &entry.code)?;
    Modifier::parse_modifiers("modifiers", &entry.modifiers)?;
    if !entry.amount.is_positive() {
        return Err(amount_not_positive("amount"));
    }
    Ok(())
}

/// The modifiers as a set: an entry for `25, GT` is the same as one for `GT, 25`.
fn modifier_set(modifiers: &[String]) -> BTreeSet<&str> {
    modifiers.iter().map(String::as_str).collect()
}

/// `AMOUNT_NOT_POSITIVE` on `field`.
pub(crate) fn amount_not_positive(field: &str) -> Invalid {
    Invalid::new(field, "AMOUNT_NOT_POSITIVE", "a fee must be more than zero")
}

/// `FEE_ENTRY_DUPLICATE` on `field`, naming where the first one is.
pub(crate) fn duplicate(field: String, first: &str) -> Invalid {
    Invalid::new(
        field,
        "FEE_ENTRY_DUPLICATE",
        format!("the same code and modifiers are already priced at {first}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn entry(code: &str, modifiers: &[&str], cents: i64) -> FeeEntry {
        FeeEntry {
            code: code.to_string(),
            modifiers: strings(modifiers),
            amount: Cents::new(cents),
            description: format!("{code} test"),
        }
    }

    fn version(name: &str, from: &str, until: Option<&str>, entries: Vec<FeeEntry>) -> Version {
        Version {
            name: name.to_string(),
            effective_from: d(from),
            effective_until: until.map(d),
            entries,
        }
    }

    /// A schedule with one open-ended version from 2020 pricing 99213 at `cents`.
    fn simple(name: &str, scope: Scope, cents: i64) -> Schedule {
        Schedule {
            name: name.to_string(),
            scope,
            versions: vec![version(
                "v1",
                "2020-01-01",
                None,
                vec![entry("99213", &[], cents)],
            )],
        }
    }

    /// The facts of a line, owned, so tests can borrow a [`Line`] from it.
    struct Facts {
        code: &'static str,
        modifiers: Vec<String>,
        date: NaiveDate,
        payer: Option<&'static str>,
        contract: Option<&'static str>,
        program: Option<&'static str>,
        lineage: Vec<String>,
    }

    impl Facts {
        fn new() -> Self {
            Facts {
                code: "99213",
                modifiers: Vec::new(),
                date: d("2026-03-15"),
                payer: Some("AETNA"),
                contract: Some("C-1"),
                program: Some("IOP"),
                lineage: strings(&["clinic-a", "IOP", "east", "root"]),
            }
        }

        fn line(&self) -> Line<'_> {
            Line {
                code: self.code,
                modifiers: &self.modifiers,
                service_date: self.date,
                payer: self.payer,
                contract: self.contract,
                program_unit: self.program,
                unit_lineage: &self.lineage,
            }
        }
    }

    fn all_levels() -> Vec<Schedule> {
        vec![
            simple("org", Scope::Organization, 100),
            simple("root-unit", Scope::Unit("root".into()), 200),
            simple("east-unit", Scope::Unit("east".into()), 300),
            simple("clinic-unit", Scope::Unit("clinic-a".into()), 400),
            simple("program", Scope::Program("IOP".into()), 500),
            simple("payer", Scope::Payer("AETNA".into()), 600),
            simple("contract", Scope::Contract("C-1".into()), 700),
        ]
    }

    #[test]
    fn most_specific_level_wins() {
        // Remove schedules from the most specific down; the next one takes over each time.
        let expected = [
            ("contract", Level::Contract, 700),
            ("payer", Level::Payer, 600),
            ("program", Level::Program, 500),
            ("clinic-unit", Level::Unit { distance: 0 }, 400),
            ("east-unit", Level::Unit { distance: 2 }, 300),
            ("root-unit", Level::Unit { distance: 3 }, 200),
            ("org", Level::Organization, 100),
        ];
        let facts = Facts::new();
        let mut schedules = all_levels();
        for (name, level, cents) in expected {
            let price = resolve(&schedules, &facts.line()).unwrap();
            assert_eq!(
                (price.schedule.as_str(), price.level, price.amount),
                (name, level, Cents::new(cents))
            );
            assert_eq!(price.version, "v1");
            schedules.retain(|s| s.name != name);
        }
        assert!(resolve(&schedules, &facts.line()).is_err());
    }

    #[test]
    fn trace_lists_every_schedule_in_resolution_order() {
        let facts = Facts::new();
        let mut schedules = all_levels();
        schedules.push(simple("other-payer", Scope::Payer("CIGNA".into()), 1));
        let price = resolve(&schedules, &facts.line()).unwrap();
        let names: Vec<&str> = price.trace.iter().map(|c| c.schedule.as_str()).collect();
        assert_eq!(
            names,
            [
                "contract",
                "payer",
                "program",
                "clinic-unit",
                "east-unit",
                "root-unit",
                "org",
                "other-payer"
            ]
        );
        assert_eq!(price.trace[0].outcome, Outcome::Chosen);
        for candidate in &price.trace[1..7] {
            assert_eq!(
                candidate.outcome,
                Outcome::Outranked {
                    by: "contract".into()
                }
            );
            assert_eq!(candidate.version.as_deref(), Some("v1"));
            assert!(candidate.detail.contains("schedule contract comes first"));
        }
        assert!(matches!(price.trace[7].outcome, Outcome::NotApplicable(_)));
        assert_eq!(price.trace[7].level, None);
    }

    /// A scope, how to change the default line, and what the message must say.
    type NotApplicableCase = (Scope, fn(&mut Facts), &'static str);

    #[test]
    fn schedules_that_do_not_apply_say_why() {
        let cases: [NotApplicableCase; 9] = [
            (
                Scope::Payer("CIGNA".into()),
                |_| {},
                "billed to payer AETNA",
            ),
            (
                Scope::Payer("CIGNA".into()),
                |f| f.payer = None,
                "not billed to a payer",
            ),
            (Scope::Contract("C-2".into()), |_| {}, "under contract C-1"),
            (
                Scope::Contract("C-2".into()),
                |f| f.contract = None,
                "not billed under a contract",
            ),
            (
                Scope::Program("PHP".into()),
                |_| {},
                "belongs to program IOP",
            ),
            (
                Scope::Program("PHP".into()),
                |f| f.program = None,
                "not part of a program",
            ),
            (
                Scope::Unit("west".into()),
                |_| {},
                "neither the line's unit nor one of its parents",
            ),
            // A program is matched on the line's program unit, not on the lineage.
            (
                Scope::Program("east".into()),
                |_| {},
                "belongs to program IOP",
            ),
            // A unit below the line's unit does not apply.
            (
                Scope::Unit("clinic-a".into()),
                |f| {
                    f.lineage.remove(0);
                },
                "neither",
            ),
        ];
        for (scope, adjust, says) in cases {
            let mut facts = Facts::new();
            adjust(&mut facts);
            let schedules = [simple("s", scope.clone(), 100)];
            let unpriced = resolve(&schedules, &facts.line()).unwrap_err();
            let [candidate] = unpriced.trace.as_slice() else {
                panic!("one candidate expected")
            };
            let Outcome::NotApplicable(why) = &candidate.outcome else {
                panic!("{scope:?}: {:?}", candidate.outcome)
            };
            assert!(why.contains(says), "{scope:?}: {why}");
            assert_eq!(candidate.detail, *why);
            assert_eq!((candidate.level, candidate.version.as_ref()), (None, None));
        }
    }

    #[test]
    fn ties_at_one_level_go_to_the_first_name() {
        let facts = Facts::new();
        let schedules = [
            simple("payer-b", Scope::Payer("AETNA".into()), 2),
            simple("payer-a", Scope::Payer("AETNA".into()), 1),
            simple("payer-c", Scope::Payer("AETNA".into()), 3),
        ];
        let price = resolve(&schedules, &facts.line()).unwrap();
        assert_eq!(
            (price.schedule.as_str(), price.amount),
            ("payer-a", Cents::new(1))
        );
        let order: Vec<_> = price
            .trace
            .iter()
            .map(|c| (c.schedule.as_str(), &c.outcome))
            .collect();
        let by_a = Outcome::Outranked {
            by: "payer-a".into(),
        };
        assert_eq!(
            order,
            [
                ("payer-a", &Outcome::Chosen),
                ("payer-b", &by_a),
                ("payer-c", &by_a)
            ]
        );
    }

    #[test]
    fn a_schedule_that_cannot_price_passes_to_the_next() {
        let facts = Facts::new();
        let schedules = [
            Schedule {
                name: "contract".into(),
                scope: Scope::Contract("C-1".into()),
                versions: vec![version(
                    "2026",
                    "2026-01-01",
                    None,
                    vec![entry("90837", &[], 1)],
                )],
            },
            Schedule {
                name: "payer".into(),
                scope: Scope::Payer("AETNA".into()),
                versions: vec![version(
                    "2025",
                    "2025-01-01",
                    Some("2026-01-01"),
                    vec![entry("99213", &[], 2)],
                )],
            },
            simple("org", Scope::Organization, 3),
        ];
        let price = resolve(&schedules, &facts.line()).unwrap();
        assert_eq!(
            (price.schedule.as_str(), price.level),
            ("org", Level::Organization)
        );
        let trace = &price.trace;
        assert_eq!(
            trace[0].outcome,
            Outcome::NoEntry {
                version: "2026".into()
            }
        );
        assert_eq!(trace[0].version.as_deref(), Some("2026"));
        assert_eq!(trace[0].detail, "version 2026 has no entry for 99213");
        assert_eq!(trace[1].outcome, Outcome::NoVersionInForce);
        assert_eq!(trace[1].version, None);
        assert_eq!(
            trace[1].detail,
            "applies, but no version is in force: version 2025 ends 2025-12-31, \
             before the service date 2026-03-15"
        );
        assert_eq!(trace[2].outcome, Outcome::Chosen);
        assert!(
            trace[2]
                .detail
                .contains("priced at 0.03 per unit by version v1")
        );
    }

    #[test]
    fn version_in_force_is_from_inclusive_until_exclusive() {
        let schedule = |versions| Schedule {
            name: "org".into(),
            scope: Scope::Organization,
            versions,
        };
        let two = || {
            vec![
                version(
                    "2025",
                    "2025-01-01",
                    Some("2026-01-01"),
                    vec![entry("99213", &[], 25)],
                ),
                version(
                    "2026",
                    "2026-01-01",
                    Some("2026-07-01"),
                    vec![entry("99213", &[], 26)],
                ),
            ]
        };
        let cases = [
            ("2025-01-01", Some("2025")),
            ("2025-12-31", Some("2025")),
            ("2026-01-01", Some("2026")),
            ("2026-06-30", Some("2026")),
            ("2026-07-01", None),
            ("2024-12-31", None),
        ];
        for (date, expected) in cases {
            let mut facts = Facts::new();
            facts.date = d(date);
            let result = resolve(&[schedule(two())], &facts.line());
            assert_eq!(
                result.as_ref().ok().map(|p| p.version.as_str()),
                expected,
                "{date}"
            );
        }

        let mut facts = Facts::new();
        facts.date = d("2026-07-04");
        let trace = resolve(&[schedule(two())], &facts.line())
            .unwrap_err()
            .trace;
        assert!(
            trace[0]
                .detail
                .contains("version 2026 ends 2026-06-30, before the service date 2026-07-04"),
            "{}",
            trace[0].detail
        );
        facts.date = d("2024-06-01");
        let trace = resolve(&[schedule(two())], &facts.line())
            .unwrap_err()
            .trace;
        assert!(
            trace[0]
                .detail
                .contains("version 2025 starts 2025-01-01, after the service date")
        );
        let trace = resolve(&[schedule(Vec::new())], &facts.line())
            .unwrap_err()
            .trace;
        assert_eq!(trace[0].detail, "applies, but has no versions");
    }

    #[test]
    fn entry_matching_prefers_the_exact_modifier_set_then_the_base_price() {
        let entries = vec![
            entry("99213", &[], 100),
            entry("99213", &["95"], 110),
            entry("99213", &["25", "GT"], 120),
            entry("90837", &["GT"], 200),
        ];
        // (code, line modifiers, expected amount and entry modifiers, detail mentions)
        type Expected = Option<(i64, &'static [&'static str], &'static str)>;
        let cases: [(&str, &[&str], Expected); 7] = [
            ("99213", &[], Some((100, &[], "no modifiers"))),
            ("99213", &["95"], Some((110, &["95"], "modifiers 95"))),
            (
                "99213",
                &["GT", "25"],
                Some((120, &["25", "GT"], "modifiers 25, GT")),
            ),
            (
                "99213",
                &["59"],
                Some((100, &[], "base price (modifiers not priced separately)")),
            ),
            ("99213", &["25"], Some((100, &[], "base price"))),
            ("90837", &["GT"], Some((200, &["GT"], "modifiers GT"))),
            ("90837", &[], None),
        ];
        for (code, modifiers, expected) in cases {
            let mut facts = Facts::new();
            facts.code = code;
            facts.modifiers = strings(modifiers);
            let schedules = [Schedule {
                name: "org".into(),
                scope: Scope::Organization,
                versions: vec![version("v", "2020-01-01", None, entries.clone())],
            }];
            let result = resolve(&schedules, &facts.line());
            match (result, expected) {
                (Ok(price), Some((cents, entry_modifiers, says))) => {
                    assert_eq!(price.amount, Cents::new(cents), "{code} {modifiers:?}");
                    assert_eq!(price.entry_modifiers, strings(entry_modifiers));
                    assert!(
                        price.trace[0].detail.contains(says),
                        "{}",
                        price.trace[0].detail
                    );
                }
                (Err(unpriced), None) => {
                    assert_eq!(
                        unpriced.trace[0].outcome,
                        Outcome::NoEntry {
                            version: "v".into()
                        }
                    );
                    assert!(
                        unpriced.trace[0]
                            .detail
                            .contains("only with other modifiers")
                    );
                }
                (result, expected) => panic!("{code} {modifiers:?}: {result:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn overlapping_versions_still_resolve_deterministically() {
        let mut versions = vec![
            version("late", "2026-02-01", None, vec![entry("99213", &[], 2)]),
            version("early", "2026-01-01", None, vec![entry("99213", &[], 1)]),
        ];
        let facts = Facts::new();
        for _ in 0..2 {
            let schedules = [Schedule {
                name: "org".into(),
                scope: Scope::Organization,
                versions: versions.clone(),
            }];
            assert_eq!(resolve(&schedules, &facts.line()).unwrap().version, "late");
            versions.reverse();
        }
    }

    #[test]
    fn version_periods() {
        let v =
            |name: &str, from: &str, until: Option<&str>| version(name, from, until, Vec::new());
        type Case = (Vec<Version>, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![v("a", "2026-01-01", None)], None),
            (
                vec![
                    v("b", "2026-01-01", None),
                    v("a", "2025-01-01", Some("2026-01-01")),
                ],
                None,
            ),
            (
                vec![v("a", "2026-01-01", Some("2026-01-01"))],
                Some(("versions[0].effective_until", "EFFECTIVE_PERIOD_INVALID")),
            ),
            (
                vec![
                    v("ok", "2020-01-01", Some("2021-01-01")),
                    v("a", "2026-02-01", Some("2026-01-01")),
                ],
                Some(("versions[1].effective_until", "EFFECTIVE_PERIOD_INVALID")),
            ),
            (
                vec![
                    v("b", "2026-01-01", None),
                    v("a", "2025-01-01", Some("2026-01-02")),
                ],
                Some(("versions[1], versions[0]", "FEE_SCHEDULE_VERSIONS_OVERLAP")),
            ),
            (
                vec![
                    v("a", "2025-01-01", None),
                    v("b", "2026-01-01", Some("2027-01-01")),
                ],
                Some(("versions[0], versions[1]", "FEE_SCHEDULE_VERSIONS_OVERLAP")),
            ),
            (
                // Wholly inside another, not adjacent in storage order.
                vec![
                    v("wide", "2020-01-01", Some("2030-01-01")),
                    v("gap", "2031-01-01", None),
                    v("inner", "2024-01-01", Some("2025-01-01")),
                ],
                Some(("versions[0], versions[2]", "FEE_SCHEDULE_VERSIONS_OVERLAP")),
            ),
        ];
        for (versions, expected) in cases {
            let result = check_versions_disjoint(&versions);
            let got = result.as_ref().err().map(|e| (e.field.as_str(), e.reason));
            assert_eq!(got, expected, "{versions:?}");
            if let Err(e) = result
                && e.reason == "FEE_SCHEDULE_VERSIONS_OVERLAP"
            {
                let names: Vec<_> = versions.iter().map(|v| v.name.as_str()).collect();
                let named = names
                    .iter()
                    .filter(|n| e.message.contains(&format!(" {n} ")))
                    .count();
                assert_eq!(named, 2, "{}", e.message);
            }
        }
    }

    #[test]
    fn entry_checks() {
        let ok = vec![
            entry("99213", &[], 100),
            entry("99213", &["25"], 100),
            entry("99213", &["25", "GT"], 100),
            entry("G0506", &[], 1),
        ];
        assert_eq!(check_entries(&ok), Ok(()));
        assert_eq!(check_entries(&[]), Ok(()));

        let cases: [(FeeEntry, &str, &str); 7] = [
            (
                entry("9921", &[], 1),
                "entries[4].code",
                "PROCEDURE_CODE_INVALID",
            ),
            (
                entry("99214", &["g"], 1),
                "entries[4].modifiers[0]",
                "MODIFIER_INVALID",
            ),
            (
                entry("99214", &["25", "25"], 1),
                "entries[4].modifiers[1]",
                "MODIFIER_REPEATED",
            ),
            (
                entry("99214", &["25", "59", "GT", "95", "XE"], 1),
                "entries[4].modifiers",
                "MODIFIERS_TOO_MANY",
            ),
            (
                entry("99214", &[], 0),
                "entries[4].amount",
                "AMOUNT_NOT_POSITIVE",
            ),
            (
                entry("99214", &[], -5),
                "entries[4].amount",
                "AMOUNT_NOT_POSITIVE",
            ),
            // Same set in another order.
            (
                entry("99213", &["GT", "25"], 1),
                "entries[4]",
                "FEE_ENTRY_DUPLICATE",
            ),
        ];
        for (bad, field, reason) in cases {
            let mut entries = ok.clone();
            entries.push(bad);
            let error = check_entries(&entries).unwrap_err();
            assert_eq!((error.field.as_str(), error.reason), (field, reason));
        }
        let duplicate =
            check_entries(&[entry("99213", &[], 1), entry("99213", &[], 2)]).unwrap_err();
        assert!(duplicate.message.contains("entries[0]"));

        let many: Vec<FeeEntry> = (0..=MAX_ENTRIES)
            .map(|i| entry(&format!("{:05}", i), &[], 1))
            .collect();
        assert_eq!(
            check_entries(&many).unwrap_err().reason,
            "FEE_ENTRIES_TOO_MANY"
        );
        assert_eq!(check_entries(&many[..MAX_ENTRIES]), Ok(()));
    }

    // ---- property: the trace is complete and the winner is the first that can price ----

    const UNITS: [&str; 4] = ["u0", "u1", "u2", "u3"];

    fn arb_scope() -> impl Strategy<Value = Scope> {
        prop_oneof![
            Just(Scope::Organization),
            (0..UNITS.len()).prop_map(|i| Scope::Unit(UNITS[i].to_string())),
            prop::sample::select(vec!["P1", "P2"]).prop_map(|p| Scope::Program(p.into())),
            prop::sample::select(vec!["K1", "K2"]).prop_map(|c| Scope::Contract(c.into())),
            prop::sample::select(vec!["Y1", "Y2"]).prop_map(|p| Scope::Payer(p.into())),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = FeeEntry> {
        (
            prop::sample::select(vec!["99213", "99214"]),
            prop::sample::subsequence(vec!["25", "GT"], 0..=2),
            1i64..1000,
        )
            .prop_map(|(code, mods, cents)| entry(code, &mods, cents))
    }

    /// Up to three consecutive versions (gaps allowed, never overlapping; only the last may be
    /// open-ended), starting in January 2026.
    fn arb_versions() -> impl Strategy<Value = Vec<Version>> {
        let piece = (
            0i64..5,
            prop::option::of(1i64..10),
            prop::collection::vec(arb_entry(), 0..4),
        );
        prop::collection::vec(piece, 0..3).prop_map(|pieces| {
            let mut versions = Vec::new();
            let mut next = d("2026-01-01");
            for (i, (gap, length, entries)) in pieces.into_iter().enumerate() {
                let from = next + chrono::Duration::days(gap);
                let until = length.map(|l| from + chrono::Duration::days(l));
                versions.push(Version {
                    name: format!("v{i}"),
                    effective_from: from,
                    effective_until: until,
                    entries,
                });
                match until {
                    Some(until) => next = until,
                    None => break,
                }
            }
            versions
        })
    }

    fn arb_schedules() -> impl Strategy<Value = Vec<Schedule>> {
        prop::collection::vec((arb_scope(), arb_versions()), 0..8)
            .prop_map(|items| {
                items
                    .into_iter()
                    .enumerate()
                    // Names are unique but unrelated to the input order.
                    .map(|(i, (scope, versions))| Schedule {
                        name: format!("s{}", (i * 5) % 8),
                        scope,
                        versions,
                    })
                    .collect()
            })
            .prop_shuffle()
    }

    /// The level per the rules, written independently of `level_for`.
    fn oracle_level(scope: &Scope, line: &Line) -> Option<Level> {
        match scope {
            Scope::Organization => Some(Level::Organization),
            Scope::Contract(c) => (line.contract == Some(c.as_str())).then_some(Level::Contract),
            Scope::Payer(p) => (line.payer == Some(p.as_str())).then_some(Level::Payer),
            Scope::Program(p) => (line.program_unit == Some(p.as_str())).then_some(Level::Program),
            Scope::Unit(u) => line
                .unit_lineage
                .iter()
                .position(|x| x == u)
                .map(|distance| Level::Unit { distance }),
        }
    }

    fn oracle_can_price(schedule: &Schedule, line: &Line) -> bool {
        let wanted: BTreeSet<&str> = line.modifiers.iter().map(String::as_str).collect();
        schedule
            .versions
            .iter()
            .filter(|v| {
                v.effective_from <= line.service_date
                    && v.effective_until.is_none_or(|u| line.service_date < u)
            })
            .any(|v| {
                v.entries.iter().any(|e| {
                    e.code == line.code
                        && (e.modifiers.is_empty() || modifier_set(&e.modifiers) == wanted)
                })
            })
    }

    proptest! {
        #[test]
        fn trace_is_complete_and_winner_is_first_that_can_price(
            schedules in arb_schedules(),
            code in prop::sample::select(vec!["99213", "99214"]),
            modifiers in prop::sample::subsequence(vec!["25", "GT", "59"], 0..=2),
            day in 0i64..30,
            payer in prop::option::of(prop::sample::select(vec!["Y1", "Y2"])),
            contract in prop::option::of(prop::sample::select(vec!["K1", "K2"])),
            program in prop::option::of(prop::sample::select(vec!["P1", "P2"])),
            depth in 0usize..=UNITS.len(),
        ) {
            let modifiers = strings(&modifiers);
            let lineage = strings(&UNITS[UNITS.len() - depth..]);
            let line = Line {
                code,
                modifiers: &modifiers,
                service_date: d("2026-01-01") + chrono::Duration::days(day),
                payer,
                contract,
                program_unit: program,
                unit_lineage: &lineage,
            };
            for schedule in &schedules {
                prop_assert_eq!(check_versions_disjoint(&schedule.versions), Ok(()));
            }
            let result = resolve(&schedules, &line);
            let trace = match &result {
                Ok(price) => &price.trace,
                Err(unpriced) => &unpriced.trace,
            };
            let mut traced: Vec<&str> = trace.iter().map(|c| c.schedule.as_str()).collect();
            let mut given: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
            traced.sort();
            given.sort();
            prop_assert_eq!(traced, given);

            let expected = schedules
                .iter()
                .filter_map(|s| oracle_level(&s.scope, &line).map(|level| (level, s)))
                .filter(|(_, s)| oracle_can_price(s, &line))
                .min_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)))
                .map(|(level, s)| (s.name.as_str(), level));
            let got = result.as_ref().ok().map(|p| (p.schedule.as_str(), p.level));
            prop_assert_eq!(got, expected);

            let chosen = trace.iter().filter(|c| c.outcome == Outcome::Chosen).count();
            prop_assert_eq!(chosen, usize::from(expected.is_some()));
            // Levels in the trace never go back up (resolution order), and nothing before the
            // chosen one is Outranked.
            let levels: Vec<Level> = trace.iter().filter_map(|c| c.level).collect();
            prop_assert!(levels.windows(2).all(|w| w[0] <= w[1]));
            if let Ok(price) = &result {
                let position = trace.iter().position(|c| c.outcome == Outcome::Chosen).unwrap();
                let before_ok = trace[..position]
                    .iter()
                    .all(|c| !matches!(c.outcome, Outcome::Outranked { .. }));
                prop_assert!(before_ok, "outranked before the chosen one");
                let after_ok = trace[position + 1..].iter().all(|c| match &c.outcome {
                    Outcome::Outranked { by } => *by == price.schedule,
                    Outcome::NotApplicable(_) => true,
                    _ => false,
                });
                prop_assert!(after_ok, "after the chosen one: outranked or not applicable");
            }
        }
    }
}
