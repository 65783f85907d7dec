//! Makes every gRPC client's `:authority` acceptable to the HTTP/2 server behind the agent's unix sockets.
//!
//! Over a unix socket there is no host to name, and real clients each send something else as `:authority`:
//! grpc-go's CSI client `localhost`, kubelet's plugin watcher (also grpc-go) the percent-encoded socket path,
//! Python `grpcio`, grpc-java and grpcurl the raw path, some nothing. `h2`, under hyper and tonic, refuses a
//! request whose `:authority` does not parse as a URI authority with `RST_STREAM(PROTOCOL_ERROR)` before any
//! service sees it (hyperium/h2 PR #487 has been open for years; h2 0.4.20, the newest release, still does), so
//! kubelet could not register the agent at all.
//!
//! No service of the agent reads the authority, so the fix is at the connection: [`AuthorityRewriter`] reads the
//! client's half of the HTTP/2 connection frame by frame, passes every frame through untouched except header
//! blocks, and re-encodes each header block with an unparseable `:authority` replaced by `localhost`, what
//! grpc-go sends. A parseable authority, or none, is left as it is. Decoding needs the client's HPACK dynamic
//! table, so every header block is decoded (with `loona-hpack`) and re-encoded without indexing: the server's
//! decoder table then stays empty, and the two tables can never disagree. The server's half passes untouched.

use std::borrow::Cow;

use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;
use loona_hpack::encoder::encode_integer_into;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may set, so re-encoded frames never exceed what the server takes.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// A header block larger than this is refused (the server's own header list limit is far below it).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The largest HPACK dynamic table a client may ask the decoder for; the server advertises 4,096.
const MAX_DYNAMIC_TABLE: usize = 1 << 16;
/// What replaces an `:authority` the server would refuse: what grpc-go sends over a unix socket.
pub(crate) const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Why the client's half of a connection cannot be passed on; the connection is then closed, as the HTTP/2
/// server would close it for the same input.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("HTTP/2 header block of stream {stream_id} cannot be decoded (HPACK)")]
    Hpack {
        stream_id: u32,
        #[source]
        source: DecoderError,
    },
    #[error("HTTP/2 header block of stream {stream_id} is longer than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLong { stream_id: u32 },
    #[error("HTTP/2 {what} frame of stream {stream_id} is malformed (padding or priority longer than the frame)")]
    MalformedFrame { what: &'static str, stream_id: u32 },
    #[error("HTTP/2 header block of stream {stream_id} interrupted by a frame of type {frame_type:#x}")]
    InterruptedHeaderBlock { stream_id: u32, frame_type: u8 },
}

impl From<RewriteError> for std::io::Error {
    fn from(error: RewriteError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error)
    }
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    length: usize,
    frame_type: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            length: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            frame_type: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    fn write(length: usize, frame_type: u8, flags: u8, stream_id: u32, out: &mut Vec<u8>) {
        // `length` is at most MAX_FRAME_PAYLOAD, so it fits the 24-bit field.
        let length = u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes();
        out.extend_from_slice(&length[1..]);
        out.push(frame_type);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
    }
}

/// A header block being gathered from a HEADERS frame and its CONTINUATION frames.
#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    /// The HEADERS frame's flags (END_STREAM, PRIORITY), less PADDED (the padding is dropped) and END_HEADERS
    /// (set again on the last frame written).
    flags: u8,
    /// The HEADERS frame's priority fields, kept as they were.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

#[derive(Debug)]
enum State {
    /// Matching the client preface; `matched` bytes of it seen so far.
    Preface { matched: usize },
    /// Reading a frame header.
    FrameHeader {
        bytes: [u8; FRAME_HEADER_LEN],
        filled: usize,
    },
    /// Passing `remaining` payload bytes of a frame through.
    Payload { remaining: usize },
    /// Gathering the payload of a HEADERS or CONTINUATION frame.
    HeaderPayload { head: FrameHead, payload: Vec<u8> },
    /// Not HTTP/2 with prior knowledge: everything passes through for the server to refuse.
    Transparent,
}

