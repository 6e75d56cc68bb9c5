//! The README's "Set up your own organization" runs verbatim: its shell block, read from README.md,
//! against `pm run` (this build's binary) on free ports over dev mTLS, from an empty data directory.
//! Only the ports are changed (7101/7102/7103 become the free ones). Then the bootstrap is refused a
//! second time (exit code 1, naming the operator, nothing written) and RBAC's audit trail, which holds
//! its record, verifies.
//!
//! Needs `buf` and `jq` on PATH, as the README does; without `buf` the test says so and passes, unless
//! `CI` is set (CI installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PM: &str = env!("CARGO_BIN_EXE_pm");

/// The first ```sh block under `## Set up your own organization`.
fn readme_block() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let section = readme
        .split("\n## Set up your own organization\n")
        .nth(1)
        .expect("README.md has a section \"Set up your own organization\"");
    let section = section.split("\n## ").next().unwrap_or_default();
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the section has a sh block");
    block.split("\n```").next().unwrap_or_default().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// A scratch directory standing in for the repository root: `.pm-data` (the default data directory)
/// and `target/debug/pm` (this build's binary), removed on drop.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("pm-readme-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("target/debug")).unwrap();
        std::os::unix::fs::symlink(PM, dir.join("target/debug/pm")).unwrap();
        Root(dir)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `pm run`, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pm(root: &Root, ports: &[(&str, u16)]) -> Command {
    let mut command = Command::new(PM);
    command.current_dir(&root.0).env_remove("PM_CONFIG");
    for (service, port) in ports {
        command.env(
            format!("PM_LISTEN__{}_PORT", service.to_uppercase()),
            port.to_string(),
        );
    }
    command
}

#[test]
fn set_up_your_own_organization_runs_verbatim() {
    let block = readme_block();
    if !on_path("buf") || !on_path("jq") {
        assert!(
            std::env::var_os("CI").is_none(),
            "buf and jq must be on PATH in CI"
        );
        eprintln!("SKIPPED: the README block needs buf and jq on PATH");
        return;
    }
    let root = Root::new();
    let ports = [
        ("org", free_port()),
        ("rbac", free_port()),
        ("scheduling", free_port()),
        ("billing", free_port()),
        ("mllp", free_port()),
        // The web edge too, off its default 8443 (another `pm run` may hold it).
        ("web", free_port()),
    ];
    let mut run = pm(&root, &ports);
    run.arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut mesh = Running(run.spawn().expect("pm run starts"));
    let stdout = mesh.0.stdout.take().expect("piped");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("pm run is ready within a minute");

    let mut script = block.clone();
    for (default, (_, port)) in ["7101", "7102", "7103", "7104"].iter().zip(&ports) {
        script = script.replace(
            &format!("localhost:{default}"),
            &format!("localhost:{port}"),
        );
    }
    let started = Instant::now();
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&root.0)
        .env_remove("PM_CONFIG")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README block failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("README block ran in {:?}", started.elapsed());
    // The last command booked the appointment (buf curl prints the response as JSON).
    let booked = stdout
        .rsplit_once("\n{")
        .map(|(_, last)| last)
        .unwrap_or_default();
    for expected in [
        "\"state\": \"APPOINTMENT_STATE_BOOKED\"",
        "\"patient\": \"organizations/riverside/patients/p-0001\"",
        "\"provider\": \"organizations/riverside/providers/dr-haas\"",
    ] {
        assert!(booked.contains(expected), "{expected} in\n{stdout}");
    }
    assert!(
        stderr.contains(
            "created principals/ops (Platform operations), a platform operator through organizations/-/roleBindings/ops"
        ),
        "{stderr}"
    );

    // Once only: a second bootstrap exits 1, says what exists, and writes nothing.
    let again = pm(&root, &ports)
        .args(["admin", "bootstrap", "--principal", "ops2"])
        .output()
        .expect("pm runs");
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty(), "no token printed");
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(
        message.contains(
            "a platform operator exists already: principals/ops (organizations/-/roleBindings/ops); nothing was written"
        ),
        "{message}"
    );
    let token = pm(&root, &ports)
        .args(["admin", "token", "principals/ops2"])
        .output()
        .expect("pm runs");
    assert_eq!(
        token.status.code(),
        Some(1),
        "principals/ops2 was not created"
    );
    assert!(
        String::from_utf8_lossy(&token.stderr).contains("principals/ops2 does not exist"),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );

    // RBAC's trail holds the bootstrap and the administrator's token, and verifies.
    drop(mesh);
    let verified = pm(&root, &ports)
        .args(["audit", "verify", "--service", "rbac"])
        .output()
        .expect("pm runs");
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains("intact"), "{report}");
}
