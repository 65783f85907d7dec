use loona_hpack::{Decoder, Encoder};
use pretty_assertions::assert_eq;

use super::*;

const FLAG_END_STREAM: u8 = 0x1;
const FRAME_DATA: u8 = 0x0;
const FRAME_SETTINGS: u8 = 0x4;

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

fn headers(list: &[(&str, &str)]) -> Headers {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn request(authority: Option<&str>) -> Headers {
    let mut list = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/csi.v1.Identity/GetPluginInfo"),
    ];
    if let Some(authority) = authority {
        list.push((":authority", authority));
    }
    list.extend([("content-type", "application/grpc"), ("te", "trailers")]);
    headers(&list)
}

fn frame(frame_type: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHead::write(payload.len(), frame_type, flags, stream_id, &mut out);
    out.extend_from_slice(payload);
    out
}

fn encode(encoder: &mut Encoder<'_>, headers: &Headers) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

/// A frame as the server reads it.
#[derive(Debug, PartialEq)]
struct Frame {
    frame_type: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let head = FrameHead::parse(bytes[..FRAME_HEADER_LEN].try_into().unwrap());
        let end = FRAME_HEADER_LEN + head.length;
        frames.push(Frame {
            frame_type: head.frame_type,
            flags: head.flags,
            stream_id: head.stream_id,
            payload: bytes[FRAME_HEADER_LEN..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    frames
}

/// Feeds `input` in one call and, separately, one byte at a time; both must give the same bytes.
fn rewrite(input: &[u8]) -> Vec<u8> {
    let mut whole = Vec::new();
    AuthorityRewriter::default().feed(input, &mut whole).unwrap();
    let mut rewriter = AuthorityRewriter::default();
    let mut bytewise = Vec::new();
    for byte in input {
        rewriter.feed(std::slice::from_ref(byte), &mut bytewise).unwrap();
    }
    assert_eq!(whole, bytewise, "the output depends on how the input was split");
    whole
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    for frame in frames {
        bytes.extend_from_slice(frame);
    }
    bytes
}

/// The server's view: the frames after the preface, and the header lists of the HEADERS frames decoded in order
/// with one decoder, as the server's is.
fn server_view(output: &[u8]) -> (Vec<Frame>, Vec<Headers>) {
    assert_eq!(&output[..PREFACE.len()], PREFACE);
    let frames = frames(&output[PREFACE.len()..]);
    let mut decoder = Decoder::new();
    let lists = frames
        .iter()
        .filter(|f| f.frame_type == FRAME_HEADERS)
        .map(|f| decoder.decode(&f.payload).unwrap())
        .collect();
    (frames, lists)
}

#[test]
fn unparseable_authorities_become_localhost_and_nothing_else_changes() {
    for authority in [
        "%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fsecrets-store.csi.k8s.io-reg.sock",
        "/run/secrets-store-csi/csi.sock",
        "",
        "unix:///tmp/csi.sock",
    ] {
        let mut encoder = Encoder::new();
        let block = encode(&mut encoder, &request(Some(authority)));
        let output = rewrite(&connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]));
        let (frames, lists) = server_view(&output);
        assert_eq!(lists, vec![request(Some("localhost"))], "authority {authority:?}");
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].flags, frames[0].stream_id), (FLAG_END_HEADERS, 1));
    }
}

#[test]
fn parseable_or_absent_authorities_are_kept() {
    for authority in [Some("localhost"), Some("[::]:50051"), Some("csi.sock"), None] {
        let mut encoder = Encoder::new();
        let block = encode(&mut encoder, &request(authority));
        let output = rewrite(&connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]));
        assert_eq!(
            server_view(&output).1,
            vec![request(authority)],
            "authority {authority:?}"
        );
    }
}

#[test]
fn the_clients_dynamic_table_is_followed_across_requests() {
    // The client's encoder indexes each header, so the second and third requests refer to table entries.
    let mut encoder = Encoder::new();
    let raw = "/run/csi/csi.sock";
    let blocks: Vec<Vec<u8>> = (0..3).map(|_| encode(&mut encoder, &request(Some(raw)))).collect();
    assert!(blocks[1].len() < blocks[0].len(), "the later requests are indexed");
    let input: Vec<Vec<u8>> = blocks
        .iter()
        .zip([1, 3, 5])
        .map(|(block, stream)| frame(FRAME_HEADERS, FLAG_END_HEADERS, stream, block))
        .collect();
    let (frames, lists) = server_view(&rewrite(&connection(&input)));
    assert_eq!(lists, vec![request(Some("localhost")); 3]);
    assert_eq!(frames.iter().map(|f| f.stream_id).collect::<Vec<_>>(), vec![1, 3, 5]);
}

