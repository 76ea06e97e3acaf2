//! JSON string escaping into a `String`, byte for byte what `serde_json` writes, for the
//! encoders' text-delta templates (no `serde_json::Value` per delta, no temporary string).

/// Append `s` as a JSON string literal (quotes included) to `out`, escaped exactly as
/// `serde_json::to_string(s)` escapes it: `"` and `\` with a backslash, the control
/// characters U+0000–U+001F as `\b`, `\t`, `\n`, `\f`, `\r` or `\u00xx`, everything else as is.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_json_str;

    fn check(s: &str) {
        let mut out = String::from("x");
        push_json_str(&mut out, s);
        assert_eq!(out[1..], serde_json::to_string(s).unwrap(), "{s:?}");
    }

    #[test]
    fn escapes_exactly_as_serde_json() {
        for s in [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "new\nline\r\ttab",
            "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
            "héllo wörld — 日本語 🎉",
            "\u{2028}\u{2029}",
            "end\\",
            "\"",
        ] {
            check(s);
        }
        // Every single character up to U+00FF, alone and between others.
        for c in (0u32..=0xff).filter_map(char::from_u32) {
            check(&c.to_string());
            check(&format!("a{c}é{c}"));
        }
    }
}
