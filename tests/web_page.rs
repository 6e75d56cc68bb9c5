//! The calendar page in a real browser: headless Chromium (the system's) driven by puppeteer-core
//! from `web/test/page.mjs`, against the web edge in front of a mesh with the demo seeded. Signs in
//! as the admin (every unit) and the CCM program manager (only the CCM program), searches slots (the
//! exclusions in words), books one (it appears on the calendar) and books it again (SLOT_UNAVAILABLE
//! in words). Skips when chromium, node or web/node_modules is missing, except under `CI`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};

use pm::mesh::Service;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::time::next_monday;
use tokio_util::sync::CancellationToken;

/// What the browser check needs, or why it cannot run.
fn tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| which(name))
        .ok_or("chromium is not installed (apt-get install chromium)")?;
    let node = which("node").ok_or("node is not installed")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("web/test/page.mjs");
    if !root.join("web/node_modules/puppeteer-core").is_dir() {
        return Err("web/node_modules is missing (`make web` or `cd web && npm ci`)".into());
    }
    Ok((chromium, node, script))
}

#[tokio::test]
async fn the_page_signs_in_searches_books_and_explains_in_a_browser() -> anyhow::Result<()> {
    let (chromium, node, script) = match tools() {
        Ok(found) => found,
        Err(why) => {
            // CI (`.ci/run`) installs chromium and runs `npm ci` in web/: there, this fails.
            anyhow::ensure!(
                std::env::var_os("CI").is_none(),
                "the browser test cannot run: {why}"
            );
            eprintln!("skipping the browser test of the calendar page: {why}");
            return Ok(());
        }
    };
    let mut mesh = TestMesh::start_with_demo(Backend::Sqlite).await?;
    pm::demo::seed_scheduling(&mut mesh.scheduling_as(pm::demo::ADMIN).await?).await?;
    let shutdown = CancellationToken::new();
    let edge = mesh.start_web_edge(shutdown.clone()).await?;
    let url = format!("https://localhost:{}/", edge.addr.port());
    // tokio's process: the edge serves on this test's runtime, which must not block on the browser.
    let out = tokio::process::Command::new(node)
        .arg(script)
        .arg(&url)
        .arg(chromium)
        .arg(next_monday().format("%Y-%m-%d").to_string())
        .output()
        .await?;
    shutdown.cancel();
    mesh.stop().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    anyhow::ensure!(
        out.status.success(),
        "the browser check failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Each check printed its line: the script cannot pass by skipping them.
    for check in [
        "admin sees every unit",
        "casey-ccm sees only the CCM program",
        "WRONG_PATHWAY_STEP is listed in words",
        "is on the calendar",
        "the booking appears live in the second session",
        "a taken slot is refused in words",
    ] {
        anyhow::ensure!(stdout.contains(check), "missing check: {check}\n{stdout}");
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Every reason code Scheduling puts in an Exclusion (`eligibility::Reason::code`) has a sentence in
/// the page's table (`web/src/words.ts`), so no exclusion is shown as a bare code. Needs no browser.
#[test]
fn every_exclusion_reason_has_a_sentence_on_the_page() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let eligibility = std::fs::read_to_string(root.join("crates/scheduling/src/eligibility.rs"))?;
    let words = std::fs::read_to_string(root.join("web/src/words.ts"))?;
    let start = eligibility
        .find("impl Reason {")
        .ok_or_else(|| anyhow::anyhow!("impl Reason not found"))?;
    let body = &eligibility[start..];
    let end = body
        .find("\n}\n")
        .ok_or_else(|| anyhow::anyhow!("end of impl Reason not found"))?;
    let codes: Vec<&str> = body[..end]
        .lines()
        .filter_map(|line| line.split_once("=> \"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    anyhow::ensure!(
        codes.len() >= 17,
        "expected every Reason code, found {codes:?}"
    );
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|code| !words.contains(&format!("\n  {code}: \"")))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "web/src/words.ts has no sentence for {missing:?}"
    );
    Ok(())
}

/// The edge serves the committed page on GET (no browser needed): the HTML, and the bundle it loads.
#[tokio::test]
async fn the_edge_serves_the_committed_page() -> anyhow::Result<()> {
    let mut mesh = TestMesh::start(Backend::Sqlite).await?;
    mesh.config.listen.web_port = 0;
    let shutdown = CancellationToken::new();
    let (org, scheduling, rbac) = (
        mesh.url(Service::Org),
        mesh.url(Service::Scheduling),
        mesh.url(Service::Rbac),
    );
    let peers = pm::web::Peers {
        org: &org,
        scheduling: &scheduling,
        rbac: &rbac,
    };
    let edge = pm::web::start(&mesh.config, peers, shutdown.clone()).await?;
    let ca = pm_runtime::tls::dev_pki_dir(&mesh.config).join("ca.crt");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(curl) = which("curl") else {
        anyhow::ensure!(std::env::var_os("CI").is_none(), "curl is not installed");
        eprintln!("skipping: curl is not installed");
        shutdown.cancel();
        mesh.stop().await?;
        return Ok(());
    };
    for (path, file, content_type) in [
        ("/", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
    ] {
        let out = tokio::process::Command::new(&curl)
            .args(["-sS", "--fail", "-D", "-", "--cacert"])
            .arg(&ca)
            .arg(format!("https://localhost:{}{path}", edge.addr.port()))
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("GET {path}: no header block"))?;
        anyhow::ensure!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "GET {path}: {head}"
        );
        let committed = std::fs::read_to_string(root.join("crates/pm/web-dist").join(file))?;
        anyhow::ensure!(body == committed, "GET {path} is not the committed {file}");
    }
    shutdown.cancel();
    mesh.stop().await?;
    Ok(())
}
