//! Assembly: open charge lines become draft claims.
//!
//! For each line, in this order:
//! 1. Is it claimed at all? Self-pay (no payer) and invoiced-only units (claim form `NONE`) are
//!    set aside in [`Assembly::not_claimed`]; UB-04 units (837I is not written yet) and unknown
//!    claim forms are set aside in [`Assembly::held`]. `UNSPECIFIED` is claimed on the CMS-1500:
//!    the service resolves a unit's inherited form, so one still unspecified means the default,
//!    professional.
//! 2. Which billing entity bills it ([`Routing`]): the most specific matching [`RoutingRule`],
//!    else a contract in force for its payer covering its unit, else its unit profile's entity.
//! 3. Which claim it goes on: lines are grouped by [`ClaimKey`] (entity × payer × patient × date
//!    of service) and, within a key, by rendering provider and place of service, because an 837P
//!    claim carries ONE of each (2310B, CLM05-1). Each group is packed first-fit into claims of at
//!    most [`MAX_CLAIM_LINES`] lines and [`MAX_CLAIM_DIAGNOSES`] distinct diagnoses.
//!
//! Determinism: lines are first sorted by charge name (stable), so the output depends on the set
//! of lines, not on the order the database returned them (except that ties between equally
//! specific routing rules go to the rule given first). Claims come out sorted by (key, provider,
//! place of service, part); set-aside lines by charge name.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use super::{ChargeLine, ContractTerms, RoutingRule};
use crate::domain::codes::DiagnosisCode;
use crate::domain::money::Cents;
use crate::domain::x12::Frequency;

/// Reason a line is not claimed: it has no payer (the patient pays; invoiced instead).
pub const SELF_PAY: &str = "SELF_PAY";
/// Reason a line is not claimed: its unit's claim form is `NONE` (invoiced, e.g. to an employer).
pub const INVOICED_NOT_CLAIMED: &str = "INVOICED_NOT_CLAIMED";
/// Reason a line is held: its unit bills on the UB-04, and the 837I is not written yet. Never
/// sent as an 837P instead.
pub const CLAIM_FORM_UB04_NOT_SUPPORTED: &str = "CLAIM_FORM_UB04_NOT_SUPPORTED";
/// Reason a line is held: its claim form is none of `CMS1500`, `UB04`, `NONE`, `UNSPECIFIED`.
pub const CLAIM_FORM_UNKNOWN: &str = "CLAIM_FORM_UNKNOWN";

/// Most service lines one 837P claim holds (loop 2400 repeat).
pub const MAX_CLAIM_LINES: usize = 50;
/// Most diagnoses one 837P claim holds (HI01..HI12).
pub const MAX_CLAIM_DIAGNOSES: usize = 12;

/// Why a line is billed by the entity it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoutedBy {
    /// An explicit routing rule matched; its reason.
    Rule(String),
    /// A contract in force covered the line; its name.
    Contract(String),
    /// Neither: the unit's billing profile's entity.
    Profile,
}

/// The billing entity of a line and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Routing {
    /// The billing entity (qualified name).
    pub entity: String,
    /// What decided it.
    pub because: RoutedBy,
}

/// What puts lines on the same claim. Ordered field by field, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    /// The billing entity (after routing).
    pub billing_entity: String,
    /// The payer.
    pub payer: String,
    /// The patient.
    pub patient: String,
    /// The date of service.
    pub service_date: NaiveDate,
}

/// A charge line on a draft claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftLine {
    /// The charge as given.
    pub line: ChargeLine,
    /// Its billing entity and why.
    pub routing: Routing,
    /// 1-based positions in the claim's `diagnoses` of the line's diagnoses, in the line's order
    /// (repeats removed). The scrubber checks there are 1 to 4.
    pub diagnosis_pointers: Vec<u8>,
}

