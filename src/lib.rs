//! The API contract crate: Rust code generated from `proto/`, the descriptor set that server
//! reflection serves, and the table of every RPC's authorization rule.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Generated packages, one module per protobuf package.
pub mod pm {
    pub mod authz {
        pub mod v1 {
            tonic::include_proto!("pm.authz.v1");
        }
    }
    pub mod types {
        pub mod v1 {
            tonic::include_proto!("pm.types.v1");
        }
    }
    pub mod org {
        pub mod v1 {
            tonic::include_proto!("pm.org.v1");
        }
    }
    pub mod rbac {
        pub mod v1 {
            tonic::include_proto!("pm.rbac.v1");
        }
    }
    pub mod billing {
        pub mod v1 {
            tonic::include_proto!("pm.billing.v1");
        }
    }
    pub mod scheduling {
        pub mod v1 {
            tonic::include_proto!("pm.scheduling.v1");
        }
    }
}

pub use pm::{billing::v1 as billing, org::v1 as org, rbac::v1 as rbac, scheduling::v1 as scheduling};
pub use pm::types::v1 as types;

/// The encoded `FileDescriptorSet` of every file in `proto/` and its imports (with comments), for
/// server reflection and for reading message shapes at run time (field masks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pm_descriptor.bin"));

/// The authorization rule an RPC declares through the `(pm.authz.v1.rule)` method option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRule {
    /// Full gRPC path, `/package.Service/Method`.
    pub method: &'static str,
    /// The permission, `<service>.<collection>.<verb>`.
    pub permission: &'static str,
    /// Dotted path of the request field holding the resource name checked; empty for mesh-wide calls.
    pub resource_field: &'static str,
    /// Whether the call reads or writes protected health information (and so is audited).
    pub phi: bool,
}

include!(concat!(env!("OUT_DIR"), "/authz_rules.rs"));

/// The rule of one method, by its full gRPC path.
pub fn rule_for(method: &str) -> Option<&'static MethodRule> {
    RULES
        .binary_search_by(|rule| rule.method.cmp(method))
        .ok()
        .and_then(|i| RULES.get(i))
}
