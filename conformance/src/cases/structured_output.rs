//! Structured output on the backend: the request carries the output type's JSON Schema, the
//! answer streams in lockstep as text deltas with a `partial_output` after each, and
//! `run_completed` carries the parsed value — one shared transcript for every backend; an
//! answer that does not parse fails the run with `invalid_output`, keeping the raw text.

use agent_core::agent::OutputType;
use agent_core::error::ErrorKind;
use agent_core::event::EventKind;
use serde_json::json;

use super::Outcome;
use super::support::{agent_builder, consume_lockstep, openai_config, openai_model};
use super::transcripts::assert_transcript_snapshot;
use crate::backend::Backend;
use crate::kit::upstream::{GatedUpstream, openai};

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
    tags: Vec<String>,
}

/// The answer's pieces, cut inside a key, a string and the array.
const PIECES: [&str; 5] = [
    "{\"city\": \"Ky",
    "ōto\", \"cel",
    "sius\": 21, \"tags\": [\"su",
    "nny\", \"calm\"",
    "]}",
];

/// A structured answer streamed in lockstep: schema sent, partial objects, parsed output.
pub fn transcript(backend: &dyn Backend) -> Outcome {
    let upstream = GatedUpstream::start([openai::lockstep_answer(&PIECES)]).expect("upstream");
    let agent = agent_builder(backend)
        .model(openai_model(backend, openai_config(&upstream)))
        .output(OutputType::of::<Forecast>().partial_output(true))
        .build()
        .expect("agent");
    let transcript = consume_lockstep(backend, &agent, "Weather in Kyoto?", &upstream.gate());
    transcript.assert_contract();
    assert_eq!(
        transcript.text_deltas(),
        PIECES,
        "structured output: the answer must still stream as text deltas, one by one\n{}",
        transcript.summary()
    );
    let forecast = transcript
        .terminal()
        .and_then(|e| e.kind.parsed_output::<Forecast>())
        .unwrap_or_else(|| {
            panic!(
                "structured output: run_completed must carry the parsed output\n{}",
                transcript.summary()
            )
        })
        .expect("the output deserializes as the output type");
    assert_eq!(
        forecast,
        Forecast {
            city: "Kyōto".into(),
            celsius: 21,
            tags: vec!["sunny".into(), "calm".into()],
        },
        "structured output: the parsed output must be the streamed answer"
    );
    let body = upstream.requests()[0]
        .json()
        .expect("the request body is JSON");
    assert_eq!(
        (
            &body["response_format"]["type"],
            &body["response_format"]["json_schema"]["name"],
            &body["response_format"]["json_schema"]["strict"]
        ),
        (&json!("json_schema"), &json!("Forecast"), &json!(true)),
        "structured output: the request must carry the schema as a strict json_schema \
         response_format: {body}"
    );
    assert_transcript_snapshot("transcript_structured_output", &transcript);
    Outcome::passed().note("partial objects after each delta, parsed output in run_completed")
}

/// An answer that is not the output type fails the run with `invalid_output`.
pub fn invalid(backend: &dyn Backend) -> Outcome {
    let upstream =
        GatedUpstream::start([openai::lockstep_answer(&["{\"city\": ", "3}"])]).expect("upstream");
    let agent = agent_builder(backend)
        .model(openai_model(backend, openai_config(&upstream)))
        .output_type::<Forecast>()
        .build()
        .expect("agent");
    let transcript = consume_lockstep(backend, &agent, "Weather?", &upstream.gate());
    transcript.assert_contract();
    let (error, partial_text) = transcript.assert_failed(ErrorKind::InvalidOutput);
    assert_eq!(
        partial_text, "{\"city\": 3}",
        "structured output: an invalid answer must be kept as the failure's partial_text"
    );
    assert!(
        error.message.contains("Forecast"),
        "structured output: the failure must name the output type: {}",
        error.message
    );
    assert!(
        !transcript
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::PartialOutput { .. })),
        "structured output: no partial_output unless asked for\n{}",
        transcript.summary()
    );
    Outcome::passed()
}