/// A claim assembled from charges, not yet scrubbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftClaim {
    /// Entity × payer × patient × date of service.
    pub key: ClaimKey,
    /// The rendering provider of every line (one per claim: loop 2310B).
    pub provider: String,
    /// The place of service of every line (one per claim: CLM05-1).
    pub place_of_service: String,
    /// 0-based number among the claims of the same key, provider and place of service (more
    /// than one when lines or diagnoses overflow a claim).
    pub part: usize,
    /// The claim's distinct diagnoses, in order of first appearance over its lines; the first
    /// is the principal diagnosis. Dotted form when the code is valid, as given otherwise.
    pub diagnoses: Vec<String>,
    /// The lines, sorted by charge name.
    pub lines: Vec<DraftLine>,
    /// The sum of the lines' amounts.
    pub total: Cents,
    /// `Original` from assembly; the service sets `Corrected`/`Void` when it rebuilds a claim
    /// the payer already holds.
    pub frequency: Frequency,
    /// "Split claim": keys of OTHER claims (different entity or payer) holding lines of the same
    /// encounter (same patient, date and unit) as this one; sorted, no repeats. Empty when the
    /// encounter is billed whole on this claim.
    pub split_from: Vec<ClaimKey>,
}

/// A line that is not on a claim, and why (a reason constant of this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The charge as given.
    pub line: ChargeLine,
    /// [`SELF_PAY`], [`INVOICED_NOT_CLAIMED`], [`CLAIM_FORM_UB04_NOT_SUPPORTED`] or
    /// [`CLAIM_FORM_UNKNOWN`].
    pub reason: &'static str,
}

/// The outcome of [`assemble`]: every input line is in exactly one of the three.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assembly {
    /// Draft claims, sorted by (key, provider, place of service, part).
    pub claims: Vec<DraftClaim>,
    /// Lines that are never claimed: [`SELF_PAY`], [`INVOICED_NOT_CLAIMED`].
    pub not_claimed: Vec<SetAside>,
    /// Lines that cannot be claimed yet: [`CLAIM_FORM_UB04_NOT_SUPPORTED`], [`CLAIM_FORM_UNKNOWN`].
    pub held: Vec<SetAside>,
}

