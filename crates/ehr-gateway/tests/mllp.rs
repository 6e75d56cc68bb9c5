//! The MLLP listener over real sockets, on both backends: persist before ACK, once per control id,
//! AE with the ERR location for a message that does not map (nothing logged as accepted), and a
//! garbage, oversized or stalled peer dropped without disturbing another connection.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use pm_ehr_gateway::domain::{Permission, Source, Sources};
use pm_ehr_gateway::intake::Intake;
use pm_ehr_gateway::listener::{self, Limits};
use pm_ehr_gateway::store::{self, State};
use pm_hl7::MllpCodec;
use pm_testing::{Backend, TestSlice};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const MAX_FRAME: usize = 4096;

struct Harness {
    slice: TestSlice,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn new(backend: Backend) -> anyhow::Result<Self> {
        let slice = TestSlice::open(backend, pm_ehr_gateway::MIGRATIONS).await?;
        let sources = Sources::new(
            "ehr.sources",
            vec![Source {
                id: "north".into(),
                sending_application: "EPIC".into(),
                sending_facility: "NORTHHOSP".into(),
                organization: "organizations/acme".into(),
                identifier_systems: vec![("NORTHHOSP".into(), "urn:north:mrn".into())],
                any_authority: false,
                permissions: vec![Permission::RegisterPatients, Permission::UpdatePatients],
            }],
            None,
        )?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let shutdown = CancellationToken::new();
        let intake = Arc::new(Intake::new(slice.db.clone(), sources));
        let limits = Limits {
            max_frame: MAX_FRAME,
            read_timeout: Duration::from_millis(700),
            max_connections: 8,
        };
        let task = tokio::spawn(listener::serve(tcp, intake, limits, shutdown.clone()));
        Ok(Self {
            slice,
            addr,
            shutdown,
            task,
        })
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?;
        self.slice.finish().await
    }

    async fn connect(&self) -> anyhow::Result<Framed<TcpStream, MllpCodec>> {
        Ok(Framed::new(
            TcpStream::connect(self.addr).await?,
            MllpCodec::new(1 << 20),
        ))
    }
}

fn adt(trigger: &str, control_id: &str, pid: &str) -> String {
    format!(
        "MSH|^~\\&|EPIC|NORTHHOSP|PMGW|PRACTICE|20260105083000||ADT^{trigger}|{control_id}|P|2.5.1\rEVN|{trigger}\r{pid}\r"
    )
}

async fn exchange(
    conn: &mut Framed<TcpStream, MllpCodec>,
    message: &str,
) -> anyhow::Result<String> {
    conn.send(message).await?;
    let ack = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("connection closed before the ACK"))???;
    Ok(ack)
}

fn segment<'a>(ack: &'a str, id: &str) -> &'a str {
    ack.split('\r').find(|s| s.starts_with(id)).unwrap_or("")
}

async fn accepted_message_is_logged_before_its_aa(h: &Harness) -> anyhow::Result<()> {
    let mut conn = h.connect().await?;
    let ack = exchange(
        &mut conn,
        &adt("A04", "C-1", "PID|1||77^^^NORTHHOSP||ROE^ANN||19900101|F"),
    )
    .await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|C-1");
    // The ACK came back: the row is already committed.
    let row = store::find(&h.slice.db, "north", "C-1").await?.unwrap();
    assert_eq!(row.state, State::Received);
    assert_eq!(row.ack_code, "AA");
    assert!(row.raw.contains("ROE^ANN"));
    Ok(())
}

async fn same_control_id_is_logged_once_and_answered_alike(h: &Harness) -> anyhow::Result<()> {
    let mut conn = h.connect().await?;
    let msg = adt("A04", "C-2", "PID|1||77^^^NORTHHOSP||ROE^ANN||19900101");
    assert_eq!(
        segment(&exchange(&mut conn, &msg).await?, "MSA"),
        "MSA|AA|C-2"
    );
    let mut other = h.connect().await?;
    assert_eq!(
        segment(&exchange(&mut other, &msg).await?, "MSA"),
        "MSA|AA|C-2"
    );
    assert_eq!(store::count(&h.slice.db).await?, 1);
    // A refused message repeated gets the same AE and its ERR again.
    let bad = adt("A04", "C-3", "PID|1||||ROE^ANN");
    let first = exchange(&mut conn, &bad).await?;
    let second = exchange(&mut conn, &bad).await?;
    assert_eq!(segment(&first, "MSA"), "MSA|AE|C-3");
    assert_eq!(segment(&second, "MSA"), "MSA|AE|C-3");
    assert_eq!(segment(&first, "ERR"), segment(&second, "ERR"));
    assert_eq!(store::count(&h.slice.db).await?, 2);
    Ok(())
}

