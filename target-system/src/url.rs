//! Percent-encoding of the values the shop puts into URLs (path segments and query
//! values): the one encoder every client of a shop service uses, so that no value a
//! client sent can change a URL's shape or make it unsendable.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes everything but RFC 3986's unreserved characters, `/` included: a
/// value becomes exactly one path segment or one query value, whatever it holds. The
/// receiving service's `Path` and `Query` extractors decode it back.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn only_unreserved_characters_stay_as_they_are() {
        assert_eq!(encode("order/user 1/&x"), "order%2Fuser%201%2F%26x");
        assert_eq!(encode("ord_0A-z.~"), "ord_0A-z.~");
        assert_eq!(encode("a?b#c%d\0"), "a%3Fb%23c%25d%00");
        assert_eq!(encode("\u{2603}"), "%E2%98%83");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn every_encoded_value_makes_a_valid_uri() {
        for v in ["x y", "\r\n", "..", "\u{1F600}", "%FF", &"a".repeat(5000)] {
            let uri = format!("http://127.0.0.1:1/v1/keys/{}?q={}", encode(v), encode(v));
            assert!(uri.parse::<http::Uri>().is_ok(), "{v:?}");
        }
    }
}