/// What happens to one line.
enum Disposition {
    Claim,
    NotClaimed(&'static str),
    Held(&'static str),
}

fn disposition(line: &ChargeLine) -> Disposition {
    if line.payer.trim().is_empty() {
        return Disposition::NotClaimed(SELF_PAY);
    }
    match line.claim_form.as_str() {
        "CMS1500" | "UNSPECIFIED" => Disposition::Claim,
        "NONE" => Disposition::NotClaimed(INVOICED_NOT_CLAIMED),
        "UB04" => Disposition::Held(CLAIM_FORM_UB04_NOT_SUPPORTED),
        _ => Disposition::Held(CLAIM_FORM_UNKNOWN),
    }
}

/// Groups lines into draft claims (see the module documentation for the rules and order).
///
/// `in_subtree(unit, ancestor)` tells whether `unit` lies in the subtree of `ancestor`; a unit
/// always counts as inside its own subtree, whatever the closure says for `unit == ancestor`.
/// It is used for contract coverage and for the `unit` condition of routing rules.
pub fn assemble(
    lines: &[ChargeLine],
    contracts: &[ContractTerms],
    rules: &[RoutingRule],
    in_subtree: &dyn Fn(&str, &str) -> bool,
) -> Assembly {
    let mut sorted: Vec<&ChargeLine> = lines.iter().collect();
    sorted.sort_by(|a, b| a.charge.cmp(&b.charge));
    let mut assembly = Assembly::default();
    let mut groups: BTreeMap<GroupKey, Vec<(ChargeLine, Routing)>> = BTreeMap::new();
    for line in sorted {
        let set_aside = |reason| SetAside {
            line: line.clone(),
            reason,
        };
        match disposition(line) {
            Disposition::NotClaimed(reason) => assembly.not_claimed.push(set_aside(reason)),
            Disposition::Held(reason) => assembly.held.push(set_aside(reason)),
            Disposition::Claim => {
                let routing = route(line, contracts, rules, in_subtree);
                let key = GroupKey::of(line, &routing);
                groups.entry(key).or_default().push((line.clone(), routing));
            }
        }
    }
    for (key, group) in groups {
        assembly.claims.extend(pack(key, group));
    }
    mark_splits(&mut assembly.claims);
    assembly
}

/// Lines that may share a claim: same key, rendering provider and place of service.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    key: ClaimKey,
    provider: String,
    place_of_service: String,
}

impl GroupKey {
    fn of(line: &ChargeLine, routing: &Routing) -> Self {
        Self {
            key: ClaimKey {
                billing_entity: routing.entity.clone(),
                payer: line.payer.clone(),
                patient: line.patient.clone(),
                service_date: line.service_date,
            },
            provider: line.provider.clone(),
            place_of_service: line.place_of_service.clone(),
        }
    }
}

/// Whether `unit` is `ancestor` or inside its subtree.
fn covers(unit: &str, ancestor: &str, in_subtree: &dyn Fn(&str, &str) -> bool) -> bool {
    unit == ancestor || in_subtree(unit, ancestor)
}

/// A rule's specificity (how many conditions it sets) when it matches the line.
fn rule_match(
    rule: &RoutingRule,
    line: &ChargeLine,
    in_subtree: &dyn Fn(&str, &str) -> bool,
) -> Option<usize> {
    let code = rule.code.as_ref().map(|code| *code == line.code);
    let unit = rule
        .unit
        .as_ref()
        .map(|u| covers(&line.unit, u, in_subtree));
    let payer = rule.payer.as_ref().map(|payer| *payer == line.payer);
    let conditions = [code, unit, payer];
    let set = conditions.iter().flatten().count();
    let all_hold = conditions.iter().flatten().all(|holds| *holds);
    (set > 0 && all_hold).then_some(set)
}

/// Rule (most specific, then first given) > contract > profile.
fn route(
    line: &ChargeLine,
    contracts: &[ContractTerms],
    rules: &[RoutingRule],
    in_subtree: &dyn Fn(&str, &str) -> bool,
) -> Routing {
    let mut best: Option<(usize, &RoutingRule)> = None;
    for rule in rules {
        if let Some(specificity) = rule_match(rule, line, in_subtree) {
            // Strictly greater: on a tie the earlier rule stays.
            if best.is_none_or(|(current, _)| specificity > current) {
                best = Some((specificity, rule));
            }
        }
    }
    if let Some((_, rule)) = best {
        return Routing {
            entity: rule.billing_entity.clone(),
            because: RoutedBy::Rule(rule.reason.clone()),
        };
    }
    if let Some(contract) = contract_for(line, contracts, in_subtree) {
        return Routing {
            entity: contract.billing_entity.clone(),
            because: RoutedBy::Contract(contract.name.clone()),
        };
    }
    Routing {
        entity: line.billing_entity.clone(),
        because: RoutedBy::Profile,
    }
}

/// The contract routing a line: among those in force at its date of service, with its payer,
/// covering its unit, the one the line names (its unit's accepted-payer entry) if it is among
/// them, else the first given.
fn contract_for<'a>(
    line: &ChargeLine,
    contracts: &'a [ContractTerms],
    in_subtree: &dyn Fn(&str, &str) -> bool,
) -> Option<&'a ContractTerms> {
    let applies = |c: &&ContractTerms| {
        c.payer == line.payer
            && c.in_force(line.service_date)
            && c.units.iter().any(|u| covers(&line.unit, u, in_subtree))
    };
    let named = contracts
        .iter()
        .filter(applies)
        .find(|c| !line.contract.is_empty() && c.name == line.contract);
    named.or_else(|| contracts.iter().find(applies))
}

/// The dotted form of a valid code, so `E119` and `E11.9` are one diagnosis; invalid codes stay
/// as given for the scrubber to report.
fn normalised(code: &str) -> String {
    DiagnosisCode::parse("", code).map_or_else(|_| code.to_string(), |c| c.as_str().to_string())
}

/// A line's distinct diagnoses, normalised, in its order.
fn line_diagnoses(line: &ChargeLine) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for code in line.diagnoses.iter().map(|c| normalised(c)) {
        if !out.contains(&code) {
            out.push(code);
        }
    }
    out
}

/// A claim being filled.
struct Open {
    diagnoses: Vec<String>,
    lines: Vec<(ChargeLine, Routing, Vec<String>)>,
}

