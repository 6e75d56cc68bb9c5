//! The MLLP codec: framing, limits, resynchronisation, chunking, and a real (duplex) stream.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::poll_fn;
use std::pin::Pin;

use bytes::BytesMut;
use futures::Sink;
use futures::Stream;
use pm_hl7::{Ack, AckOutcome, FrameError, Message, MllpCodec, MllpError};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead};

const SB: u8 = 0x0B;
const EB: u8 = 0x1C;
const CR: u8 = 0x0D;

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![SB];
    v.extend_from_slice(msg);
    v.extend_from_slice(&[EB, CR]);
    v
}

/// Feeds `chunks` one by one, decoding after each, then signals end of stream.
fn decode_chunks(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<Result<String, FrameError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        out.push(item);
    }
    out
}

fn decode_all(codec: &mut MllpCodec, bytes: &[u8]) -> Vec<Result<String, FrameError>> {
    decode_chunks(codec, &[bytes])
}

#[test]
fn one_frame() {
    let mut c = MllpCodec::new(1024);
    let out = decode_all(&mut c, &frame(b"MSH|^~\\&|A\rPID|1\r"));
    assert_eq!(out, [Ok("MSH|^~\\&|A\rPID|1\r".to_owned())]);
    assert_eq!(c.discarded_bytes(), 0);
}

#[test]
fn several_frames_in_one_read_and_split_everywhere() {
    let mut bytes = frame(b"MSH|1");
    bytes.extend(frame(b"MSH|2"));
    bytes.extend(frame(b""));
    let expected = vec![
        Ok("MSH|1".to_owned()),
        Ok("MSH|2".to_owned()),
        Ok(String::new()),
    ];
    assert_eq!(decode_all(&mut MllpCodec::new(64), &bytes), expected);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(
            decode_chunks(&mut MllpCodec::new(64), &[a, b]),
            expected,
            "cut {cut}"
        );
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_chunks(&mut MllpCodec::new(64), &singles), expected);
}

#[test]
fn garbage_before_start_block_is_discarded_and_counted() {
    let mut bytes = b"\r\nnoise".to_vec();
    bytes.extend(frame(b"MSH|1"));
    bytes.extend_from_slice(b"xx\x1c\r");
    bytes.extend(frame(b"MSH|2"));
    bytes.extend_from_slice(b"tail");
    let mut c = MllpCodec::new(64);
    let out = decode_all(&mut c, &bytes);
    assert_eq!(out, [Ok("MSH|1".to_owned()), Ok("MSH|2".to_owned())]);
    assert_eq!(c.discarded_bytes(), 7 + 4 + 4);
}

#[test]
fn oversized_frame_is_reported_at_once_and_skipped() {
    let big = format!(
        "MSH|^~\\&|EHR|H|GW|PM|2026||ADT^A01|BIG-1|P|2.5.1\rNTE|{}\r",
        "x".repeat(200)
    );
    let mut c = MllpCodec::new(100);
    // Only the first 150 bytes have arrived: the error is already there.
    let mut buf = BytesMut::from(&frame(big.as_bytes())[..151]);
    let item = c.decode(&mut buf).unwrap().unwrap();
    let Err(FrameError::TooLarge { max, msh }) = item else {
        panic!("{item:?}")
    };
    assert_eq!(max, 100);
    // Enough to answer with an AR that echoes MSH-10.
    let msh = msh.unwrap();
    assert!(msh.starts_with("MSH|") && msh.ends_with("2.5.1"));
    let err = FrameError::TooLarge {
        max,
        msh: Some(msh.clone()),
    };
    assert!(!err.to_string().contains("EHR")); // Display carries no content
    let ack = Ack::new(AckOutcome::Reject)
        .build_unparsed(&msh, "20260101", "R")
        .unwrap();
    assert_eq!(
        Message::parse(&ack).unwrap().get("MSA-2").unwrap().as_str(),
        Some("BIG-1")
    );

    // The rest of the big frame is discarded; the next frame comes through.
    let mut rest = frame(big.as_bytes())[151..].to_vec();
    rest.extend(frame(b"MSH|next"));
    buf.extend_from_slice(&rest);
    assert_eq!(c.decode(&mut buf).unwrap(), Some(Ok("MSH|next".to_owned())));
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    assert_eq!(c.discarded_bytes() as usize, big.len() + 2);
}

#[test]
fn oversized_frame_arriving_complete() {
    let mut c = MllpCodec::new(4);
    let mut bytes = frame(b"12345");
    bytes.extend(frame(b"1234"));
    let out = decode_all(&mut c, &bytes);
    assert!(matches!(
        out[0],
        Err(FrameError::TooLarge { max: 4, msh: None })
    ));
    assert_eq!(out[1], Ok("1234".to_owned()));
    assert_eq!(out.len(), 2);
}

