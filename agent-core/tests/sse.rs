//! Integration tests for the SSE codec: WHATWG conformance, chunk-boundary independence,
//! limits, linear time, and encoder/decoder round trips.

use std::time::Duration;

use agent_core::sse::{
    SseDecoder, SseError, SseEvent, SseItem, SseLimits, encode_comment, encode_event, encode_retry,
};
use proptest::prelude::*;

/// Everything observable after decoding a whole stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Result<SseItem, SseError>>,
    pending: bool,
    last_event_id: Option<String>,
    retry: Option<Duration>,
}

/// Decodes `chunks` as one stream (draining after every push, then finishing).
fn decode_with<'a>(limits: SseLimits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = SseDecoder::with_limits(limits);
    let mut items = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_item() {
            items.push(item);
        }
    }
    decoder.finish();
    while let Some(item) = decoder.next_item() {
        items.push(item);
    }
    Outcome {
        items,
        pending: decoder.has_pending_data(),
        last_event_id: decoder.last_event_id().map(str::to_owned),
        retry: decoder.retry(),
    }
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    decode_with(SseLimits::default(), chunks)
}

/// Decodes a whole stream and expects no error.
fn decode(bytes: &[u8]) -> Vec<SseItem> {
    decode_chunks([bytes])
        .items
        .into_iter()
        .map(|item| item.expect("no error"))
        .collect()
}

fn event(event: &str, data: &str, id: Option<&str>) -> SseItem {
    SseItem::Event(SseEvent {
        event: event.to_owned(),
        data: data.to_owned(),
        id: id.map(str::to_owned),
    })
}

fn message(data: &str) -> SseItem {
    event("message", data, None)
}

fn comment(text: &str) -> SseItem {
    SseItem::Comment(text.to_owned())
}

/// Splits `bytes` at the given (sorted, in-range) positions.
fn split_at_positions(bytes: &[u8], positions: &[usize]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for &position in positions {
        chunks.push(bytes[start..position].to_vec());
        start = position;
    }
    chunks.push(bytes[start..].to_vec());
    chunks
}

fn decode_split(limits: SseLimits, bytes: &[u8], positions: &[usize]) -> Outcome {
    let chunks = split_at_positions(bytes, positions);
    decode_with(limits, chunks.iter().map(Vec::as_slice))
}

/// Replaces CRLF and CR with LF.
fn normalise_line_ends(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// A stream exercising most of the grammar: BOM, comments, all three line ends, multi-line
/// data, event/id/retry, multibyte and invalid UTF-8, and an unterminated final event.
fn reference_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    stream.extend_from_slice("\u{FEFF}: hello comment\r\n".as_bytes());
    stream.extend_from_slice(b"retry: 2500\n");
    stream.extend_from_slice(
        "event: greeting\r\nid: 1\ndata: héllo\r\ndata:wörld €\r\n\r".as_bytes(),
    );
    stream.extend_from_slice(b": keep-alive\n\n");
    stream.extend_from_slice("id: 2\rdata: 😀 emoji\rdata\r\r\n".as_bytes());
    stream.extend_from_slice(b"event: x\ndata:  two spaces\nunknown: field\n\n");
    stream.extend_from_slice(b"data: bad \xFF\xFE bytes \xE2\x82\n\n");
    stream.extend_from_slice(b"id\ndata: after id reset\n\n");
    stream.extend_from_slice(b"retry: 10s\nevent: cut\ndata: unterminated");
    stream
}

