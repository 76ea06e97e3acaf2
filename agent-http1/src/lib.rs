//! One sans-IO HTTP/1.1 layer for the threaded world: the blocking backend's server, the
//! conformance kit's test upstream and raw client, the example backend and the bench
//! upstream all speak HTTP/1.1 through this crate, so its framing is written (and fuzzed)
//! once. It does no I/O: it turns bytes into heads and bodies and back, and the caller reads
//! and writes the socket.
//!
//! ```
//! use agent_http1::{chunked, BodyFraming, ChunkedDecoder, HeadLimits, HeadParser, HeadWriter};
//!
//! // Server side: a request head, then its chunked body.
//! let wire = b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
//!              5\r\nhello\r\n0\r\n\r\n";
//! let mut parser = HeadParser::new(HeadLimits::default());
//! let (head, used) = parser.parse_request(wire).unwrap().expect("a complete head");
//! assert_eq!((head.method.as_str(), head.path.as_str()), ("POST", "/v1/runs"));
//! assert_eq!(head.body_framing(), Ok(BodyFraming::Chunked));
//!
//! let mut decoder = ChunkedDecoder::new();
//! let mut body = Vec::new();
//! decoder.decode(&wire[used..], &mut body).unwrap();
//! assert!(decoder.is_done());
//! assert_eq!(body, b"hello");
//!
//! // The answer: a head, one chunk per event, the last chunk.
//! let mut out = HeadWriter::response(200)
//!     .header("content-type", "text/event-stream")
//!     .header("transfer-encoding", "chunked")
//!     .finish();
//! chunked::encode_chunk(b"data: hi\n\n", &mut out);
//! out.extend_from_slice(chunked::LAST_CHUNK);
//!
//! // Client side: parse it back.
//! let (response, used) = parser.parse_response(&out).unwrap().unwrap();
//! assert_eq!(response.status, 200);
//! let mut decoder = ChunkedDecoder::new();
//! let mut events = Vec::new();
//! decoder.decode(&out[used..], &mut events).unwrap();
//! assert_eq!(events, b"data: hi\n\n");
//! ```
//!
//! What it checks, on top of `httparse`'s tokenizing (RFC 9112):
//!
//! * heads: a bounded number of header fields and bytes ([`HeadLimits`]; `431` beyond),
//!   origin-form, absolute-form and `*` request targets ([`RequestHead::path`]);
//! * body framing ([`BodyFraming`], [`FramingError`]): `Content-Length` is `1*DIGIT`
//!   (equal repeated values are one), `Transfer-Encoding` is exactly `chunked` (anything
//!   else is unsupported, `501`), both together are refused;
//! * chunked bodies ([`ChunkedDecoder`]): `1*HEXDIG` sizes, extensions ignored, CRLF
//!   everywhere, bounded size lines and trailers, any split of the input;
//! * writing ([`HeadWriter`], [`chunked::encode_chunk`]): standard reason phrases, header
//!   fields that could inject a line skipped.
//!
//! Nothing here panics on any input; `fuzz/fuzz_targets/http1_request.rs` checks it, and
//! that the result never depends on how the input is split.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunked;
pub mod framing;
pub mod head;
pub mod write;

pub use chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits};
pub use framing::{BodyFraming, FramingError, parse_content_length};
pub use head::{HeadError, HeadLimits, HeadParser, RequestHead, ResponseHead, Version};
pub use write::{HeadWriter, is_valid_field, reason_phrase};
