//! Revenue reports, the pure part: the amounts a cell holds, and the roll-up of per-unit totals
//! over the unit tree (a unit's subtree total is its own plus its children's subtree totals).

use std::collections::{BTreeMap, HashMap};
use std::ops::AddAssign;

use crate::domain::money::Cents;

/// What a cell of a revenue report sums, from the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Charges posted (positive).
    pub charged: Cents,
    /// Charges reversed by corrections (negative).
    pub reversed: Cents,
    /// Payments received (negative).
    pub paid: Cents,
    /// Adjustments and write-offs (negative).
    pub adjusted: Cents,
}

impl Amounts {
    /// What is still owed: the sum of every movement.
    pub fn outstanding(&self) -> Cents {
        self.charged + self.reversed + self.paid + self.adjusted
    }
}

impl AddAssign for Amounts {
    fn add_assign(&mut self, other: Amounts) {
        self.charged = self.charged + other.charged;
        self.reversed = self.reversed + other.reversed;
        self.paid = self.paid + other.paid;
        self.adjusted = self.adjusted + other.adjusted;
    }
}

/// Each unit's subtree total: its own amounts plus every descendant's. `tree` lists every unit with
/// its parent ("" for a root); `own` holds the units that have amounts. Units outside the tree
/// (deleted since) count for themselves only. A cycle in `tree` (which Org refuses) cannot loop:
/// each unit is walked up at most `tree.len()` steps.
pub fn subtree_totals(
    own: &HashMap<String, Amounts>,
    tree: &[(String, String)],
) -> BTreeMap<String, Amounts> {
    let parent: HashMap<&str, &str> = tree
        .iter()
        .map(|(unit, parent)| (unit.as_str(), parent.as_str()))
        .collect();
    let mut totals: BTreeMap<String, Amounts> = tree
        .iter()
        .map(|(unit, _)| (unit.clone(), Amounts::default()))
        .collect();
    for (unit, amounts) in own {
        let mut at = unit.as_str();
        for _ in 0..=tree.len() {
            *totals.entry(at.to_string()).or_default() += *amounts;
            match parent.get(at) {
                Some(up) if !up.is_empty() => at = up,
                _ => break,
            }
        }
    }
    totals
}

/// Each unit's effective reporting tags (its program or workflow, in the billing office's words):
/// its own tags when it has any, else its nearest ancestor's, as Org inherits workflow rules.
/// `tree` lists every unit with its parent ("" for a root) and its own tags. A cycle (which Org
/// refuses) cannot loop: each unit is walked up at most `tree.len()` steps.
pub fn effective_tags(tree: &[(String, String, Vec<String>)]) -> HashMap<String, Vec<String>> {
    let by_name: HashMap<&str, (&str, &[String])> = tree
        .iter()
        .map(|(unit, parent, tags)| (unit.as_str(), (parent.as_str(), tags.as_slice())))
        .collect();
    let mut effective = HashMap::with_capacity(tree.len());
    for (unit, _, _) in tree {
        let mut at = unit.as_str();
        for _ in 0..=tree.len() {
            let Some((parent, tags)) = by_name.get(at) else {
                break;
            };
            if !tags.is_empty() {
                effective.insert(unit.clone(), tags.to_vec());
                break;
            }
            at = parent;
        }
    }
    effective
}

/// Where a report row's key value comes from, in the cells the store grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    /// The cell's key at this position.
    Column(usize),
    /// One row per effective reporting tag of the unit at this position of the cell's key (a unit
    /// without tags gives one row with the empty tag).
    TagOfUnit(usize),
}

/// The report's rows from the cells the store grouped on units: each row's key is built from
/// `parts`; a cell whose unit has several tags counts under each of them (so the tag rows of a
/// report may add up to more than its total, which the caller takes from the cells); cells that
/// land on the same key are summed. Rows are ordered by key.
pub fn regroup(
    cells: &[(Vec<String>, Amounts)],
    parts: &[KeyPart],
    tags: &HashMap<String, Vec<String>>,
) -> Vec<(Vec<String>, Amounts)> {
    let untagged = vec![String::new()];
    let mut rows: BTreeMap<Vec<String>, Amounts> = BTreeMap::new();
    for (key, amounts) in cells {
        let value = |i: usize| key.get(i).cloned().unwrap_or_default();
        let unit_tags = parts
            .iter()
            .find_map(|p| match p {
                KeyPart::TagOfUnit(i) => Some(
                    tags.get(&value(*i))
                        .filter(|t| !t.is_empty())
                        .unwrap_or(&untagged),
                ),
                KeyPart::Column(_) => None,
            })
            .unwrap_or(&untagged);
        for tag in unit_tags {
            let row: Vec<String> = parts
                .iter()
                .map(|p| match p {
                    KeyPart::Column(i) => value(*i),
                    KeyPart::TagOfUnit(_) => tag.clone(),
                })
                .collect();
            *rows.entry(row).or_default() += *amounts;
        }
    }
    rows.into_iter().collect()
}

