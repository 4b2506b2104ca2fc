//! Request framing of HTTP/1.x for the upstream direction of an edge, so that L7 toxics
//! can act per request on live keep-alive connections: the bytes are cut into request
//! heads and bodies (`Content-Length` framing). A connection that does not speak
//! HTTP/1.x, or sends a chunked body, turns opaque: its bytes pass untouched and L7
//! toxics leave it alone.

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Segment {
    /// A whole request head (request line and headers).
    Head {
        method: String,
        path: String,
        bytes: Vec<u8>,
    },
    /// Body bytes of the request whose head came last.
    Body(Vec<u8>),
    /// Bytes of a connection no longer framed.
    Opaque(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    Opaque,
}

#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    state: State,
}

impl Default for Framer {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            state: State::Head,
        }
    }
}

impl Framer {
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Cuts `data` into segments, keeping an incomplete head for the next call.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Segment>) {
        loop {
            if data.is_empty() && (self.buf.is_empty() || matches!(self.state, State::Body(_))) {
                return;
            }
            match self.state {
                State::Opaque => {
                    let mut bytes = std::mem::take(&mut self.buf);
                    bytes.extend_from_slice(data);
                    if !bytes.is_empty() {
                        out.push(Segment::Opaque(bytes));
                    }
                    return;
                }
                State::Body(remaining) => {
                    let n = (remaining as usize).min(data.len());
                    out.push(Segment::Body(data[..n].to_vec()));
                    data = &data[n..];
                    self.state = if remaining - n as u64 == 0 {
                        State::Head
                    } else {
                        State::Body(remaining - n as u64)
                    };
                }
                State::Head => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                    if !could_be_request(&self.buf) {
                        // Not HTTP: pass everything on at once, from now on.
                        self.state = State::Opaque;
                        continue;
                    }
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() > MAX_HEAD {
                            self.state = State::Opaque;
                            continue;
                        }
                        // An incomplete head waits for more bytes.
                        return;
                    };
                    let rest = self.buf.split_off(end + 4);
                    let head = std::mem::replace(&mut self.buf, rest);
                    match parse_head(&head) {
                        Some((method, path, framing)) => {
                            out.push(Segment::Head {
                                method,
                                path,
                                bytes: head,
                            });
                            self.state = match framing {
                                Framing::Length(0) => State::Head,
                                Framing::Length(n) => State::Body(n),
                                Framing::Chunked => State::Opaque,
                            };
                            // Whatever followed the head is handled by the next turn.
                            let rest = std::mem::take(&mut self.buf);
                            if rest.is_empty() {
                                return;
                            }
                            return self.feed_owned(rest, out);
                        }
                        None => {
                            let mut bytes = head;
                            bytes.append(&mut self.buf);
                            self.state = State::Opaque;
                            out.push(Segment::Opaque(bytes));
                            return;
                        }
                    }
                }
            }
        }
    }

    fn feed_owned(&mut self, data: Vec<u8>, out: &mut Vec<Segment>) {
        self.feed(&data, out);
    }
}

enum Framing {
    Length(u64),
    Chunked,
}

/// Whether a chunk starts like an HTTP/1.x request line (a method and a space), so that
/// framing can begin there on a connection that was not framed so far.
pub fn starts_like_request(chunk: &[u8]) -> bool {
    could_be_request(chunk) && chunk.iter().take(17).any(|b| *b == b' ')
}

/// Whether `buf` can be the start of an HTTP/1.x request: an upper-case method, a
/// space, and (once the line is complete) `HTTP/1.` at its end. Anything else is another
/// protocol, whose bytes must not wait for a head that never comes.
fn could_be_request(buf: &[u8]) -> bool {
    const MAX_METHOD: usize = 16;
    match buf.iter().position(|b| *b == b' ') {
        Some(0) => false,
        Some(sp) => {
            if sp > MAX_METHOD || !buf[..sp].iter().all(u8::is_ascii_uppercase) {
                return false;
            }
            match find(buf, b"\r\n") {
                Some(eol) => buf[..eol].windows(7).any(|w| w == b"HTTP/1."),
                None => true,
            }
        }
        None => buf.len() <= MAX_METHOD && buf.iter().all(u8::is_ascii_uppercase),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<(String, String, Framing)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    let mut framing = Framing::Length(0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Some((method.to_owned(), path.to_owned(), framing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> Vec<Segment> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        out
    }

    fn head(method: &str, path: &str, bytes: &[u8]) -> Segment {
        Segment::Head {
            method: method.into(),
            path: path.into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn requests_on_a_keep_alive_connection_are_framed() {
        let a = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let b = b"POST /b HTTP/1.1\r\ncontent-length: 5\r\n\r\n";
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        all.extend_from_slice(b"hello");
        all.extend_from_slice(a);
        assert_eq!(
            cut(&[&all]),
            vec![
                head("GET", "/a", a),
                head("POST", "/b", b),
                Segment::Body(b"hello".to_vec()),
                head("GET", "/a", a)
            ]
        );
    }

    #[test]
    fn heads_and_bodies_split_across_reads() {
        let out = cut(&[
            b"PUT /k HTT",
            b"P/1.1\r\nContent-Length: 4\r\n",
            b"\r\nab",
            b"cdGET / HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(
            out,
            vec![
                head("PUT", "/k", b"PUT /k HTTP/1.1\r\nContent-Length: 4\r\n\r\n"),
                Segment::Body(b"ab".to_vec()),
                Segment::Body(b"cd".to_vec()),
                head("GET", "/", b"GET / HTTP/1.1\r\n\r\n"),
            ]
        );
    }

    #[test]
    fn other_protocols_are_recognised_at_once() {
        assert_eq!(cut(&[b"ping"]), vec![Segment::Opaque(b"ping".to_vec())]);
        assert_eq!(
            cut(&[b"PING\r\n"]),
            vec![Segment::Opaque(b"PING\r\n".to_vec())]
        );
        assert!(cut(&[b"GE"]).is_empty(), "could still be a request");
        assert!(cut(&[b"GET /x HTT"]).is_empty());
    }

    #[test]
    fn other_protocols_and_chunked_bodies_turn_opaque() {
        let out = cut(&[b"\x16\x03\x01 binary\r\n\r\nmore", b"later"]);
        assert!(matches!(&out[0], Segment::Opaque(b) if b.starts_with(b"\x16")));
        assert_eq!(out[1], Segment::Opaque(b"later".to_vec()));
        let out = cut(&[b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"]);
        assert!(matches!(&out[0], Segment::Head { .. }));
        assert_eq!(out[1], Segment::Opaque(b"5\r\nhello\r\n".to_vec()));
    }
}
