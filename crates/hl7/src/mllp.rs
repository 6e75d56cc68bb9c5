//! MLLP (Minimal Lower Layer Protocol) framing for `tokio_util::codec`.
//!
//! A frame is `0x0B <message bytes> 0x1C 0x0D`. The decoder is written for hostile or sloppy
//! peers:
//!
//! * **Bounded**: a message longer than `max_frame` bytes (framing excluded) is reported as
//!   [`FrameError::TooLarge`] as soon as the limit is crossed — not when it ends, so a sender that
//!   waits for its ACK before going on gets one — and the rest of it is discarded up to the next
//!   0x0B. Memory per connection stays around `max_frame`.
//! * **Resynchronising**: bytes outside a frame (before a 0x0B) are discarded and counted
//!   ([`MllpCodec::discarded_bytes`]). A 0x0B inside a frame means the peer gave up on the frame
//!   and started again: the partial frame is discarded and counted
//!   ([`MllpCodec::abandoned_frames`]) and a new frame starts.
//! * **Lenient end block**: a 0x1C followed by anything other than 0x0D still ends the frame (some
//!   senders omit the CR); the byte after it is then treated as outside a frame (discarded unless
//!   it is 0x0B). Counted in [`MllpCodec::lenient_ends`]. A 0x1C that is the last byte received
//!   waits for the next byte to decide.
//! * **Per-frame errors**: the decoder's item is `Result<String, FrameError>`, so an oversized or
//!   non-UTF-8 frame is one bad item the caller can answer with an AR, and the stream goes on. The
//!   decoder's own error type only carries I/O errors (which end the stream).
//! * **Incremental**: partial frames across reads are fine, and bytes already scanned are not
//!   scanned again, so a peer dripping one byte at a time costs linear time.
//!
//! Messages must be UTF-8 (the gateway's feeds are configured so); a Latin-1 feed shows up as
//! [`FrameError::InvalidUtf8`] frames.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start block.
pub const START: u8 = 0x0B;
/// End block, first byte.
pub const END: u8 = 0x1C;
/// End block, second byte.
pub const CR: u8 = 0x0D;

/// A frame that arrived but cannot be delivered as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message grew beyond the maximum frame size; the rest of it is being discarded.
    #[error("MLLP frame larger than {max} bytes")]
    TooLarge {
        /// The configured maximum.
        max: usize,
        /// The message's first segment, if it is an MSH line that fits in the bytes received and
        /// is UTF-8: enough to address an AR ACK and echo MSH-10 (see
        /// [`crate::Ack::build_unparsed`]). Never printed by `Display`.
        msh: Option<String>,
    },
    /// The frame is not valid UTF-8.
    #[error("MLLP frame is not valid UTF-8 (first invalid byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
        /// The first segment if it is a valid-UTF-8 MSH line (as for `TooLarge`).
        msh: Option<String>,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside an MLLP frame ({received} bytes received)")]
    Incomplete {
        /// Bytes of the frame received before the end of the stream.
        received: usize,
    },
}

/// Stream-level MLLP errors.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An outgoing message contains 0x0B or 0x1C and would break the framing.
    #[error("outgoing message contains an MLLP framing byte")]
    FramingByteInMessage,
    /// An outgoing message is larger than the maximum frame size.
    #[error("outgoing message larger than the maximum frame size")]
    OutgoingTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame: discard until 0x0B.
    Seeking,
    /// Inside a frame; the first `scanned` bytes of the buffer hold no 0x0B or 0x1C.
    InFrame { scanned: usize },
}

/// The MLLP codec. One per connection (it keeps the framing state and counters).
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
    discarded_bytes: u64,
    abandoned_frames: u64,
    lenient_ends: u64,
}

impl MllpCodec {
    /// A codec accepting messages of at most `max_frame` bytes (framing bytes excluded), in both
    /// directions.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            state: State::Seeking,
            discarded_bytes: 0,
            abandoned_frames: 0,
            lenient_ends: 0,
        }
    }

    /// The maximum message size in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes thrown away so far: garbage outside frames, abandoned partial frames and the
    /// discarded part of oversized frames.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded_bytes
    }

    /// Frames cut short by a new 0x0B.
    pub fn abandoned_frames(&self) -> u64 {
        self.abandoned_frames
    }

    /// Frames ended by a 0x1C without the 0x0D.
    pub fn lenient_ends(&self) -> u64 {
        self.lenient_ends
    }

    fn discard(&mut self, buf: &mut BytesMut, n: usize) {
        self.discarded_bytes = self.discarded_bytes.saturating_add(n as u64);
        buf.advance(n);
    }

    /// Turns the message bytes of a complete frame into the item.
    fn deliver(&mut self, frame: BytesMut) -> Result<String, FrameError> {
        if frame.len() > self.max_frame {
            self.discarded_bytes = self.discarded_bytes.saturating_add(frame.len() as u64);
            return Err(FrameError::TooLarge {
                max: self.max_frame,
                msh: leading_msh(&frame),
            });
        }
        String::from_utf8(frame.to_vec()).map_err(|e| FrameError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
            msh: leading_msh(&frame),
        })
    }
}

