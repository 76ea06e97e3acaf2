//! The property the fuzz target `fuzz/fuzz_targets/http1_request.rs` and the proptest
//! `tests/split.rs` both check: on any bytes, the request head parser and the chunked
//! decoder never panic, and input fed byte by byte gives the result of the whole input.

use agent_http1::{ChunkedDecoder, ChunkedLimits, HeadLimits, HeadParser};

/// Small limits, so that arbitrary input reaches them.
pub const HEAD_LIMITS: HeadLimits = HeadLimits {
    max_headers: 16,
    max_head_bytes: 4096,
};

/// Small chunked limits, likewise.
pub const CHUNKED_LIMITS: ChunkedLimits = ChunkedLimits {
    max_line_bytes: 64,
    max_trailer_bytes: 256,
};

/// Panics if the property does not hold for `data`.
pub fn check(data: &[u8]) {
    let whole = HeadParser::new(HEAD_LIMITS).parse_request(data);
    let mut parser = HeadParser::new(HEAD_LIMITS);
    let mut split = Ok(None);
    for end in 1..=data.len() {
        split = parser.parse_request(&data[..end]);
        if !matches!(split, Ok(None)) {
            break;
        }
    }
    assert_eq!(whole, split, "split input parsed differently: {data:?}");
    if let Ok(Some((head, used))) = &whole {
        assert!(*used <= data.len() && *used <= HEAD_LIMITS.max_head_bytes);
        let _ = head.body_framing();
        let _ = (head.keep_alive(), head.expects_continue());
    }

    // What follows a complete head (or all of it) as a chunked body.
    let body_start = match &whole {
        Ok(Some((_, used))) => *used,
        _ => 0,
    };
    let input = &data[body_start..];
    let mut decoder = ChunkedDecoder::with_limits(CHUNKED_LIMITS);
    let mut body = Vec::new();
    let whole = decoder
        .decode(input, &mut body)
        .map(|used| (used, decoder.is_done(), body));
    let mut decoder = ChunkedDecoder::with_limits(CHUNKED_LIMITS);
    let mut body = Vec::new();
    let mut used = 0;
    let mut split = Ok(());
    for byte in input.chunks(1) {
        match decoder.decode(byte, &mut body) {
            Ok(n) => used += n,
            Err(error) => {
                split = Err(error);
                break;
            }
        }
    }
    let split = split.map(|()| (used, decoder.is_done(), body));
    assert_eq!(
        whole, split,
        "split chunked input decoded differently: {input:?}"
    );
    if let Ok((used, _, body)) = &whole {
        assert!(*used <= input.len() && body.len() <= input.len());
    }
}
