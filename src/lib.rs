//! The API contract crate: Rust code generated from `proto/`, the descriptor set that server
//! reflection serves, and the table of every RPC's authorization rule.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Generated packages, one module per protobuf package.
pub mod pm {
    pub mod audit {
        pub mod v1 {
            tonic::include_proto!("pm.audit.v1");
        }
    }
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

pub use pm::types::v1 as types;
pub use pm::{
    audit::v1 as audit, billing::v1 as billing, org::v1 as org, rbac::v1 as rbac,
    scheduling::v1 as scheduling,
};

/// The encoded `FileDescriptorSet` of every file in `proto/` and its imports (with comments), for
/// server reflection and for reading message shapes at run time (field masks).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pm_descriptor.bin"));

/// The encoded `FileDescriptorSet` of `google.rpc.Status` and the error details our errors carry
/// (vendored under `third_party/googleapis`), served by reflection so that tools can decode them.
pub const GOOGLE_RPC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));

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
    /// Services that may call it without an end user's token.
    pub service_callers: &'static [&'static str],
    /// Other request fields (dotted paths) naming resources, each checked against the caller's
    /// scope by the shared layer before the handler runs.
    pub reference_fields: &'static [&'static str],
}

/// A request message that exactly one RPC takes: its method, and so its rule, known from its type
/// (for code that serves it without the authorization layer in front, such as store suites).
pub trait RpcRequest {
    /// Full gRPC path of the RPC that takes it.
    const METHOD: &'static str;

    /// The RPC's rule.
    fn rule() -> Option<&'static MethodRule> {
        rule_for(Self::METHOD)
    }
}

include!(concat!(env!("OUT_DIR"), "/authz_rules.rs"));

/// The rule of one method, by its full gRPC path.
pub fn rule_for(method: &str) -> Option<&'static MethodRule> {
    RULES
        .binary_search_by(|rule| rule.method.cmp(method))
        .ok()
        .and_then(|i| RULES.get(i))
}

/// What every resource message of the API has: a name, timestamps and an etag (AIP-148, AIP-154).
/// The generic store and the standard methods work through this.
pub trait Resource: prost::Message + Default + Clone + Send + Sync + 'static {
    /// Full protobuf name of the message, e.g. `pm.org.v1.ServiceUnit`.
    const MESSAGE_NAME: &'static str;
    /// The collection id its names end in (`units` for `organizations/{o}/units/{u}`): a stored
    /// record is read as this type only under such a name.
    const COLLECTION: &'static str;
    /// The resource name.
    fn name(&self) -> &str;
    /// Sets the resource name.
    fn set_name(&mut self, name: String);
    /// The etag the caller sent (or the server computed).
    fn etag(&self) -> &str;
    /// Sets the server-owned fields.
    fn stamp(
        &mut self,
        etag: String,
        create_time: Option<prost_types::Timestamp>,
        update_time: Option<prost_types::Timestamp>,
        delete_time: Option<prost_types::Timestamp>,
    );
    /// When the resource was created.
    fn create_time(&self) -> Option<&prost_types::Timestamp>;
    /// Set when the resource is soft-deleted.
    fn delete_time(&self) -> Option<&prost_types::Timestamp>;
}

macro_rules! resource {
    ($($ty:ty => $full:literal in $collection:literal),* $(,)?) => {$(
        impl Resource for $ty {
            const MESSAGE_NAME: &'static str = $full;
            const COLLECTION: &'static str = $collection;
            fn name(&self) -> &str { &self.name }
            fn set_name(&mut self, name: String) { self.name = name; }
            fn etag(&self) -> &str { &self.etag }
            fn stamp(
                &mut self,
                etag: String,
                create_time: Option<prost_types::Timestamp>,
                update_time: Option<prost_types::Timestamp>,
                delete_time: Option<prost_types::Timestamp>,
            ) {
                self.etag = etag;
                self.create_time = create_time;
                self.update_time = update_time;
                self.delete_time = delete_time;
            }
            fn create_time(&self) -> Option<&prost_types::Timestamp> { self.create_time.as_ref() }
            fn delete_time(&self) -> Option<&prost_types::Timestamp> { self.delete_time.as_ref() }
        }
    )*};
}

resource! {
    org::Organization => "pm.org.v1.Organization" in "organizations",
    org::ServiceUnit => "pm.org.v1.ServiceUnit" in "units",
    org::Location => "pm.org.v1.Location" in "locations",
    org::Provider => "pm.org.v1.Provider" in "providers",
    org::Credential => "pm.org.v1.Credential" in "credentials",
    org::Patient => "pm.org.v1.Patient" in "patients",
    org::Enrollment => "pm.org.v1.Enrollment" in "enrollments",
    org::Coverage => "pm.org.v1.Coverage" in "coverages",
    rbac::Principal => "pm.rbac.v1.Principal" in "principals",
    rbac::RoleBinding => "pm.rbac.v1.RoleBinding" in "roleBindings",
    scheduling::VisitType => "pm.scheduling.v1.VisitType" in "visitTypes",
    scheduling::AvailabilityRule => "pm.scheduling.v1.AvailabilityRule" in "availabilityRules",
    scheduling::AvailabilityException => "pm.scheduling.v1.AvailabilityException" in "availabilityExceptions",
    scheduling::Room => "pm.scheduling.v1.Room" in "rooms",
    scheduling::Appointment => "pm.scheduling.v1.Appointment" in "appointments",
    scheduling::Encounter => "pm.scheduling.v1.Encounter" in "encounters",
    scheduling::WaitlistEntry => "pm.scheduling.v1.WaitlistEntry" in "waitlistEntries",
    billing::BillingEntity => "pm.billing.v1.BillingEntity" in "billingEntities",
    billing::Payer => "pm.billing.v1.Payer" in "payers",
    billing::Contract => "pm.billing.v1.Contract" in "contracts",
    billing::FeeSchedule => "pm.billing.v1.FeeSchedule" in "feeSchedules",
    billing::FeeScheduleVersion => "pm.billing.v1.FeeScheduleVersion" in "versions",
    billing::RoutingRule => "pm.billing.v1.RoutingRule" in "routingRules",
}

/// What every event message of the API has (`SchedulingEvent` today; Billing's and the gateway's
/// next): an envelope the transactional outbox fills around what happened, its position in the
/// stream, a UUID and the commit time. The shared outbox and followers work through this.
pub trait Event: prost::Message + Default + Clone + Send + Sync + 'static {
    /// Position in the outbox: strictly increasing, never reused (0 before it is numbered).
    fn sequence(&self) -> i64;
    /// Sets the position (the outbox does, when it reads the event back).
    fn set_sequence(&mut self, sequence: i64);
    /// The event's UUID, for consumers that deduplicate.
    fn event_id(&self) -> &str;
    /// Sets the UUID and the time (the outbox does, when the event is staged).
    fn stamp(&mut self, event_id: String, time: prost_types::Timestamp);
}

macro_rules! event {
    ($($ty:ty),* $(,)?) => {$(
        impl Event for $ty {
            fn sequence(&self) -> i64 { self.sequence }
            fn set_sequence(&mut self, sequence: i64) { self.sequence = sequence; }
            fn event_id(&self) -> &str { &self.event_id }
            fn stamp(&mut self, event_id: String, time: prost_types::Timestamp) {
                self.event_id = event_id;
                self.time = Some(time);
            }
        }
    )*};
}

event! {
    scheduling::SchedulingEvent,
}
