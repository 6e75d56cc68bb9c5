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
    let mut mesh = TestMesh::start(Backend::Sqlite).await?;
    mesh.seed_access().await?;
    pm::demo::seed(
        &mut mesh.org_as(pm::demo::ADMIN).await?,
        &mut mesh.billing_as(pm::demo::ADMIN).await?,
    )
    .await?;
    pm::demo::seed_scheduling(&mut mesh.scheduling_as(pm::demo::ADMIN).await?).await?;
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
