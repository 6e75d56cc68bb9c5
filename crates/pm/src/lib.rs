//! The `pm` binary's library: starting the mesh (all services in one process, or one of them) and the
//! demo seed. End-to-end tests start the mesh through [`mesh::start`] exactly as `pm run` does.

pub mod billing_cli;
pub mod demo;
pub mod ehr_cli;
pub mod mesh;
pub mod web;