#[test]
fn other_frames_pass_byte_for_byte() {
    let settings = frame(FRAME_SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
    let mut encoder = Encoder::new();
    let headers = frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &encode(&mut encoder, &request(Some("localhost"))),
    );
    let data = frame(FRAME_DATA, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 3, 1, 2, 3]);
    let empty_data = frame(FRAME_DATA, 0, 3, &[]);
    let output = rewrite(&connection(&[
        settings.clone(),
        headers,
        data.clone(),
        empty_data.clone(),
    ]));
    let frames = frames(&output[PREFACE.len()..]);
    assert_eq!(frames.len(), 4);
    assert_eq!(
        frames[0],
        Frame {
            frame_type: FRAME_SETTINGS,
            flags: 0,
            stream_id: 0,
            payload: settings[FRAME_HEADER_LEN..].to_vec()
        }
    );
    assert_eq!(
        frames[2],
        Frame {
            frame_type: FRAME_DATA,
            flags: FLAG_END_STREAM,
            stream_id: 1,
            payload: vec![0, 0, 0, 0, 3, 1, 2, 3]
        }
    );
    assert_eq!(
        frames[3],
        Frame {
            frame_type: FRAME_DATA,
            flags: 0,
            stream_id: 3,
            payload: vec![]
        }
    );
}

#[test]
fn padding_is_dropped_and_priority_and_end_stream_kept() {
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request(Some("%2Fcsi.sock")));
    let priority = [0x80, 0, 0, 0, 7];
    let mut payload = vec![3];
    payload.extend_from_slice(&priority);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let flags = FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
    let output = rewrite(&connection(&[frame(FRAME_HEADERS, flags, 9, &payload)]));
    let frames = frames(&output[PREFACE.len()..]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].flags, FLAG_END_HEADERS | FLAG_PRIORITY | FLAG_END_STREAM);
    assert_eq!(frames[0].payload[..5], priority);
    let decoded = Decoder::new().decode(&frames[0].payload[5..]).unwrap();
    assert_eq!(decoded, request(Some("localhost")));
}

#[test]
fn a_block_split_over_continuations_is_joined() {
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request(Some("/tmp/csi.sock")));
    let (first, rest) = block.split_at(5);
    let (second, third) = rest.split_at(7);
    let output = rewrite(&connection(&[
        frame(FRAME_HEADERS, FLAG_END_STREAM, 1, first),
        frame(FRAME_CONTINUATION, 0, 1, second),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, third),
    ]));
    let (frames, lists) = server_view(&output);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].flags, FLAG_END_STREAM | FLAG_END_HEADERS);
    assert_eq!(lists, vec![request(Some("localhost"))]);
}

#[test]
fn a_long_block_is_written_as_headers_and_continuations_within_the_minimum_frame_size() {
    let mut list = request(Some("/tmp/csi.sock"));
    list.push((b"x-large".to_vec(), vec![b'a'; 40_000]));
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &list);
    let (first, rest) = block.split_at(MAX_FRAME_PAYLOAD);
    let (second, third) = rest.split_at(MAX_FRAME_PAYLOAD);
    let output = rewrite(&connection(&[
        frame(FRAME_HEADERS, 0, 1, first),
        frame(FRAME_CONTINUATION, 0, 1, second),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, third),
    ]));
    let frames = frames(&output[PREFACE.len()..]);
    assert_eq!(
        frames.iter().map(|f| (f.frame_type, f.flags)).collect::<Vec<_>>(),
        vec![
            (FRAME_HEADERS, 0),
            (FRAME_CONTINUATION, 0),
            (FRAME_CONTINUATION, FLAG_END_HEADERS)
        ]
    );
    assert!(frames.iter().all(|f| f.payload.len() <= MAX_FRAME_PAYLOAD));
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
    let mut expected = request(Some("localhost"));
    expected.push((b"x-large".to_vec(), vec![b'a'; 40_000]));
    assert_eq!(Decoder::new().decode(&joined).unwrap(), expected);
}

