//! The shared authorization layer of the mesh: who is calling (the peer certificate's SPIFFE identity
//! and a bearer token issued by RBAC), what the method needs (its `(pm.authz.v1.rule)`), whether the
//! caller's role bindings allow it on the resource's scope, and the HIPAA audit trail of PHI access.

pub mod admission;
pub mod audit;
pub mod audit_api;
pub mod checkpoints;
pub mod edge;
pub mod inflight;
pub mod layer;
pub mod phi;
pub mod policy;
pub mod purpose;
pub mod reasons;
pub mod references;
pub mod token;
