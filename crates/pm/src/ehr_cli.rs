//! `pm ehr send`: sends HL7 v2 files over MLLP and prints each ACK's MSA and ERR segments (what an
//! interface analyst reaches for to try a feed against the gateway).

use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use pm_hl7::MllpCodec;
use tokio_util::codec::Framed;

/// The largest message or ACK sent or read (the gateway's default limit).
const MAX_FRAME: usize = 1 << 20;

/// One file's message as sent: line ends normalised to CR (files are often saved with LF).
pub fn normalise(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = text.replace("\r\n", "\r").replace('\n', "\r");
    while out.ends_with("\r\r") {
        out.pop();
    }
    if !out.ends_with('\r') {
        out.push('\r');
    }
    out
}

/// Sends each file (one message per file) on one connection to `to` (`HOST:PORT`), printing
/// `FILE: MSA|...` and the ERR segments of each ACK. Returns how many were not accepted (AA/CA).
pub async fn send(to: &str, files: &[PathBuf], timeout: Duration) -> anyhow::Result<usize> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {to}: timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to {to}: {e}"))?;
    let mut framed = Framed::new(stream, MllpCodec::new(MAX_FRAME));
    let mut refused = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        framed
            .send(normalise(&text))
            .await
            .map_err(|e| anyhow::anyhow!("{}: not sent: {e}", file.display()))?;
        let ack = match tokio::time::timeout(timeout, framed.next()).await {
            Err(_) => anyhow::bail!("{}: no ACK within {timeout:?}", file.display()),
            Ok(None) => anyhow::bail!("{}: the connection closed without an ACK", file.display()),
            Ok(Some(Err(e))) => anyhow::bail!("{}: {e}", file.display()),
            Ok(Some(Ok(Err(e)))) => anyhow::bail!("{}: unreadable ACK: {e}", file.display()),
            Ok(Some(Ok(Ok(ack)))) => ack,
        };
        let msa = ack
            .split(['\r', '\n'])
            .find(|s| s.starts_with("MSA"))
            .unwrap_or("MSA (missing)");
        println!("{}: {msa}", file.display());
        for err in ack.split(['\r', '\n']).filter(|s| s.starts_with("ERR")) {
            println!("  {err}");
        }
        if !(msa.starts_with("MSA|AA") || msa.starts_with("MSA|CA")) {
            refused += 1;
        }
    }
    Ok(refused)
}
