//! Compiles proto/ with protox (pure Rust, no protoc), generates the tonic clients and servers, writes
//! the descriptor set that server reflection serves, and extracts every RPC's authorization rule into a
//! static table. The build fails when an RPC declares no rule: deny by default starts here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, Value};

type BuildResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> BuildResult {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let files = proto_files(Path::new("proto"))?;
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    // encode_file_descriptor_set keeps custom options (prost_types would drop the extension values).
    let fds_bytes = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("pm_descriptor.bin"), &fds_bytes)?;
    write_authz_table(&fds_bytes, &out_dir.join("authz_rules.rs"))?;

    let fds = compiler.file_descriptor_set();

    // google.rpc error details, for reflection only (clients decode our errors' details with them).
    println!("cargo:rerun-if-changed=third_party/googleapis");
    let mut rpc = protox::Compiler::new(["third_party/googleapis"])?;
    rpc.include_imports(true);
    rpc.open_files(["google/rpc/status.proto", "google/rpc/error_details.proto"])?;
    std::fs::write(
        out_dir.join("google_rpc_descriptor.bin"),
        rpc.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(proto_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(
                path.strip_prefix("proto")
                    .map(Path::to_path_buf)
                    .unwrap_or(path),
            );
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the `pm.authz.v1.rule` method option of every RPC and writes `RULES`, sorted by method path.
fn write_authz_table(fds_bytes: &[u8], out: &Path) -> BuildResult {
    let pool = DescriptorPool::decode(fds_bytes)?;
    let ext = pool
        .get_extension_by_name("pm.authz.v1.rule")
        .ok_or("pm.authz.v1.rule extension not found in proto/")?;
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let mut inputs: Vec<(String, String)> = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            inputs.push((method.input().full_name().to_string(), path.clone()));
            let options = method.options();
            if !options.has_extension(&ext) {
                missing.push(path);
                continue;
            }
            let Value::Message(rule) = options.get_extension(&ext).into_owned() else {
                return Err(format!("{path}: pm.authz.v1.rule is not a message").into());
            };
            let text = |field: &str| {
                rule.get_field_by_name(field)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            let phi = rule
                .get_field_by_name("phi")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let permission = text("permission");
            if permission.is_empty() {
                missing.push(path);
                continue;
            }
            let list = |field: &str| -> Vec<String> {
                rule.get_field_by_name(field)
                    .and_then(|v| {
                        v.as_list().map(|l| {
                            l.iter()
                                .filter_map(|c| c.as_str().map(str::to_owned))
                                .collect()
                        })
                    })
                    .unwrap_or_default()
            };
            rows.push((
                path,
                permission,
                text("resource_field"),
                phi,
                list("service_callers"),
                list("reference_fields"),
            ));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "these RPCs declare no (pm.authz.v1.rule) permission: {}",
            missing.join(", ")
        )
        .into());
    }
    rows.sort();
    let mut code = String::from(
        "/// Every RPC of the mesh with its declared rule, sorted by method path.\npub static RULES: &[MethodRule] = &[\n",
    );
    for (method, permission, field, phi, callers, references) in rows {
        writeln!(
            code,
            "    MethodRule {{ method: {method:?}, permission: {permission:?}, resource_field: {field:?}, phi: {phi}, service_callers: &{callers:?}, reference_fields: &{references:?} }},"
        )?;
    }
    code.push_str("];\n");
    code.push_str(&request_impls(inputs));
    std::fs::write(out, code)?;
    Ok(())
}

/// `impl RpcRequest` for every request message of ours that exactly one RPC takes.
fn request_impls(mut inputs: Vec<(String, String)>) -> String {
    inputs.sort();
    let mut code = String::new();
    for (i, (message, path)) in inputs.iter().enumerate() {
        let shared = inputs
            .iter()
            .enumerate()
            .any(|(j, (other, _))| j != i && other == message);
        if shared || !message.starts_with("pm.") {
            continue;
        }
        let rust_path = format!("crate::{}", message.replace('.', "::"));
        code.push_str(&format!(
            "impl RpcRequest for {rust_path} {{ const METHOD: &'static str = {path:?}; }}\n"
        ));
    }
    code
}
