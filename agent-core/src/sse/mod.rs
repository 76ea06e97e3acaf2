//! A sans-IO Server-Sent Events (`text/event-stream`) codec.
//!
//! ```
//! use agent_core::sse::{SseDecoder, SseItem, encode_comment, encode_event};
//!
//! // Server side: encode frames.
//! let mut wire = String::new();
//! encode_comment(&mut wire, "keep-alive");
//! encode_event(&mut wire, Some("text_delta"), Some("0"), "Hello,\nworld");
//!
//! // Client side: feed the bytes in arbitrary chunks, here 3 bytes at a time.
//! let mut decoder = SseDecoder::new();
//! let mut items = Vec::new();
//! for chunk in wire.as_bytes().chunks(3) {
//!     decoder.push(chunk);
//!     while let Some(item) = decoder.next_item() {
//!         items.push(item?);
//!     }
//! }
//! decoder.finish();
//! while let Some(item) = decoder.next_item() {
//!     items.push(item?);
//! }
//!
//! assert_eq!(items[0], SseItem::Comment("keep-alive".to_owned()));
//! let SseItem::Event(event) = &items[1] else { panic!("expected an event") };
//! assert_eq!(event.event, "text_delta");
//! assert_eq!(event.data, "Hello,\nworld");
//! assert_eq!(event.id.as_deref(), Some("0"));
//! assert_eq!(decoder.last_event_id(), Some("0"));
//! # Ok::<(), agent_core::sse::SseError>(())
//! ```
//!
//! [`SseDecoder`] parses a byte stream incrementally, following the
//! [WHATWG specification](https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
//! (LF, CR and CRLF line ends split anywhere, a leading BOM, comments, multi-line `data`,
//! `event`, `id`, `retry`, UTF-8 split across chunks, invalid UTF-8 replaced with U+FFFD) in
//! time linear in the input and with memory bounded by [`SseLimits`]. It performs no I/O: any
//! HTTP client on any runtime feeds it the body chunks it receives.
//!
//! [`encode_event`], [`encode_comment`] and [`encode_retry`] write frames for the server side.

mod decoder;
mod encoder;

pub use decoder::{SseDecoder, SseError, SseEvent, SseItem, SseLimits};
pub use encoder::{encode_comment, encode_event, encode_retry};