#[test]
fn empty_header_frames_are_one_frame_each() {
    // A zero-length CONTINUATION with nothing before it passes on (the server answers PROTOCOL_ERROR); a
    // zero-length HEADERS is an empty block. Each is read once: the next frame follows.
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request(Some("localhost")));
    let output = rewrite(&connection(&[
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[]),
        frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[]),
        frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &block),
    ]));
    let frames = frames(&output[PREFACE.len()..]);
    assert_eq!(
        frames.iter().map(|f| (f.frame_type, f.stream_id)).collect::<Vec<_>>(),
        vec![(FRAME_CONTINUATION, 1), (FRAME_HEADERS, 3), (FRAME_HEADERS, 5)]
    );
    assert!(frames[0].payload.is_empty() && frames[1].payload.is_empty());
    assert_eq!(
        Decoder::new().decode(&frames[2].payload).unwrap(),
        request(Some("localhost"))
    );
}

#[test]
fn what_is_not_http2_passes_untouched() {
    let input = b"GET /healthz HTTP/1.1\r\nHost: /run/csi.sock\r\n\r\n";
    assert_eq!(rewrite(input), input.to_vec());
    // A preface broken off after a matching start.
    let input = b"PRI * HTTP/1.1\r\n";
    assert_eq!(rewrite(input), input.to_vec());
}

fn rewrite_error(input: &[u8]) -> String {
    let mut out = Vec::new();
    AuthorityRewriter::default()
        .feed(input, &mut out)
        .unwrap_err()
        .to_string()
}

#[test]
fn broken_header_blocks_close_the_connection_with_a_reason() {
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request(None));
    assert_eq!(
        rewrite_error(&connection(&[
            frame(FRAME_HEADERS, 0, 1, &block),
            frame(FRAME_DATA, 0, 1, b"x"),
        ])),
        "HTTP/2 header block of stream 1 interrupted by a frame of type 0x0"
    );
    assert_eq!(
        rewrite_error(&connection(&[frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            1,
            &[200, 1, 2]
        )])),
        "HTTP/2 HEADERS frame of stream 1 is malformed (padding or priority longer than the frame)"
    );
    assert_eq!(
        rewrite_error(&connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0xff])])),
        "HTTP/2 header block of stream 3 cannot be decoded (HPACK)"
    );
    let mut oversized = PREFACE.to_vec();
    FrameHead::write(MAX_HEADER_BLOCK + 1, FRAME_HEADERS, 0, 5, &mut oversized);
    assert_eq!(
        rewrite_error(&oversized),
        "HTTP/2 header block of stream 5 is longer than 1048576 bytes"
    );
}

/// Bytes from a client nobody vouches for: whatever arrives after the preface, the rewriter answers with bytes or
/// an error, never a panic, and does not depend on how the bytes were split.
#[test]
fn arbitrary_input_never_panics() {
    // xorshift64*: reproducible without a dependency.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut encoder = Encoder::new();
    let valid_block = encode(&mut encoder, &request(Some("/run/csi.sock")));
    for case in 0..20_000 {
        let mut input = PREFACE.to_vec();
        for _ in 0..(next() % 6) {
            let frame_type =
                [FRAME_HEADERS, FRAME_CONTINUATION, FRAME_DATA, FRAME_SETTINGS, 0x5, 0x8][(next() % 6) as usize];
            let flags = (next() & 0x2d) as u8;
            let mut payload: Vec<u8> = (0..(next() % 40)).map(|_| next() as u8).collect();
            if case % 3 == 0 {
                payload.extend_from_slice(&valid_block[..(next() as usize % (valid_block.len() + 1))]);
            }
            input.extend_from_slice(&frame(frame_type, flags, (next() % 4) as u32, &payload));
        }
        if case % 5 == 0 {
            // A frame header that lies about its length.
            input.extend_from_slice(&[0, 0xff, 0xff, FRAME_HEADERS, 0, 0, 0, 0, 1, 0x82]);
        }
        let whole = AuthorityRewriter::default()
            .feed(&input, &mut Vec::new())
            .map_err(|e| e.to_string());
        let mut rewriter = AuthorityRewriter::default();
        let mut out = Vec::new();
        let mut split = Ok(());
        for chunk in input.chunks(1 + (next() % 7) as usize) {
            split = rewriter.feed(chunk, &mut out).map_err(|e| e.to_string());
            if split.is_err() {
                break;
            }
        }
        assert_eq!(whole.is_ok(), split.is_ok(), "case {case}: {whole:?} vs {split:?}");
    }
}