/// Receivables of one billing entity × payer, by age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Aging {
    /// 0–30 days, 31–60, 61–90, 91–120, over 120.
    pub buckets: [Cents; 5],
    /// Outstanding on charges not yet submitted (aging by submission only).
    pub unbilled: Cents,
}

impl Aging {
    /// Adds `amount`, `age` days old (`None`: not yet submitted). A negative age (a date after
    /// the as-of day) counts as 0.
    pub fn add(&mut self, age: Option<i64>, amount: Cents) {
        let Some(age) = age else {
            self.unbilled = self.unbilled + amount;
            return;
        };
        let bucket = match age {
            ..=30 => 0,
            31..=60 => 1,
            61..=90 => 2,
            91..=120 => 3,
            _ => 4,
        };
        self.buckets[bucket] = self.buckets[bucket] + amount;
    }

    /// Everything outstanding.
    pub fn total(&self) -> Cents {
        self.buckets.iter().copied().sum::<Cents>() + self.unbilled
    }
}

impl AddAssign for Aging {
    fn add_assign(&mut self, other: Aging) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine = *mine + theirs;
        }
        self.unbilled = self.unbilled + other.unbilled;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amounts(charged: i64, paid: i64) -> Amounts {
        Amounts {
            charged: Cents::new(charged),
            paid: Cents::new(-paid),
            ..Default::default()
        }
    }

    #[test]
    fn a_parent_holds_its_own_and_its_childrens_amounts() {
        let tree = vec![
            ("clinic".to_string(), String::new()),
            ("cardio".to_string(), "clinic".to_string()),
            ("ccm".to_string(), "clinic".to_string()),
            ("echo".to_string(), "cardio".to_string()),
        ];
        let own: HashMap<String, Amounts> = [
            ("clinic".to_string(), amounts(100, 0)),
            ("echo".to_string(), amounts(50, 20)),
            ("ccm".to_string(), amounts(7, 7)),
        ]
        .into();
        let totals = subtree_totals(&own, &tree);
        assert_eq!(totals["clinic"], amounts(157, 27));
        assert_eq!(totals["cardio"], amounts(50, 20));
        assert_eq!(totals["echo"].outstanding(), Cents::new(30));
        assert_eq!(totals["ccm"].outstanding(), Cents::ZERO);
    }

    fn tagged(unit: &str, parent: &str, tags: &[&str]) -> (String, String, Vec<String>) {
        (
            unit.to_string(),
            parent.to_string(),
            tags.iter().map(|t| t.to_string()).collect(),
        )
    }

    #[test]
    fn a_unit_without_tags_reports_under_its_nearest_tagged_ancestor() {
        let tree = vec![
            tagged("clinic", "", &["primary-care"]),
            tagged("ccm", "clinic", &["ccm", "chronic-care"]),
            tagged("ccm-east", "ccm", &[]),
            tagged("lab", "clinic", &[]),
            tagged("partner", "", &[]),
        ];
        let tags = effective_tags(&tree);
        assert_eq!(tags["ccm-east"], ["ccm", "chronic-care"]);
        assert_eq!(tags["lab"], ["primary-care"]);
        assert_eq!(tags["clinic"], ["primary-care"]);
        assert!(!tags.contains_key("partner"), "no tag anywhere above it");
        let cycle = vec![tagged("a", "b", &[]), tagged("b", "a", &[])];
        assert!(effective_tags(&cycle).is_empty(), "a cycle ends, untagged");
    }

    #[test]
    fn cells_regroup_by_tag_counting_a_unit_under_each_of_its_tags() {
        let tags: HashMap<String, Vec<String>> = [
            (
                "ccm".to_string(),
                vec!["ccm".to_string(), "chronic".to_string()],
            ),
            ("cardio".to_string(), vec!["chronic".to_string()]),
        ]
        .into();
        let key = |unit: &str, payer: &str| vec![unit.to_string(), payer.to_string()];
        let cells = vec![
            (key("ccm", "medicare"), amounts(100, 10)),
            (key("cardio", "medicare"), amounts(50, 0)),
            (key("cardio", "acme"), amounts(7, 7)),
            (key("deleted", "medicare"), amounts(3, 0)),
        ];
        // Tag, then payer, from cells grouped on (unit, payer).
        let rows = regroup(&cells, &[KeyPart::TagOfUnit(0), KeyPart::Column(1)], &tags);
        let row = |tag: &str, payer: &str| {
            rows.iter()
                .find(|(k, _)| k == &key(tag, payer))
                .map(|(_, a)| *a)
        };
        assert_eq!(row("ccm", "medicare"), Some(amounts(100, 10)));
        assert_eq!(row("chronic", "medicare"), Some(amounts(150, 10)));
        assert_eq!(row("chronic", "acme"), Some(amounts(7, 7)));
        assert_eq!(row("", "medicare"), Some(amounts(3, 0)), "untagged");
        assert_eq!(rows.len(), 4);
        let keys: Vec<_> = rows.iter().map(|(k, _)| k.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "ordered by key");
        // The unit and its tag side by side: one row per (unit, tag).
        let both = regroup(&cells, &[KeyPart::Column(0), KeyPart::TagOfUnit(0)], &tags);
        assert_eq!(
            both.iter()
                .filter(|(k, _)| k[0] == "ccm")
                .map(|(k, _)| k[1].as_str())
                .collect::<Vec<_>>(),
            ["ccm", "chronic"]
        );
    }

    proptest! {
        /// Each tag's row is exactly the sum of the cells whose unit carries the tag, and without
        /// a tag dimension regrouping only re-sums.
        #[test]
        fn a_tag_row_sums_the_cells_of_its_units(
            cells in proptest::collection::vec((0usize..6, 0i64..10_000, 0i64..10_000), 0..40),
            unit_tags in proptest::collection::vec(proptest::collection::vec(0usize..3, 0..3), 6),
        ) {
            let tag_names = ["a", "b", "c"];
            let tags: HashMap<String, Vec<String>> = unit_tags
                .iter()
                .enumerate()
                .map(|(u, t)| {
                    let mut names: Vec<String> = t.iter().map(|i| tag_names[*i].to_string()).collect();
                    names.sort();
                    names.dedup();
                    (format!("u{u}"), names)
                })
                .collect();
            let cells: Vec<(Vec<String>, Amounts)> = cells
                .iter()
                .map(|(u, c, p)| (vec![format!("u{u}")], amounts(*c, (*p).min(*c))))
                .collect();
            let rows = regroup(&cells, &[KeyPart::TagOfUnit(0)], &tags);
            for (key, got) in &rows {
                let mut want = Amounts::default();
                for (cell, a) in &cells {
                    let own = tags.get(&cell[0]).filter(|t| !t.is_empty());
                    let carries = match own {
                        Some(t) => t.contains(&key[0]),
                        None => key[0].is_empty(),
                    };
                    if carries {
                        want += *a;
                    }
                }
                prop_assert_eq!(*got, want);
            }
            let mut total = Amounts::default();
            for (_, a) in &cells {
                total += *a;
            }
            let mut resummed = Amounts::default();
            for (_, a) in regroup(&cells, &[KeyPart::Column(0)], &tags) {
                resummed += a;
            }
            prop_assert_eq!(resummed, total);
        }
    }

    #[test]
    fn ages_fall_in_their_buckets_at_the_edges() {
        let cases = [
            (Some(-3), 0),
            (Some(0), 0),
            (Some(30), 0),
            (Some(31), 1),
            (Some(60), 1),
            (Some(61), 2),
            (Some(90), 2),
            (Some(91), 3),
            (Some(120), 3),
            (Some(121), 4),
            (Some(4000), 4),
        ];
        for (age, bucket) in cases {
            let mut aging = Aging::default();
            aging.add(age, Cents::new(100));
            assert_eq!(aging.buckets[bucket], Cents::new(100), "{age:?}");
            assert_eq!(aging.total(), Cents::new(100));
        }
        let mut unbilled = Aging::default();
        unbilled.add(None, Cents::new(7));
        assert_eq!(
            (unbilled.unbilled, unbilled.total()),
            (Cents::new(7), Cents::new(7))
        );
    }

    proptest! {
        /// On a random forest with random amounts, every unit's total is its own plus the totals
        /// of its children, and the roots' totals sum to everything.
        #[test]
        fn every_parent_is_its_own_plus_its_children(
            parents in proptest::collection::vec(proptest::option::of(0usize..40), 1..40),
            values in proptest::collection::vec((0i64..1_000_000, 0i64..1_000_000), 1..40),
        ) {
            // Unit i's parent is an earlier unit (so the tree has no cycle) or none.
            let tree: Vec<(String, String)> = parents
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let parent = p.filter(|p| *p < i).map(|p| format!("u{p}")).unwrap_or_default();
                    (format!("u{i}"), parent)
                })
                .collect();
            let own: HashMap<String, Amounts> = values
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < tree.len())
                .map(|(i, (c, p))| (format!("u{i}"), amounts(*c, *p)))
                .collect();
            let totals = subtree_totals(&own, &tree);
            for (unit, _) in &tree {
                let mut expected = own.get(unit).copied().unwrap_or_default();
                for (child, parent) in &tree {
                    if parent == unit {
                        expected += totals[child];
                    }
                }
                prop_assert_eq!(totals[unit], expected, "{}", unit);
            }
            let mut roots = Amounts::default();
            for (unit, parent) in &tree {
                if parent.is_empty() {
                    roots += totals[unit];
                }
            }
            let mut everything = Amounts::default();
            for value in own.values() {
                everything += *value;
            }
            prop_assert_eq!(roots, everything);
        }
    }
}
