//! Update masks (AIP-134) applied generically through the descriptor set, so every Update method
//! shares one implementation.
//!
//! - Named paths (`display_name`, `billing_profile.place_of_service`) copy that field from the patch,
//!   or clear it when the patch leaves it unset.
//! - An empty mask means every leaf field the patch sets (nested messages are walked, so a patch that
//!   sets only `billing_profile.place_of_service` leaves the rest of the profile alone).
//! - `*` replaces every field except the protected ones.
//! - Output-only and immutable fields may not be named.

use std::sync::OnceLock;

use pm_api::Resource;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use prost_types::FieldMask;

use crate::error::{ApiError, ApiResult};

/// Fields every resource has that only the server writes.
pub const OUTPUT_ONLY: &[&str] = &["name", "create_time", "update_time", "delete_time", "etag"];

/// The descriptor pool of every message in `proto/`.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pm_api::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set embedded at build time decodes")
    })
}

/// Applies `patch` to `stored` under `mask`. `protected` lists paths (besides [`OUTPUT_ONLY`]) that may
/// not be updated; errors name fields as `<resource_field>.<path>`.
pub fn apply<T: Resource>(
    stored: &T,
    patch: &T,
    mask: Option<&FieldMask>,
    protected: &[&str],
    resource_field: &str,
) -> ApiResult<T> {
    let descriptor = descriptor_pool()
        .get_message_by_name(T::MESSAGE_NAME)
        .ok_or_else(|| ApiError::internal("field mask", &T::MESSAGE_NAME))?;
    let decode = |m: &T| DynamicMessage::decode(descriptor.clone(), m.encode_to_vec().as_slice());
    let mut target = decode(stored).map_err(|e| ApiError::internal("field mask", &e))?;
    let source = decode(patch).map_err(|e| ApiError::internal("field mask", &e))?;
    let is_protected = |path: &str| {
        OUTPUT_ONLY.iter().chain(protected).any(|p| {
            path == *p || path.starts_with(&format!("{p}.")) || p.starts_with(&format!("{path}."))
        })
    };

    let paths: Vec<String> = match mask.map(|m| m.paths.as_slice()).unwrap_or_default() {
        [] => {
            let mut leaves = Vec::new();
            populated_leaves(&source, "", &mut leaves);
            leaves.retain(|p| !is_protected(p));
            leaves
        }
        [star] if star == "*" => descriptor
            .fields()
            .map(|f| f.name().to_string())
            .filter(|p| !is_protected(p))
            .collect(),
        named => {
            for path in named {
                resolve(&descriptor, path)?;
                if is_protected(path) {
                    return Err(ApiError::invalid(
                        "update_mask",
                        format!(
                            "`{}` is output only or immutable and cannot be updated",
                            crate::error::quote(path)
                        ),
                    )
                    .because("UPDATE_MASK_INVALID"));
                }
            }
            named.to_vec()
        }
    };
    for path in &paths {
        copy_path(&mut target, &source, path);
    }
    T::decode(target.encode_to_vec().as_slice())
        .map_err(|e| ApiError::internal(&format!("field mask on {resource_field}"), &e))
}

/// Checks that every segment of `path` names a field, and that only the last may be other than a
/// singular message.
fn resolve(descriptor: &MessageDescriptor, path: &str) -> ApiResult<()> {
    let unknown = || {
        ApiError::invalid(
            "update_mask",
            format!(
                "`{}` is not a field of {}",
                crate::error::quote(path),
                descriptor.name()
            ),
        )
        .because("UPDATE_MASK_INVALID")
    };
    let mut current = descriptor.clone();
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let field = current.get_field_by_name(segment).ok_or_else(unknown)?;
        if segments.peek().is_some() {
            match (field.kind(), field.is_list() || field.is_map()) {
                (Kind::Message(inner), false) => current = inner,
                _ => return Err(unknown()),
            }
        }
    }
    Ok(())
}

fn populated_leaves(message: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for field in message.descriptor().fields() {
        if !message.has_field(&field) {
            continue;
        }
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), is_singular_message(&field)) {
            (Kind::Message(_), true) if !is_well_known(&field) => {
                if let Value::Message(inner) = message.get_field(&field).as_ref() {
                    populated_leaves(inner, &format!("{path}."), out);
                }
            }
            _ => out.push(path),
        }
    }
}

