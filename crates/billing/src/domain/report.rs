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
