//! Body framing from the header fields (RFC 9112 §6): [`BodyFraming`] and what is refused,
//! [`FramingError`].
//!
//! ```
//! use agent_http1::{BodyFraming, FramingError, HeadLimits, HeadParser};
//!
//! let framing = |wire: &[u8]| {
//!     let (head, _) = HeadParser::new(HeadLimits::default()).parse_request(wire).unwrap().unwrap();
//!     head.body_framing()
//! };
//! assert_eq!(framing(b"POST / HTTP/1.1\r\nContent-Length: 14\r\n\r\n"), Ok(BodyFraming::Length(14)));
//! assert_eq!(framing(b"POST / HTTP/1.1\r\nContent-Length: +14\r\n\r\n"), Err(FramingError::InvalidContentLength));
//! assert_eq!(
//!     framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
//!     Err(FramingError::UnsupportedTransferCoding)
//! );
//! ```

use std::fmt;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes (`Content-Length`; `0` when a request has no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode it with a
    /// [`ChunkedDecoder`](crate::ChunkedDecoder).
    Chunked,
    /// Until the connection closes (a response without `Content-Length` or
    /// `Transfer-Encoding`; never a request).
    CloseDelimited,
}

/// Why the framing of a body cannot be determined safely. A server answers
/// [`UnsupportedTransferCoding`](Self::UnsupportedTransferCoding) with `501` and the others
/// with `400`, then closes the connection (the next message cannot be found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A `Content-Length` value that is not `1*DIGIT` (`+14`, `-1`, `0x10`, `1 4`, empty)
    /// or does not fit in a `u64`.
    InvalidContentLength,
    /// `Content-Length` fields (or list elements) with different values.
    ConflictingContentLength,
    /// A `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked`, `identity`,
    /// `chunked, chunked`, …).
    UnsupportedTransferCoding,
    /// Both `Transfer-Encoding` and `Content-Length` (a request smuggling shape).
    TransferEncodingWithContentLength,
}

impl FramingError {
    /// The status a server answers this error with: `501` for an unsupported transfer
    /// coding, `400` otherwise.
    ///
    /// ```
    /// use agent_http1::FramingError;
    ///
    /// assert_eq!(FramingError::UnsupportedTransferCoding.status(), 501);
    /// assert_eq!(FramingError::InvalidContentLength.status(), 400);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            FramingError::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::InvalidContentLength => "invalid Content-Length",
            FramingError::ConflictingContentLength => "conflicting Content-Length values",
            FramingError::UnsupportedTransferCoding => "unsupported transfer coding",
            FramingError::TransferEncodingWithContentLength => {
                "both Transfer-Encoding and Content-Length"
            }
        })
    }
}

impl std::error::Error for FramingError {}

/// Parse a `Content-Length` field value: `1*DIGIT`, or a list of equal such values
/// (`14, 14`, RFC 9110 §8.6).
///
/// ```
/// use agent_http1::{parse_content_length, FramingError};
///
/// assert_eq!(parse_content_length("14"), Ok(14));
/// assert_eq!(parse_content_length("14, 14"), Ok(14));
/// assert_eq!(parse_content_length("14, 15"), Err(FramingError::ConflictingContentLength));
/// for bad in ["+14", " 14", "1 4", "-1", "0x10", "", "99999999999999999999"] {
///     assert_eq!(parse_content_length(bad), Err(FramingError::InvalidContentLength), "{bad:?}");
/// }
/// ```
pub fn parse_content_length(value: &str) -> Result<u64, FramingError> {
    if value.starts_with(is_ows) || value.ends_with(is_ows) {
        return Err(FramingError::InvalidContentLength);
    }
    let mut length = None;
    for element in value.split(',') {
        let element = element.trim_matches(is_ows);
        if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::InvalidContentLength);
        }
        let parsed: u64 = element
            .parse()
            .map_err(|_| FramingError::InvalidContentLength)?;
        match length {
            Some(previous) if previous != parsed => {
                return Err(FramingError::ConflictingContentLength);
            }
            _ => length = Some(parsed),
        }
    }
    length.ok_or(FramingError::InvalidContentLength)
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// What the framing header fields say, before deciding what a missing one means.
fn declared(headers: &[(String, String)]) -> Result<Option<BodyFraming>, FramingError> {
    let mut length: Option<u64> = None;
    let mut transfer_codings: Vec<&str> = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = parse_content_length(value)?;
            if length.is_some_and(|previous| previous != parsed) {
                return Err(FramingError::ConflictingContentLength);
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_codings.push(value);
        }
    }
    match (transfer_codings.as_slice(), length) {
        ([], length) => Ok(length.map(BodyFraming::Length)),
        (_, Some(_)) => Err(FramingError::TransferEncodingWithContentLength),
        ([only], None) if only.trim_matches(is_ows).eq_ignore_ascii_case("chunked") => {
            Ok(Some(BodyFraming::Chunked))
        }
        _ => Err(FramingError::UnsupportedTransferCoding),
    }
}