fn is_singular_message(field: &FieldDescriptor) -> bool {
    !(field.is_list() || field.is_map())
}

/// Timestamps and other google.protobuf types are values, not structures to walk into.
fn is_well_known(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if m.full_name().starts_with("google.protobuf."))
}

fn copy_path(target: &mut DynamicMessage, source: &DynamicMessage, path: &str) {
    match path.split_once('.') {
        None => match source.get_field_by_name(path) {
            Some(value) if source.has_field_by_name(path) => {
                target.set_field_by_name(path, value.into_owned());
            }
            _ => target.clear_field_by_name(path),
        },
        Some((head, rest)) => {
            let source_inner = match source.get_field_by_name(head).as_deref() {
                Some(Value::Message(inner)) => inner.clone(),
                _ => return,
            };
            if let Some(Value::Message(target_inner)) = target.get_field_by_name_mut(head) {
                copy_path(target_inner, &source_inner, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_api::org::{BillingProfile, ServiceUnit};

    fn unit() -> ServiceUnit {
        ServiceUnit {
            name: "organizations/a/units/u".into(),
            display_name: "North".into(),
            kind: 1,
            billing_profile: Some(BillingProfile {
                place_of_service: "11".into(),
                fee_schedule: "feeSchedules/std".into(),
                ..Default::default()
            }),
            etag: "r1".into(),
            ..Default::default()
        }
    }

    fn mask(paths: &[&str]) -> FieldMask {
        FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn named_nested_path_changes_only_that_leaf() -> ApiResult<()> {
        let patch = ServiceUnit {
            billing_profile: Some(BillingProfile {
                place_of_service: "02".into(),
                ..Default::default()
            }),
            display_name: "ignored".into(),
            ..Default::default()
        };
        let merged = apply(
            &unit(),
            &patch,
            Some(&mask(&["billing_profile.place_of_service"])),
            &[],
            "service_unit",
        )?;
        let profile = merged.billing_profile.unwrap_or_default();
        assert_eq!(profile.place_of_service, "02");
        assert_eq!(profile.fee_schedule, "feeSchedules/std");
        assert_eq!(merged.display_name, "North");
        Ok(())
    }

    #[test]
    fn named_path_absent_from_patch_clears_the_field() -> ApiResult<()> {
        let merged = apply(
            &unit(),
            &ServiceUnit::default(),
            Some(&mask(&["billing_profile.fee_schedule"])),
            &[],
            "service_unit",
        )?;
        assert_eq!(merged.billing_profile.unwrap_or_default().fee_schedule, "");
        Ok(())
    }

    #[test]
    fn empty_mask_updates_populated_leaves_and_skips_output_only() -> ApiResult<()> {
        let patch = ServiceUnit {
            name: "organizations/a/units/u".into(),
            etag: "r1".into(),
            display_name: "North Clinic".into(),
            ..Default::default()
        };
        let merged = apply(&unit(), &patch, None, &[], "service_unit")?;
        assert_eq!(merged.display_name, "North Clinic");
        assert_eq!(
            merged.billing_profile.unwrap_or_default().place_of_service,
            "11"
        );
        Ok(())
    }

    #[test]
    fn star_replaces_everything_but_protected_fields() -> ApiResult<()> {
        let patch = ServiceUnit {
            display_name: "Only".into(),
            ..Default::default()
        };
        let merged = apply(
            &unit(),
            &patch,
            Some(&mask(&["*"])),
            &["kind"],
            "service_unit",
        )?;
        assert_eq!(merged.display_name, "Only");
        assert_eq!(merged.kind, 1, "protected field kept");
        assert!(merged.billing_profile.is_none());
        assert_eq!(merged.name, "organizations/a/units/u");
        Ok(())
    }

    #[test]
    fn unknown_and_protected_paths_are_rejected() {
        for (paths, protected) in [
            (vec!["nope"], vec![]),
            (vec!["display_name.x"], vec![]),
            (vec!["create_time"], vec![]),
            (vec!["etag"], vec![]),
            (vec!["kind"], vec!["kind"]),
            (vec!["billing_profile"], vec!["billing_profile.claim_form"]),
        ] {
            let err = apply(
                &unit(),
                &unit(),
                Some(&mask(&paths)),
                &protected,
                "service_unit",
            )
            .expect_err(&format!("{paths:?}"));
            assert_eq!(err.violations[0].0, "update_mask");
        }
    }
}
