//! The permission catalog: the rule table generated from the contracts, grouped by permission.

use std::collections::BTreeMap;

use pm_api::MethodRule;
use pm_api::rbac::Permission;

/// Every declared permission with the methods requiring it, ordered by name.
pub fn catalog(rules: &[MethodRule]) -> Vec<Permission> {
    let mut by_name: BTreeMap<&str, Permission> = BTreeMap::new();
    for rule in rules {
        let entry = by_name
            .entry(rule.permission)
            .or_insert_with(|| Permission {
                name: rule.permission.to_string(),
                methods: Vec::new(),
                phi: false,
            });
        entry.methods.push(rule.method.to_string());
        entry.phi |= rule.phi;
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_methods_by_permission_and_marks_phi() {
        let catalog = catalog(pm_api::RULES);
        let patients_get = catalog
            .iter()
            .find(|p| p.name == "org.patients.get")
            .expect("org.patients.get is declared");
        assert!(patients_get.phi);
        assert_eq!(
            patients_get.methods,
            vec!["/pm.org.v1.OrgService/GetPatient"]
        );
        let units_get = catalog
            .iter()
            .find(|p| p.name == "org.units.get")
            .expect("declared");
        assert_eq!(
            units_get.methods.len(),
            2,
            "GetServiceUnit and GetEffectivePolicy"
        );
        assert!(!units_get.phi);
        assert!(catalog.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn every_rpc_of_the_contracts_has_a_rule() {
        // build.rs refuses to build without one; this checks the table reached the crate intact.
        let methods: usize = catalog(pm_api::RULES).iter().map(|p| p.methods.len()).sum();
        assert_eq!(methods, pm_api::RULES.len());
        assert!(pm_api::rule_for("/pm.org.v1.OrgService/CreateServiceUnit").is_some());
        assert!(pm_api::rule_for("/pm.org.v1.OrgService/NoSuchMethod").is_none());
    }
}
