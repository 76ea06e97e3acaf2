//! Parsing an OpenAI stream chunk never panics: any input is deltas or a clear error.
#![no_main]

use agent_core::model::OpenAiModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match OpenAiModel::parse_chunk(&text) {
        Ok(deltas) => {
            let _ = deltas.len();
        }
        Err(err) => assert!(!err.message.is_empty(), "errors explain themselves"),
    }
});