/// Rewrites the client-to-server bytes of one HTTP/2 connection (see the module doc). Pure: bytes in, bytes out.
#[derive(Debug)]
pub(crate) struct AuthorityRewriter {
    state: State,
    decoder: HpackDecoder,
    pending: Option<PendingBlock>,
}

/// `loona_hpack::Decoder` has no `Debug`.
struct HpackDecoder(Decoder<'static>);

impl std::fmt::Debug for HpackDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpackDecoder")
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_DYNAMIC_TABLE);
        Self {
            state: State::Preface { matched: 0 },
            decoder: HpackDecoder(decoder),
            pending: None,
        }
    }
}

impl AuthorityRewriter {
    /// Consumes `input`, the next bytes the client sent, and appends what the server should read to `out`. A
    /// frame split across calls is held until it is whole (header blocks) or passed on as it comes (the rest).
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Transparent => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface { matched } => {
                    let wanted = &PREFACE[*matched..];
                    let take = wanted.len().min(input.len());
                    if input[..take] != wanted[..take] {
                        out.extend_from_slice(&PREFACE[..*matched]);
                        self.state = State::Transparent;
                        continue;
                    }
                    *matched += take;
                    input = &input[take..];
                    if *matched == PREFACE.len() {
                        out.extend_from_slice(PREFACE);
                        self.state = State::FrameHeader {
                            bytes: [0; FRAME_HEADER_LEN],
                            filled: 0,
                        };
                    }
                }
                State::FrameHeader { bytes, filled } => {
                    let take = (FRAME_HEADER_LEN - *filled).min(input.len());
                    bytes[*filled..*filled + take].copy_from_slice(&input[..take]);
                    *filled += take;
                    input = &input[take..];
                    if *filled == FRAME_HEADER_LEN {
                        let raw = *bytes;
                        self.start_frame(&raw, out)?;
                    }
                }
                State::Payload { remaining } => {
                    let take = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    *remaining -= take;
                    input = &input[take..];
                    if *remaining == 0 {
                        self.state = next_frame();
                    }
                }
                State::HeaderPayload { head, payload } => {
                    let take = (head.length - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if payload.len() == head.length {
                        let head = *head;
                        let payload = std::mem::take(payload);
                        self.state = next_frame();
                        self.header_frame(head, &payload, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_frame(&mut self, raw: &[u8; FRAME_HEADER_LEN], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let head = FrameHead::parse(raw);
        // The header is consumed: whatever the frame, the next bytes are its payload or the next frame.
        self.state = next_frame();
        let is_header_frame = matches!(head.frame_type, FRAME_HEADERS | FRAME_CONTINUATION);
        if let Some(pending) = &self.pending
            && (head.frame_type != FRAME_CONTINUATION || head.stream_id != pending.stream_id)
        {
            return Err(RewriteError::InterruptedHeaderBlock {
                stream_id: pending.stream_id,
                frame_type: head.frame_type,
            });
        }
        if !is_header_frame {
            out.extend_from_slice(raw);
            if head.length > 0 {
                self.state = State::Payload { remaining: head.length };
            }
            return Ok(());
        }
        if head.length > MAX_HEADER_BLOCK {
            return Err(RewriteError::HeaderBlockTooLong {
                stream_id: head.stream_id,
            });
        }
        if head.length == 0 {
            return self.header_frame(head, &[], out);
        }
        self.state = State::HeaderPayload {
            head,
            payload: Vec::with_capacity(head.length),
        };
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION frame: its fragment joins the pending block, which is re-encoded once
    /// END_HEADERS arrives.
    fn header_frame(&mut self, head: FrameHead, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let fragment = if head.frame_type == FRAME_HEADERS {
            let (priority, fragment) = headers_frame_parts(head, payload)?;
            self.pending = Some(PendingBlock {
                stream_id: head.stream_id,
                flags: head.flags & !(FLAG_PADDED | FLAG_END_HEADERS),
                priority,
                fragment: Vec::with_capacity(fragment.len()),
            });
            fragment
        } else if self.pending.is_none() {
            // A CONTINUATION with no HEADERS before it: the server answers PROTOCOL_ERROR; pass it on for that.
            FrameHead::write(head.length, head.frame_type, head.flags, head.stream_id, out);
            out.extend_from_slice(payload);
            return Ok(());
        } else {
            payload
        };
        let Some(pending) = self.pending.as_mut() else {
            return Ok(());
        };
        if pending.fragment.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(RewriteError::HeaderBlockTooLong {
                stream_id: pending.stream_id,
            });
        }
        pending.fragment.extend_from_slice(fragment);
        if head.flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.pending.take()
        {
            self.write_block(&block, out)?;
        }
        Ok(())
    }

    fn write_block(&mut self, block: &PendingBlock, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        if let Some(priority) = block.priority {
            encoded.extend_from_slice(&priority);
        }
        self.decoder
            .0
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if name.as_ref() == b":authority" && !is_valid_authority(&value) {
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(&value),
                        "HTTP/2 :authority the server would refuse replaced by localhost"
                    );
                    Cow::Borrowed(REPLACEMENT_AUTHORITY)
                } else {
                    value
                };
                encode_never_indexed(&name, &value, &mut encoded);
            })
            .map_err(|source| RewriteError::Hpack {
                stream_id: block.stream_id,
                source,
            })?;
        let mut chunks = encoded.chunks(MAX_FRAME_PAYLOAD).peekable();
        let mut frame_type = FRAME_HEADERS;
        let mut frame_flags = block.flags;
        if chunks.peek().is_none() {
            FrameHead::write(0, frame_type, frame_flags | FLAG_END_HEADERS, block.stream_id, out);
        }
        while let Some(chunk) = chunks.next() {
            let end = if chunks.peek().is_none() { FLAG_END_HEADERS } else { 0 };
            FrameHead::write(chunk.len(), frame_type, frame_flags | end, block.stream_id, out);
            out.extend_from_slice(chunk);
            frame_type = FRAME_CONTINUATION;
            frame_flags = 0;
        }
        Ok(())
    }
}

fn next_frame() -> State {
    State::FrameHeader {
        bytes: [0; FRAME_HEADER_LEN],
        filled: 0,
    }
}

/// A HEADERS frame's priority fields and header block fragment, without its padding (RFC 9113 §6.2).
fn headers_frame_parts(head: FrameHead, payload: &[u8]) -> Result<(Option<[u8; 5]>, &[u8]), RewriteError> {
    let malformed = || RewriteError::MalformedFrame {
        what: "HEADERS",
        stream_id: head.stream_id,
    };
    let mut rest = payload;
    let mut padding = 0;
    if head.flags & FLAG_PADDED != 0 {
        let (&pad_length, after) = rest.split_first().ok_or_else(malformed)?;
        padding = usize::from(pad_length);
        rest = after;
    }
    let mut priority = None;
    if head.flags & FLAG_PRIORITY != 0 {
        let (fields, after) = rest.split_first_chunk::<5>().ok_or_else(malformed)?;
        priority = Some(*fields);
        rest = after;
    }
    let fragment_len = rest.len().checked_sub(padding).ok_or_else(malformed)?;
    Ok((priority, &rest[..fragment_len]))
}

/// The check `h2` makes before it accepts a request.
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A literal header field never indexed, with a literal name (RFC 7541 §6.2.3), strings without Huffman coding.
fn encode_never_indexed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x10);
    for string in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = encode_integer_into(string.len(), 7, 0, out);
        out.extend_from_slice(string);
    }
}

#[cfg(test)]
mod tests;