/// The framing of a request body: no framing header means no body.
pub(crate) fn request_framing(headers: &[(String, String)]) -> Result<BodyFraming, FramingError> {
    Ok(declared(headers)?.unwrap_or(BodyFraming::Length(0)))
}

/// The framing of a response body (one that may have a body): no framing header means it
/// runs until the connection closes.
pub(crate) fn response_framing(headers: &[(String, String)]) -> Result<BodyFraming, FramingError> {
    Ok(declared(headers)?.unwrap_or(BodyFraming::CloseDelimited))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn request(fields: &[(&str, &str)]) -> Result<BodyFraming, FramingError> {
        request_framing(&headers(fields))
    }

    #[test]
    fn content_length_is_strict() {
        assert_eq!(request(&[]), Ok(BodyFraming::Length(0)));
        assert_eq!(
            request(&[("content-length", "0")]),
            Ok(BodyFraming::Length(0))
        );
        assert_eq!(
            request(&[("Content-Length", "007")]),
            Ok(BodyFraming::Length(7))
        );
        assert_eq!(
            request(&[("content-length", "18446744073709551615")]),
            Ok(BodyFraming::Length(u64::MAX))
        );
        for bad in [
            "+14",
            "-1",
            "0x10",
            "",
            "1 4",
            "14abc",
            " 14",
            "14 ",
            "14,",
            ",14",
            "18446744073709551616",
            "١٤",
        ] {
            assert_eq!(
                request(&[("content-length", bad)]),
                Err(FramingError::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn equal_content_lengths_are_one_and_different_ones_an_error() {
        assert_eq!(
            request(&[("content-length", "5"), ("Content-Length", "5")]),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            request(&[("content-length", "5 , 5")]),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            request(&[("content-length", "5"), ("content-length", "6")]),
            Err(FramingError::ConflictingContentLength)
        );
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        for ok in ["chunked", "Chunked", "CHUNKED", "\tchunked "] {
            assert_eq!(
                request(&[("transfer-encoding", ok)]),
                Ok(BodyFraming::Chunked),
                "{ok:?}"
            );
        }
        for bad in [
            "gzip, chunked",
            "chunked, gzip",
            "identity",
            "chunked, chunked",
            "",
            "chunked;q=1",
        ] {
            let error = request(&[("transfer-encoding", bad)]).unwrap_err();
            assert_eq!(error, FramingError::UnsupportedTransferCoding, "{bad:?}");
            assert_eq!(error.status(), 501);
        }
        assert_eq!(
            request(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Err(FramingError::UnsupportedTransferCoding)
        );
    }

    #[test]
    fn transfer_encoding_with_content_length_is_an_error() {
        for fields in [
            [("transfer-encoding", "chunked"), ("content-length", "3")],
            [("content-length", "3"), ("transfer-encoding", "chunked")],
        ] {
            let error = request(&fields).unwrap_err();
            assert_eq!(error, FramingError::TransferEncodingWithContentLength);
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn responses_without_framing_are_close_delimited() {
        assert_eq!(
            response_framing(&headers(&[])),
            Ok(BodyFraming::CloseDelimited)
        );
        assert_eq!(
            response_framing(&headers(&[("transfer-encoding", "chunked")])),
            Ok(BodyFraming::Chunked)
        );
    }
}
