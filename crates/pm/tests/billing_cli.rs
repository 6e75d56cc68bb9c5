//! `pm demo seed` then `pm billing export-837` against `pm run` (this build's binaries) on free
//! ports, from an empty data directory: the demo's month of charges becomes claims, the export
//! writes one 837P file per billing entity with READY claims (pyx12 accepts each, when
//! `PM_X12VALID` names its `x12valid`), a second export finds nothing left, a second seed changes
//! nothing, and a broken 835 is refused with the reason and a failing exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PM: &str = env!("CARGO_BIN_EXE_pm");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `pm run`, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory (the mesh's data directory and the files written), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("pm-billing-cli-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Mesh {
    dir: Scratch,
    ports: Vec<(&'static str, u16)>,
}

impl Mesh {
    fn pm(&self) -> Command {
        let mut command = Command::new(PM);
        command
            .current_dir(self.dir.path())
            .env_remove("PM_CONFIG")
            .env_remove("PM_TOKEN")
            .env("RUST_LOG", "warn");
        for (service, port) in &self.ports {
            command.env(
                format!("PM_LISTEN__{}_PORT", service.to_uppercase()),
                port.to_string(),
            );
        }
        command
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.pm().args(args).output().expect("pm runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[test]
fn the_demo_month_exports_as_837p_files() {
    let mesh = Mesh {
        dir: Scratch::new(),
        ports: vec![
            ("org", free_port()),
            ("rbac", free_port()),
            ("scheduling", free_port()),
            ("billing", free_port()),
            ("mllp", free_port()),
        ],
    };
    let mut run = mesh.pm();
    run.arg("run").stdout(Stdio::piped()).stderr(Stdio::null());
    let mut running = Running(run.spawn().expect("pm run starts"));
    let stdout = running.0.stdout.take().expect("piped");
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

    let (ok, out, err) = mesh.run(&["demo", "seed"]);
    assert!(ok, "pm demo seed failed\n{out}\n{err}");
    assert!(out.contains("created  remittance DEMO-EFT-0001"), "{out}");
    let files = mesh.dir.path().join("claims");
    let (ok, out, err) = mesh.run(&["billing", "export-837", "--out", files.to_str().unwrap()]);
    assert!(ok, "export failed\n{out}\n{err}");
    let mut written: Vec<std::path::PathBuf> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    written.sort();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}\n{out}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("837P-acme-ccm-services-")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("837P-acme-medical-group-")),
        "{names:?}"
    );
    match std::env::var("PM_X12VALID").ok().filter(|v| !v.is_empty()) {
        Some(validator) => {
            for file in &written {
                let report = Command::new(&validator)
                    .arg(file)
                    .current_dir(mesh.dir.path())
                    .output()
                    .unwrap();
                let report = format!(
                    "{}{}",
                    String::from_utf8_lossy(&report.stdout),
                    String::from_utf8_lossy(&report.stderr)
                );
                assert!(
                    report.contains(": OK") && !report.contains("Failure"),
                    "{report}"
                );
            }
        }
        None => println!("PM_X12VALID is not set: the files were not run through pyx12"),
    }
    // Nothing is left to export; a second seed creates nothing new.
    let (ok, out, _) = mesh.run(&["billing", "export-837", "--out", files.to_str().unwrap()]);
    assert!(ok && out.contains("no READY claims to export"), "{out}");
    let (ok, out, err) = mesh.run(&["demo", "seed"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("done: 0 created"), "{out}");
    // A broken 835: refused with its reason, exit code 1, nothing posted.
    let broken = mesh.dir.path().join("broken.835");
    std::fs::write(&broken, "ISA*00*short~").unwrap();
    let (ok, out, err) = mesh.run(&["billing", "import-835", broken.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("InvalidArgument") && err.contains("ISA"),
        "{err}"
    );
}