impl Open {
    /// Whether the line fits without passing the line or diagnosis limits.
    fn fits(&self, diagnoses: &[String]) -> bool {
        let new = diagnoses
            .iter()
            .filter(|d| !self.diagnoses.contains(d))
            .count();
        self.lines.len() < MAX_CLAIM_LINES && self.diagnoses.len() + new <= MAX_CLAIM_DIAGNOSES
    }

    fn push(&mut self, line: ChargeLine, routing: Routing, diagnoses: Vec<String>) {
        for code in &diagnoses {
            if !self.diagnoses.contains(code) {
                self.diagnoses.push(code.clone());
            }
        }
        self.lines.push((line, routing, diagnoses));
    }
}

/// First-fit packing of one group's lines into claims. A line that alone has more than 12
/// diagnoses still gets a claim of its own (the scrubber reports it) rather than vanishing.
fn pack(key: GroupKey, group: Vec<(ChargeLine, Routing)>) -> Vec<DraftClaim> {
    let mut open: Vec<Open> = Vec::new();
    for (line, routing) in group {
        let diagnoses = line_diagnoses(&line);
        match open.iter_mut().find(|claim| claim.fits(&diagnoses)) {
            Some(claim) => claim.push(line, routing, diagnoses),
            None => {
                let mut claim = Open {
                    diagnoses: Vec::new(),
                    lines: Vec::new(),
                };
                claim.push(line, routing, diagnoses);
                open.push(claim);
            }
        }
    }
    open.into_iter()
        .enumerate()
        .map(|(part, claim)| finish(&key, part, claim))
        .collect()
}

fn finish(key: &GroupKey, part: usize, claim: Open) -> DraftClaim {
    let lines: Vec<DraftLine> = claim
        .lines
        .into_iter()
        .map(|(line, routing, diagnoses)| DraftLine {
            diagnosis_pointers: pointers(&claim.diagnoses, &diagnoses),
            line,
            routing,
        })
        .collect();
    DraftClaim {
        key: key.key.clone(),
        provider: key.provider.clone(),
        place_of_service: key.place_of_service.clone(),
        part,
        diagnoses: claim.diagnoses,
        total: total(&lines),
        lines,
        frequency: Frequency::Original,
        split_from: Vec::new(),
    }
}

/// 1-based positions of `line` codes in `claim` codes.
fn pointers(claim: &[String], line: &[String]) -> Vec<u8> {
    line.iter()
        .filter_map(|code| claim.iter().position(|c| c == code))
        .filter_map(|i| u8::try_from(i + 1).ok())
        .collect()
}

/// The sum of the lines' amounts. Charges are bounded by `MAX_AMOUNT`, so 50 of them cannot
/// overflow; should corrupt input overflow anyway, the sum saturates (and the scrubber refuses
/// the out-of-range line) instead of panicking.
fn total(lines: &[DraftLine]) -> Cents {
    lines
        .iter()
        .map(|l| l.line.amount)
        .fold(Cents::ZERO, |sum, amount| {
            sum.checked_add(amount).unwrap_or(if amount.is_negative() {
                Cents::new(i64::MIN)
            } else {
                Cents::new(i64::MAX)
            })
        })
}

/// Fills `split_from`: for each encounter (patient, date, unit), the keys of every claim that
/// holds some of its lines; each claim lists the other keys of its encounters.
fn mark_splits(claims: &mut [DraftClaim]) {
    let mut holders: BTreeMap<(String, NaiveDate, String), BTreeSet<ClaimKey>> = BTreeMap::new();
    for claim in claims.iter() {
        for line in &claim.lines {
            holders
                .entry(encounter(&claim.key, &line.line))
                .or_default()
                .insert(claim.key.clone());
        }
    }
    for claim in claims.iter_mut() {
        let mut siblings = BTreeSet::new();
        for line in &claim.lines {
            if let Some(keys) = holders.get(&encounter(&claim.key, &line.line)) {
                siblings.extend(keys.iter().filter(|k| **k != claim.key).cloned());
            }
        }
        claim.split_from = siblings.into_iter().collect();
    }
}

fn encounter(key: &ClaimKey, line: &ChargeLine) -> (String, NaiveDate, String) {
    (key.patient.clone(), key.service_date, line.unit.clone())
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
