//! Arbitrary bytes through agent-http1's request head parser and chunked decoder: never a
//! panic, and input split at every byte gives the result of the whole input. The property
//! lives in agent-http1's tests (shared with its proptest), so both check the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../agent-http1/tests/support/split.rs"]
mod split;

fuzz_target!(|data: &[u8]| split::check(data));