#[test]
fn max_frame_is_inclusive() {
    let mut c = MllpCodec::new(5);
    let bytes = frame(b"12345");
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(decode_chunks(&mut c, &singles), [Ok("12345".to_owned())]);
}

#[test]
fn end_block_without_cr_still_ends_the_frame() {
    let mut c = MllpCodec::new(64);
    let out = decode_all(&mut c, b"\x0bMSH|1\x1cX\x0bMSH|2\x1c\x0bMSH|3\x1c");
    assert_eq!(
        out,
        [
            Ok("MSH|1".to_owned()),
            Ok("MSH|2".to_owned()),
            Ok("MSH|3".to_owned())
        ]
    );
    assert_eq!(c.lenient_ends(), 3);
    assert_eq!(c.discarded_bytes(), 1); // the X
    // A 0x1C as the last byte so far waits for the next byte.
    let mut c = MllpCodec::new(64);
    let mut buf = BytesMut::from(&b"\x0bMSH|1\x1c"[..]);
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\r");
    assert_eq!(c.decode(&mut buf).unwrap(), Some(Ok("MSH|1".to_owned())));
    assert_eq!(c.lenient_ends(), 0);
}

#[test]
fn start_block_inside_a_frame_abandons_it() {
    let mut c = MllpCodec::new(64);
    let out = decode_all(&mut c, b"\x0bMSH|half\x0bMSH|whole\x1c\r");
    assert_eq!(out, [Ok("MSH|whole".to_owned())]);
    assert_eq!(c.abandoned_frames(), 1);
    assert_eq!(c.discarded_bytes(), 8);
}

#[test]
fn invalid_utf8_is_a_per_frame_error() {
    let mut bytes = frame(b"MSH|^~\\&|A\rPID|1||M\xfcller\r");
    bytes.extend(frame("MSH|ok é".as_bytes()));
    let mut c = MllpCodec::new(64);
    let out = decode_all(&mut c, &bytes);
    let Err(FrameError::InvalidUtf8 { valid_up_to, msh }) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*valid_up_to, 19);
    assert_eq!(msh.as_deref(), Some("MSH|^~\\&|A"));
    assert_eq!(out[1], Ok("MSH|ok é".to_owned()));
}

#[test]
fn eof_inside_a_frame() {
    let mut c = MllpCodec::new(64);
    let out = decode_all(&mut c, b"\x0bMSH|1\x1c\r\x0bMSH|par");
    assert_eq!(
        out,
        [
            Ok("MSH|1".to_owned()),
            Err(FrameError::Incomplete { received: 7 })
        ]
    );
    assert_eq!(
        decode_all(&mut MllpCodec::new(64), b"\x0b"),
        [Err(FrameError::Incomplete { received: 0 })]
    );
    assert!(decode_all(&mut MllpCodec::new(64), b"junk").is_empty());
}

#[test]
fn encoder_frames_and_refuses_framing_bytes_and_oversize() {
    let mut c = MllpCodec::new(8);
    let mut dst = BytesMut::new();
    c.encode("MSH|1", &mut dst).unwrap();
    c.encode("MSH|2".to_owned(), &mut dst).unwrap();
    assert_eq!(&dst[..], b"\x0bMSH|1\x1c\r\x0bMSH|2\x1c\r");
    assert!(matches!(
        c.encode("a\x1cb", &mut dst),
        Err(MllpError::FramingByteInMessage)
    ));
    assert!(matches!(
        c.encode("a\x0bb", &mut dst),
        Err(MllpError::FramingByteInMessage)
    ));
    assert!(matches!(
        c.encode("123456789", &mut dst),
        Err(MllpError::OutgoingTooLarge)
    ));
    assert_eq!(dst.len(), 16);
}

// ---- over a real async stream ----

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

async fn send<S, I>(s: &mut S, item: I) -> Result<(), S::Error>
where
    S: Sink<I> + Unpin,
{
    poll_fn(|cx| Pin::new(&mut *s).poll_ready(cx)).await?;
    Pin::new(&mut *s).start_send(item)?;
    poll_fn(|cx| Pin::new(&mut *s).poll_flush(cx)).await
}