fn reference_items() -> Vec<SseItem> {
    vec![
        comment("hello comment"),
        SseItem::Retry(Duration::from_millis(2500)),
        event("greeting", "héllo\nwörld €", Some("1")),
        comment("keep-alive"),
        event("message", "😀 emoji\n", Some("2")),
        event("x", " two spaces", Some("2")),
        event("message", "bad \u{FFFD}\u{FFFD} bytes \u{FFFD}", Some("2")),
        message("after id reset"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Line endings
// ---------------------------------------------------------------------------------------------

#[test]
fn lf_line_endings() {
    assert_eq!(
        decode(b"data: a\n\ndata: b\n\n"),
        [message("a"), message("b")]
    );
}

#[test]
fn cr_line_endings() {
    assert_eq!(
        decode(b"data: a\r\rdata: b\r\r"),
        [message("a"), message("b")]
    );
}

#[test]
fn crlf_line_endings() {
    assert_eq!(
        decode(b"data: a\r\n\r\ndata: b\r\n\r\n"),
        [message("a"), message("b")]
    );
}

#[test]
fn mixed_line_endings_in_one_event() {
    assert_eq!(
        decode(b"data: a\rdata: b\ndata: c\r\n\n"),
        [message("a\nb\nc")]
    );
}

#[test]
fn crlf_split_between_chunks_is_one_line_end() {
    // If the LF were a second line end it would be a blank line dispatching "a" alone.
    let outcome = decode_chunks([&b"data: a\r"[..], b"\ndata: b\r\n\r\n"]);
    assert_eq!(outcome.items, [Ok(message("a\nb"))]);
}

#[test]
fn cr_at_chunk_end_terminates_the_line_immediately() {
    let mut decoder = SseDecoder::new();
    decoder.push(b"data: a\r");
    assert_eq!(decoder.next_item(), None);
    decoder.push(b"\r");
    // The blank line is recognised without waiting for the next chunk.
    assert_eq!(decoder.next_item(), Some(Ok(message("a"))));
    assert_eq!(decoder.next_item(), None);
    // A later LF belongs to the CRLF and is skipped; it is not another blank line.
    decoder.push(b"\ndata: b\n\n");
    assert_eq!(decoder.next_item(), Some(Ok(message("b"))));
    assert_eq!(decoder.next_item(), None);
}

#[test]
fn cr_at_chunk_end_followed_by_a_non_lf() {
    let outcome = decode_chunks([&b"data: a\r"[..], b"data: b\r", b"\r"]);
    assert_eq!(outcome.items, [Ok(message("a\nb"))]);
    assert!(!outcome.pending);
}

#[test]
fn cr_at_chunk_end_then_comment_is_surfaced_at_once() {
    let mut decoder = SseDecoder::new();
    decoder.push(b": ping\r");
    assert_eq!(decoder.next_item(), Some(Ok(comment("ping"))));
}

// ---------------------------------------------------------------------------------------------
// Byte order mark
// ---------------------------------------------------------------------------------------------

#[test]
fn bom_is_stripped_at_stream_start() {
    assert_eq!(decode("\u{FEFF}data: a\n\n".as_bytes()), [message("a")]);
}

#[test]
fn bom_split_across_chunks_is_stripped() {
    let stream = "\u{FEFF}data: a\n\n".as_bytes();
    for first in 0..=3 {
        for second in first..=3 {
            let outcome =
                decode_chunks([&stream[..first], &stream[first..second], &stream[second..]]);
            assert_eq!(
                outcome.items,
                [Ok(message("a"))],
                "split at {first} and {second}"
            );
        }
    }
}

#[test]
fn bom_is_only_stripped_at_stream_start() {
    // A second BOM makes the field name "\u{FEFF}data", which is unknown.
    assert_eq!(decode("\u{FEFF}\u{FEFF}data: a\n\n".as_bytes()), []);
    assert_eq!(
        decode("data: a\n\n\u{FEFF}data: b\n\ndata: c\n\n".as_bytes()),
        [message("a"), message("c")]
    );
}

#[test]
fn partial_bom_prefix_is_ordinary_input() {
    // EF BB followed by something else is not a BOM: it is invalid UTF-8 in a field name.
    assert_eq!(decode(b"\xEF\xBBdata: a\n\ndata: b\n\n"), [message("b")]);
    // A stream consisting of a BOM prefix only ends mid-line.
    let outcome = decode_chunks([&b"\xEF\xBB"[..]]);
    assert_eq!(outcome.items, []);
    assert!(outcome.pending);
}

// ---------------------------------------------------------------------------------------------
// Fields
// ---------------------------------------------------------------------------------------------

#[test]
fn comments_are_surfaced() {
    assert_eq!(
        decode(b": keep-alive\n:\n:  indented\n:no space\ndata: a\n: inside\n\n"),
        [
            comment("keep-alive"),
            comment(""),
            comment(" indented"),
            comment("no space"),
            comment("inside"),
            message("a"),
        ]
    );
}

#[test]
fn multi_line_data_is_joined_with_lf() {
    assert_eq!(
        decode(b"data: one\ndata: two\ndata: three\n\n"),
        [message("one\ntwo\nthree")]
    );
}

#[test]
fn only_one_leading_space_is_stripped() {
    assert_eq!(
        decode(b"data:no space\n\ndata:  two\n\ndata:\tx\n\n"),
        [message("no space"), message(" two"), message("\tx")]
    );
}

#[test]
fn empty_data_value_dispatches_an_event_with_empty_data() {
    assert_eq!(decode(b"data:\n\n"), [message("")]);
    assert_eq!(decode(b"data: \n\n"), [message("")]);
    assert_eq!(decode(b"data:\ndata:\n\n"), [message("\n")]);
}

#[test]
fn field_without_colon_has_an_empty_value() {
    assert_eq!(decode(b"data\n\n"), [message("")]);
    assert_eq!(decode(b"data\ndata\n\n"), [message("\n")]);
    // "event" alone sets an empty event type, which means "message".
    assert_eq!(decode(b"event: x\nevent\ndata: a\n\n"), [message("a")]);
}

#[test]
fn event_id_and_retry_fields() {
    let outcome = decode_chunks([&b"event: update\nid: 42\nretry: 1500\ndata: {}\n\n"[..]]);
    assert_eq!(
        outcome.items,
        [
            Ok(SseItem::Retry(Duration::from_millis(1500))),
            Ok(event("update", "{}", Some("42"))),
        ]
    );
    assert_eq!(outcome.last_event_id.as_deref(), Some("42"));
    assert_eq!(outcome.retry, Some(Duration::from_millis(1500)));
    assert!(!outcome.pending);
}

#[test]
fn event_type_resets_after_each_event() {
    assert_eq!(
        decode(b"event: a\ndata: 1\n\ndata: 2\n\n"),
        [event("a", "1", None), message("2")]
    );
}

#[test]
fn id_containing_nul_is_ignored() {
    assert_eq!(
        decode(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"),
        [
            event("message", "a", Some("1")),
            event("message", "b", Some("1"))
        ]
    );
}

#[test]
fn id_persists_across_events_and_empty_id_resets_it() {
    let outcome = decode_chunks([
        &b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 8\ndata: d\n\nid:\ndata: e\n\n"[..],
    ]);
    assert_eq!(
        outcome.items,
        [
            Ok(event("message", "a", Some("7"))),
            Ok(event("message", "b", Some("7"))),
            Ok(message("c")),
            Ok(event("message", "d", Some("8"))),
            Ok(message("e")),
        ]
    );
    assert_eq!(outcome.last_event_id, None);
}

#[test]
fn last_event_id_is_committed_when_the_block_ends() {
    let mut decoder = SseDecoder::new();
    decoder.push(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
    while decoder.next_item().is_some() {}
    assert_eq!(decoder.last_event_id(), Some("1"));
    // A blank line ends the block and commits the id, even with no data to dispatch.
    decoder.push(b"\nid: 3\n\n");
    let items: Vec<_> = std::iter::from_fn(|| decoder.next_item()).collect();
    assert_eq!(items, [Ok(event("message", "b", Some("2")))]);
    assert_eq!(decoder.last_event_id(), Some("3"));
}

#[test]
fn retry_with_non_digits_is_ignored() {
    let outcome = decode_chunks([
        &b"retry: 100\nretry: 1e3\nretry: -5\nretry: 5 \nretry:\nretry: \xD9\xA3\n\n"[..],
    ]);
    assert_eq!(
        outcome.items,
        [Ok(SseItem::Retry(Duration::from_millis(100)))]
    );
    assert_eq!(outcome.retry, Some(Duration::from_millis(100)));
}

#[test]
fn huge_retry_saturates() {
    assert_eq!(
        decode(b"retry: 99999999999999999999999999\n"),
        [SseItem::Retry(Duration::from_millis(u64::MAX))]
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        decode(b"foo: bar\nData: no\nDATA: no\n data: no\ndata: yes\n\n"),
        [message("yes")]
    );
}

#[test]
fn blank_line_without_data_dispatches_nothing() {
    assert_eq!(
        decode(b"\n\n\r\n\revent: lost\n\ndata: a\n\n"),
        [message("a")]
    );
}

// ---------------------------------------------------------------------------------------------
// End of stream
// ---------------------------------------------------------------------------------------------

#[test]
fn eof_mid_event_discards_the_event() {
    // A terminated last line but no blank line: no event.
    let outcome = decode_chunks([&b"data: a\n\ndata: x\n"[..]]);
    assert_eq!(outcome.items, [Ok(message("a"))]);
    assert!(outcome.pending);

    // An unterminated last line is still processed as a line.
    let outcome = decode_chunks([&b"data: a\n\n: bye"[..]]);
    assert_eq!(outcome.items, [Ok(message("a")), Ok(comment("bye"))]);
    assert!(!outcome.pending);

    let outcome = decode_chunks([&b"retry: 20"[..]]);
    assert_eq!(
        outcome.items,
        [Ok(SseItem::Retry(Duration::from_millis(20)))]
    );
    assert_eq!(outcome.retry, Some(Duration::from_millis(20)));

    // The id of the unterminated block is not committed.
    let outcome = decode_chunks([&b"id: 1\ndata: a\n\nid: 2\ndata: b"[..]]);
    assert_eq!(outcome.last_event_id.as_deref(), Some("1"));
    assert!(outcome.pending);
}

#[test]
fn has_pending_data_tracks_partial_input() {
    let mut decoder = SseDecoder::new();
    assert!(!decoder.has_pending_data());
    decoder.push(b"data: a");
    assert!(decoder.has_pending_data());
    assert_eq!(decoder.next_item(), None);
    assert!(decoder.has_pending_data());
    decoder.push(b"\n");
    assert_eq!(decoder.next_item(), None);
    assert!(decoder.has_pending_data());
    decoder.push(b"\n");
    assert!(decoder.has_pending_data()); // not yet parsed
    assert_eq!(decoder.next_item(), Some(Ok(message("a"))));
    assert!(!decoder.has_pending_data());
    decoder.push(b": comment\n");
    assert_eq!(decoder.next_item(), Some(Ok(comment("comment"))));
    assert!(!decoder.has_pending_data());
}

#[test]
fn input_after_finish_is_ignored() {
    let mut decoder = SseDecoder::new();
    decoder.push(b"data: a\n\n");
    decoder.finish();
    decoder.push(b"data: b\n\n");
    assert_eq!(decoder.next_item(), Some(Ok(message("a"))));
    assert_eq!(decoder.next_item(), None);
    assert!(!decoder.has_pending_data());
}

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

#[test]
fn multibyte_utf8_split_at_every_position() {
    let text = "é € 😀 ß 中文 🎉";
    let stream = format!("event: ünï\ndata: {text}\n: ©omment\n\n");
    let bytes = stream.as_bytes();
    let expected = vec![Ok(comment("©omment")), Ok(event("ünï", text, None))];
    for split in 0..=bytes.len() {
        let outcome = decode_chunks([&bytes[..split], &bytes[split..]]);
        assert_eq!(outcome.items, expected, "split at {split}");
    }
    // And one byte at a time.
    assert_eq!(decode_chunks(bytes.chunks(1)).items, expected);
}

#[test]
fn invalid_utf8_is_replaced_and_decoding_continues() {
    assert_eq!(
        decode(b"data: a\xFFb\n\ndata: \xE2\x82\n\ndata: \xF0\x9F\x98\n\ndata: \xC0\xAF\n\ndata: ok\n\n"),
        [
            message("a\u{FFFD}b"),
            message("\u{FFFD}"),
            message("\u{FFFD}"),
            message("\u{FFFD}\u{FFFD}"),
            message("ok"),
        ]
    );
}

#[test]
fn truncated_utf8_split_across_chunks_never_stalls() {
    let mut decoder = SseDecoder::new();
    decoder.push(b"data: \xF0\x9F");
    assert_eq!(decoder.next_item(), None);
    decoder.push(b"\n");
    assert_eq!(decoder.next_item(), None);
    decoder.push(b"\n");
    assert_eq!(decoder.next_item(), Some(Ok(message("\u{FFFD}"))));
    decoder.push(b"data: next\n\n");
    assert_eq!(decoder.next_item(), Some(Ok(message("next"))));
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[test]
fn line_too_long_fails_early_with_bounded_input() {
    const CHUNK: usize = 64 * 1024;
    let limit = SseLimits::default().max_line_bytes;
    let mut decoder = SseDecoder::new();
    let chunk = vec![b'a'; CHUNK];
    let mut pushed = 0;
    let mut error = None;
    decoder.push(b"data: ");
    // A 10 MiB line without a line end.
    for _ in 0..(10 * 1024 * 1024 / CHUNK) {
        decoder.push(&chunk);
        pushed += CHUNK;
        if let Some(item) = decoder.next_item() {
            error = Some(item.expect_err("only an error can come out"));
            break;
        }
    }
    assert_eq!(error, Some(SseError::LineTooLong { limit }));
    assert!(pushed <= limit + CHUNK, "detected after {pushed} bytes");
    assert!(decoder.is_failed());
    // The failed decoder ignores further input.
    decoder.push(b"\n\ndata: more\n\n");
    assert_eq!(decoder.next_item(), None);
    decoder.finish();
    assert_eq!(decoder.next_item(), None);
    assert!(!decoder.has_pending_data());
}

#[test]
fn line_too_long_in_a_single_chunk() {
    let limits = SseLimits {
        max_line_bytes: 10,
        max_event_bytes: 1024,
    };
    // Exactly at the limit is fine, one byte more is not.
    let outcome = decode_with(limits, [&b"data: 1234\n\ndata: 12345\n\n"[..]]);
    assert_eq!(
        outcome.items,
        [
            Ok(message("1234")),
            Err(SseError::LineTooLong { limit: 10 })
        ]
    );
    // The same holds for a comment and for an unterminated line at end of stream.
    let outcome = decode_with(limits, [&b":123456789\n:1234567890"[..]]);
    assert_eq!(
        outcome.items,
        [
            Ok(comment("123456789")),
            Err(SseError::LineTooLong { limit: 10 })
        ]
    );
}

#[test]
fn bom_does_not_count_towards_the_line_limit() {
    let limits = SseLimits {
        max_line_bytes: 7,
        max_event_bytes: 1024,
    };
    let outcome = decode_with(limits, ["\u{FEFF}data: a\n\n".as_bytes()]);
    assert_eq!(outcome.items, [Ok(message("a"))]);
}

#[test]
fn event_too_large() {
    let limits = SseLimits {
        max_line_bytes: 1024,
        max_event_bytes: 10,
    };
    // 6 + 1 bytes, then 6 + 1 more: over 10.
    let outcome = decode_with(
        limits,
        [&b"data: 12345\n\ndata: 123456\ndata: 123456\n\ndata: x\n\n"[..]],
    );
    assert_eq!(
        outcome.items,
        [
            Ok(message("12345")),
            Err(SseError::EventTooLarge { limit: 10 })
        ]
    );
    assert!(!outcome.pending);
    // Exactly at the limit is fine: "123456789" plus its "\n".
    let outcome = decode_with(limits, [&b"data: 123456789\n\n"[..]]);
    assert_eq!(outcome.items, [Ok(message("123456789"))]);
}

#[test]
fn errors_have_clear_messages() {
    let line = SseError::LineTooLong { limit: 1_048_576 };
    assert_eq!(line.to_string(), "SSE line exceeds the 1048576-byte limit");
    let event = SseError::EventTooLarge { limit: 4_194_304 };
    assert_eq!(
        event.to_string(),
        "SSE event data exceeds the 4194304-byte limit"
    );
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(line);
    assert!(boxed.source().is_none());
}

#[test]
fn default_limits() {
    assert_eq!(
        SseLimits::default(),
        SseLimits {
            max_line_bytes: 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
        }
    );
    assert_eq!(SseDecoder::default().limits(), SseLimits::default());
}

// ---------------------------------------------------------------------------------------------
// Linear time (counted, not timed)
// ---------------------------------------------------------------------------------------------

#[test]
fn one_mebibyte_line_in_one_byte_chunks() {
    // With a rescan per chunk this would be ~5 * 10^11 byte visits and never finish.
    let mut stream = b"data: ".to_vec();
    stream.resize(SseLimits::default().max_line_bytes, b'x');
    stream.extend_from_slice(b"\n\n");
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for byte in stream.chunks(1) {
        decoder.push(byte);
        while let Some(item) = decoder.next_item() {
            events.push(item.expect("within limits"));
        }
    }
    assert_eq!(events.len(), 1);
    let SseItem::Event(event) = &events[0] else {
        panic!("expected an event");
    };
    assert_eq!(event.data.len(), SseLimits::default().max_line_bytes - 6);
}

#[test]
fn eight_mebibyte_line_in_8192_chunks_matches_one_chunk() {
    let limits = SseLimits {
        max_line_bytes: 16 * 1024 * 1024,
        max_event_bytes: 16 * 1024 * 1024,
    };
    let mut stream = b"data: ".to_vec();
    stream.resize(8 * 1024 * 1024, b'y');
    stream.extend_from_slice(b"\r\n\r\n");
    let chunked = decode_with(limits, stream.chunks(stream.len().div_ceil(8192)));
    let whole = decode_with(limits, [stream.as_slice()]);
    assert_eq!(chunked.items.len(), 1);
    assert_eq!(chunked, whole);
}

#[test]
fn many_small_lines_in_one_chunk() {
    // Consuming lines one by one from a big buffer must not shift the buffer per line.
    let stream = b"data: x\n\n".repeat(100_000);
    let outcome = decode_chunks([stream.as_slice()]);
    assert_eq!(outcome.items.len(), 100_000);
}

// ---------------------------------------------------------------------------------------------
// Chunk-boundary independence
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_stream_decodes_as_expected() {
    let outcome = decode_chunks([reference_stream().as_slice()]);
    let expected: Vec<_> = reference_items().into_iter().map(Ok).collect();
    assert_eq!(outcome.items, expected);
    assert!(outcome.pending, "the final event is unterminated");
    assert_eq!(outcome.last_event_id, None);
    assert_eq!(outcome.retry, Some(Duration::from_millis(2500)));
}

#[test]
fn reference_stream_split_at_every_position_matches_whole() {
    let stream = reference_stream();
    let whole = decode_chunks([stream.as_slice()]);
    for split in 0..=stream.len() {
        let outcome = decode_split(SseLimits::default(), &stream, &[split]);
        assert_eq!(outcome, whole, "split at {split}");
    }
}

#[test]
fn reference_stream_one_byte_at_a_time_matches_whole() {
    let stream = reference_stream();
    assert_eq!(
        decode_chunks(stream.chunks(1)),
        decode_chunks([stream.as_slice()])
    );
}

/// Byte soup biased towards SSE syntax, to reach the corners of the grammar.
fn sse_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: ".to_vec()),
        Just(b"retry: ".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xE2\x82".to_vec()),
        Just("😀".as_bytes().to_vec()),
        Just(b"123".to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

fn limits_strategy() -> impl Strategy<Value = SseLimits> {
    prop_oneof![
        Just(SseLimits::default()),
        (1_usize..24, 1_usize..48).prop_map(|(max_line_bytes, max_event_bytes)| SseLimits {
            max_line_bytes,
            max_event_bytes,
        }),
    ]
}

proptest! {
    #[test]
    fn reference_stream_random_splits_match_whole(
        mut positions in prop::collection::vec(0..=reference_stream().len(), 0..24),
    ) {
        let stream = reference_stream();
        positions.sort_unstable();
        let outcome = decode_split(SseLimits::default(), &stream, &positions);
        prop_assert_eq!(outcome, decode_chunks([stream.as_slice()]));
    }

    #[test]
    fn arbitrary_bytes_random_splits_match_whole(
        stream in sse_like_bytes(),
        limits in limits_strategy(),
        mut positions in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut positions: Vec<usize> =
            positions.drain(..).map(|index| index.index(stream.len() + 1)).collect();
        positions.sort_unstable();
        let whole = decode_with(limits, [stream.as_slice()]);
        prop_assert_eq!(decode_split(limits, &stream, &positions), whole);
    }

    #[test]
    fn encoder_decoder_round_trip(
        event_type in proptest::option::of(any::<String>()),
        id in proptest::option::of(any::<String>()),
        data in prop::collection::vec(
            prop_oneof![
                any::<char>().prop_map(String::from),
                Just("\n".to_owned()),
                Just("\r".to_owned()),
                Just("\r\n".to_owned()),
                Just(" ".to_owned()),
            ],
            0..32,
        ).prop_map(|parts| parts.concat()),
        comment_text in "[^\r\n]{0,8}(\r\n|\r|\n)?[^\r\n]{0,8}",
        retry_ms in any::<u32>(),
        chunk_size in 1_usize..64,
    ) {
        let mut wire = String::new();
        encode_comment(&mut wire, &comment_text);
        encode_retry(&mut wire, Duration::from_millis(u64::from(retry_ms)));
        encode_event(&mut wire, event_type.as_deref(), id.as_deref(), &data);

        let outcome = decode_chunks(wire.as_bytes().chunks(chunk_size));

        let mut expected: Vec<_> = normalise_line_ends(&comment_text)
            .split('\n')
            .map(|line| Ok(comment(line)))
            .collect();
        expected.push(Ok(SseItem::Retry(Duration::from_millis(u64::from(retry_ms)))));
        let expected_type = event_type
            .map(|name| name.replace(['\r', '\n'], " "))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "message".to_owned());
        let expected_id = id
            .map(|id| id.replace(['\r', '\n', '\0'], " "))
            .filter(|id| !id.is_empty());
        expected.push(Ok(SseItem::Event(SseEvent {
            event: expected_type,
            data: normalise_line_ends(&data),
            id: expected_id.clone(),
        })));
        prop_assert_eq!(outcome.items, expected);
        prop_assert!(!outcome.pending);
        prop_assert_eq!(outcome.last_event_id, expected_id);
    }
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

#[test]
fn encode_event_writes_one_frame() {
    let mut out = String::new();
    encode_event(&mut out, Some("run_started"), Some("0"), r#"{"seq":0}"#);
    assert_eq!(out, "event: run_started\nid: 0\ndata: {\"seq\":0}\n\n");
    out.clear();
    encode_event(&mut out, None, None, "a\r\nb\rc\n");
    assert_eq!(out, "data: a\ndata: b\ndata: c\ndata: \n\n");
}

#[test]
fn encode_event_keeps_framing_with_hostile_event_and_id() {
    let mut out = String::new();
    encode_event(
        &mut out,
        Some("a\r\ndata: injected\n\n"),
        Some("1\n\0\r2"),
        "x",
    );
    assert_eq!(out, "event: a  data: injected  \nid: 1   2\ndata: x\n\n");
    assert_eq!(
        decode(out.as_bytes()),
        [event("a  data: injected  ", "x", Some("1   2"))]
    );
}

#[test]
fn encode_comment_and_retry() {
    let mut out = String::new();
    encode_comment(&mut out, "keep-alive");
    encode_comment(&mut out, "");
    encode_comment(&mut out, "a\r\nb");
    encode_retry(&mut out, Duration::from_micros(2_500_999));
    assert_eq!(out, ": keep-alive\n\n:\n\n: a\n: b\n\nretry: 2500\n\n");
    assert_eq!(
        decode(out.as_bytes()),
        [
            comment("keep-alive"),
            comment(""),
            comment("a"),
            comment("b"),
            SseItem::Retry(Duration::from_millis(2500)),
        ]
    );
}
