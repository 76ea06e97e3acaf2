//! The SSE decoder never panics, never grows past its limits, and yields the same items
//! whether the input arrives whole or split at arbitrary points.
#![no_main]

use agent_core::sse::{SseDecoder, SseLimits};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]], limits: SseLimits) -> Vec<String> {
    let mut decoder = SseDecoder::with_limits(limits);
    let mut items = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_item() {
            items.push(format!("{item:?}"));
        }
    }
    decoder.finish();
    while let Some(item) = decoder.next_item() {
        items.push(format!("{item:?}"));
    }
    items
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let limits = SseLimits {
        max_line_bytes: 64 + usize::from(control),
        max_event_bytes: 256 + 4 * usize::from(control),
    };
    let whole = decode(&[input], limits);
    // Split into pieces whose sizes come from the control byte.
    let step = usize::from(control % 7) + 1;
    let pieces: Vec<&[u8]> = input.chunks(step).collect();
    assert_eq!(whole, decode(&pieces, limits), "splitting changed the result");
});