#[tokio::test]
async fn duplex_request_and_ack() {
    let (client, server) = tokio::io::duplex(64); // small buffer: frames cross many reads
    let server_task = tokio::spawn(async move {
        let mut framed = Framed::new(server, MllpCodec::new(64 * 1024));
        let mut seen = Vec::new();
        while let Some(item) = next(&mut framed).await {
            let text = item.unwrap().unwrap();
            let msg = Message::parse(&text).unwrap();
            let ack = Ack::new(AckOutcome::Accept)
                .build(&msg, "20260101120000", "ACK")
                .unwrap();
            seen.push(msg.control_id().as_str().unwrap().to_owned());
            send(&mut framed, ack).await.unwrap();
        }
        seen
    });

    let mut framed = Framed::new(client, MllpCodec::new(64 * 1024));
    let mut controls = Vec::new();
    for name in common::sample_names() {
        let msg = common::sample(&name);
        send(&mut framed, msg.as_str()).await.unwrap();
        let ack = next(&mut framed).await.unwrap().unwrap().unwrap();
        let ack = Message::parse(&ack).unwrap();
        let sent = Message::parse(&msg).unwrap();
        assert_eq!(ack.get("MSA-2").unwrap(), sent.control_id());
        controls.push(sent.control_id().as_str().unwrap().to_owned());
    }
    drop(framed);
    assert_eq!(server_task.await.unwrap(), controls);
}

#[tokio::test]
async fn duplex_sloppy_peer() {
    let (mut client, server) = tokio::io::duplex(16);
    let writer = tokio::spawn(async move {
        let mut bytes = b"\r\n".to_vec(); // keep-alive noise
        bytes.extend(frame(b"MSH|^~\\&|1"));
        bytes.extend(frame(&[b'x'; 300])); // too large
        bytes.extend(b"\x0bMSH|^~\\&|2\x1c"); // no CR, then EOF
        for chunk in bytes.chunks(7) {
            client.write_all(chunk).await.unwrap();
        }
    });
    let mut framed = FramedRead::new(server, MllpCodec::new(100));
    let mut items = Vec::new();
    while let Some(item) = next(&mut framed).await {
        items.push(item.unwrap());
    }
    writer.await.unwrap();
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0], Ok("MSH|^~\\&|1".to_owned()));
    assert!(matches!(
        items[1],
        Err(FrameError::TooLarge {
            max: 100,
            msh: None
        })
    ));
    assert_eq!(items[2], Ok("MSH|^~\\&|2".to_owned()));
    assert_eq!(framed.decoder().discarded_bytes(), 2 + 300 + 2);
}

// ---- properties ----

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Anything but the framing bytes (the encoder refuses those), UTF-8 or not.
    proptest::collection::vec(
        any::<u8>().prop_filter("framing", |b| *b != SB && *b != EB),
        0..200,
    )
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    // Anything but a start block.
    proptest::collection::vec(any::<u8>().prop_filter("start", |b| *b != SB), 0..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_chunkings_give_the_same_frames(
        frames in proptest::collection::vec((garbage(), message_bytes()), 0..8),
        tail in garbage(),
        cuts in proptest::collection::vec(0usize..2000, 0..30),
        max in 50usize..250,
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut garbage_len = tail.len();
        for (g, m) in &frames {
            stream.extend_from_slice(g);
            garbage_len += g.len();
            stream.extend(frame(m));
            expected.push(if m.len() > max {
                Err(())
            } else {
                match String::from_utf8(m.clone()) {
                    Ok(s) => Ok(s),
                    Err(_) => Err(()),
                }
            });
        }
        stream.extend_from_slice(&tail);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for c in cuts {
            chunks.push(&stream[start..c]);
            start = c;
        }
        chunks.push(&stream[start..]);

        let mut codec = MllpCodec::new(max);
        let out = decode_chunks(&mut codec, &chunks);
        let got: Vec<Result<String, ()>> = out.into_iter().map(|r| r.map_err(|_| ())).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(codec.abandoned_frames(), 0);
        // Discarded: the garbage, plus the bytes of oversized frames after the point of detection.
        prop_assert!(codec.discarded_bytes() >= garbage_len as u64);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        chunks in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![4 => any::<u8>(), 1 => Just(SB), 1 => Just(EB), 1 => Just(CR)],
                0..64
            ),
            0..10
        ),
        max in 0usize..64,
    ) {
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let mut codec = MllpCodec::new(max);
        let out = decode_chunks(&mut codec, &refs);
        let total: usize = chunks.iter().map(Vec::len).sum();
        prop_assert!(out.len() <= total);
        for s in out.into_iter().flatten() {
            prop_assert!(s.len() <= max);
            prop_assert!(!s.as_bytes().contains(&SB) && !s.as_bytes().contains(&EB));
        }
    }
}