/// The first segment of `bytes`, if it is a complete, UTF-8 MSH line.
fn leading_msh(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = bytes.get(..end)?;
    if !line.starts_with(b"MSH") {
        return None;
    }
    String::from_utf8(line.to_vec()).ok()
}

impl Decoder for MllpCodec {
    type Item = Result<String, FrameError>;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, MllpError> {
        loop {
            match self.state {
                State::Seeking => match buf.iter().position(|&b| b == START) {
                    None => {
                        let n = buf.len();
                        self.discard(buf, n);
                        return Ok(None);
                    }
                    Some(i) => {
                        self.discard(buf, i);
                        buf.advance(1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                },
                State::InFrame { scanned } => {
                    let found = buf
                        .get(scanned..)
                        .and_then(|rest| rest.iter().position(|&b| b == START || b == END))
                        .map(|i| i + scanned);
                    let Some(i) = found else {
                        if buf.len() > self.max_frame {
                            // Report now (the sender may be waiting for an ACK), discard the rest.
                            let msh = leading_msh(buf);
                            let n = buf.len();
                            self.discard(buf, n);
                            self.state = State::Seeking;
                            return Ok(Some(Err(FrameError::TooLarge {
                                max: self.max_frame,
                                msh,
                            })));
                        }
                        self.state = State::InFrame { scanned: buf.len() };
                        return Ok(None);
                    };
                    if buf.get(i) == Some(&START) {
                        // The peer restarted: drop the partial frame, start a new one.
                        self.abandoned_frames = self.abandoned_frames.saturating_add(1);
                        self.discard(buf, i);
                        buf.advance(1);
                        self.state = State::InFrame { scanned: 0 };
                        continue;
                    }
                    // 0x1C at i.
                    match buf.get(i + 1) {
                        None => {
                            // Cannot tell yet whether 0x0D follows; wait (but stay bounded).
                            if i > self.max_frame {
                                let msh = leading_msh(buf);
                                let n = buf.len();
                                self.discard(buf, n);
                                self.state = State::Seeking;
                                return Ok(Some(Err(FrameError::TooLarge {
                                    max: self.max_frame,
                                    msh,
                                })));
                            }
                            self.state = State::InFrame { scanned: i };
                            return Ok(None);
                        }
                        Some(&next) => {
                            let frame = buf.split_to(i);
                            if next == CR {
                                buf.advance(2);
                            } else {
                                self.lenient_ends = self.lenient_ends.saturating_add(1);
                                buf.advance(1);
                            }
                            self.state = State::Seeking;
                            return Ok(Some(self.deliver(frame)));
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, MllpError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        match self.state {
            State::Seeking => Ok(None),
            State::InFrame { .. } => {
                self.state = State::Seeking;
                // A frame whose 0x1C is the very last byte: accept it, the CR was lost.
                if buf.last() == Some(&END) {
                    let frame = buf.split_to(buf.len() - 1);
                    buf.clear();
                    self.lenient_ends = self.lenient_ends.saturating_add(1);
                    return Ok(Some(self.deliver(frame)));
                }
                let received = buf.len();
                self.discard(buf, received);
                Ok(Some(Err(FrameError::Incomplete { received })))
            }
        }
    }
}

impl Encoder<&str> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, msg: &str, dst: &mut BytesMut) -> Result<(), MllpError> {
        if msg.len() > self.max_frame {
            return Err(MllpError::OutgoingTooLarge);
        }
        if msg.bytes().any(|b| b == START || b == END) {
            return Err(MllpError::FramingByteInMessage);
        }
        dst.reserve(msg.len() + 3);
        dst.put_u8(START);
        dst.put_slice(msg.as_bytes());
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

impl Encoder<String> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, msg: String, dst: &mut BytesMut) -> Result<(), MllpError> {
        self.encode(msg.as_str(), dst)
    }
}
