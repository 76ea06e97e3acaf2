//! The fuzz target's property (tests/support/split.rs) on generated HTTP-like input: a
//! request head built from pieces, then a chunked body built from pieces, mutated.

mod support;

use proptest::prelude::*;

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"POST /v1/runs HTTP/1.1\r\n".to_vec()),
        Just(b"GET http://x/healthz HTTP/1.0\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Content-Length: +14\r\n".to_vec()),
        Just(b"Host: x\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"a;ext=1\r\n0123456789\r\n".to_vec()),
        Just(b"0\r\nTrailer: t\r\n\r\n".to_vec()),
        Just(b"+e\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn split_input_gives_the_whole_result(pieces in proptest::collection::vec(piece(), 0..10)) {
        support::split::check(&pieces.concat());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        support::split::check(&data);
    }
}

#[test]
fn known_shapes() {
    for wire in [
        &b""[..],
        b"GET / HTTP/1.1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +14\r\n\r\n",
        b"5\r\nhel",
        b"\x00\x01garbage\r\n\r\n",
    ] {
        support::split::check(wire);
    }
}