async fn missing_pid_3_is_ae_at_pid_1_3_and_never_applied(h: &Harness) -> anyhow::Result<()> {
    let mut conn = h.connect().await?;
    let ack = exchange(&mut conn, &adt("A04", "C-4", "PID|1||||ROE^ANN")).await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AE|C-4");
    let err = segment(&ack, "ERR");
    assert!(err.contains("|PID^1^3|101^"), "{err}");
    assert!(!ack.contains("ROE"), "the ACK repeats no PHI: {ack}");
    let row = store::find(&h.slice.db, "north", "C-4").await?.unwrap();
    assert_eq!(row.state, State::Rejected);
    assert_eq!(row.last_error, "PID_3_MISSING");
    // An unknown sender is rejected and nothing is logged for it.
    let stranger =
        adt("A04", "C-5", "PID|1||77^^^NORTHHOSP||ROE").replace("NORTHHOSP|PMGW", "SOUTH|PMGW");
    let ack = exchange(&mut conn, &stranger).await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AR|C-5");
    assert!(segment(&ack, "ERR").contains("|MSH^1^4|103^"));
    assert_eq!(store::count(&h.slice.db).await?, 1);
    Ok(())
}

async fn bad_peers_do_not_disturb_a_good_one(h: &Harness) -> anyhow::Result<()> {
    let mut good = h.connect().await?;
    // Garbage outside any frame, then an oversized frame, on one connection.
    let mut bad = TcpStream::connect(h.addr).await?;
    bad.write_all(&[0x41; 100]).await?;
    let mut huge = vec![0x0B];
    huge.extend_from_slice(
        adt(
            "A04",
            "BIG",
            &format!("PID|1||77^^^NORTHHOSP||{}", "X".repeat(MAX_FRAME)),
        )
        .as_bytes(),
    );
    huge.extend_from_slice(&[0x1C, 0x0D]);
    bad.write_all(&huge).await?;
    // A peer that stalls in the middle of a frame.
    let mut stalled = TcpStream::connect(h.addr).await?;
    stalled.write_all(b"\x0bMSH|^~\\&|EPIC|NORTHHOSP|").await?;
    // The good connection is served meanwhile.
    let ack = exchange(
        &mut good,
        &adt("A04", "G-1", "PID|1||78^^^NORTHHOSP||ROE^BEA||19900101"),
    )
    .await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|G-1");
    // The oversized frame got an AR (correlated by its MSH) and was not logged.
    let mut framed_bad = Framed::new(bad, MllpCodec::new(1 << 20));
    let ack = tokio::time::timeout(Duration::from_secs(10), framed_bad.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ACK for the oversized frame"))???;
    assert_eq!(segment(&ack, "MSA"), "MSA|AR|BIG");
    assert!(store::find(&h.slice.db, "north", "BIG").await?.is_none());
    // The stalled peer is dropped after the read timeout: its socket reaches end of stream.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await??;
    assert_eq!(n, 0);
    // And the listener still serves (the first good connection may have idled out meanwhile).
    let mut again = h.connect().await?;
    let ack = exchange(
        &mut again,
        &adt("A08", "G-2", "PID|1||78^^^NORTHHOSP||ROE^BEA||19900101"),
    )
    .await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|G-2");
    Ok(())
}

pm_testing::on_both_backends!(super::Harness;
    accepted_message_is_logged_before_its_aa,
    same_control_id_is_logged_once_and_answered_alike,
    missing_pid_3_is_ae_at_pid_1_3_and_never_applied,
    bad_peers_do_not_disturb_a_good_one,
);
