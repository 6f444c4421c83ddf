//! Lossless framing of a SIP message: byte ranges of the start line, of every header (with its
//! folded continuation lines) and of the body. Nothing here re-serialises; edits are splices.

use std::ops::Range;

use super::{Framing, SipError};

/// One header as it appears on the wire, possibly spanning folded lines.
#[derive(Debug, Clone)]
pub(crate) struct RawHeader {
    /// Canonical (long, lower-case) name, with compact forms expanded.
    pub canon: String,
    /// Value bytes, leading/trailing LWS trimmed, folds still inside.
    pub value: Range<usize>,
    /// Value with folds replaced by one SP and trimmed, for validation.
    pub unfolded: String,
}

#[derive(Debug)]
pub(crate) struct RawMessage<'a> {
    pub buf: &'a [u8],
    pub start_line: Range<usize>,
    pub headers: Vec<RawHeader>,
    /// Offset of the empty line that ends the headers.
    pub headers_end: usize,
    /// Line ending used by the message ("\r\n" or "\n"), for inserted lines.
    pub eol: &'static [u8],
    pub body: Range<usize>,
}

/// RFC 3261 s.7.3.3 and later RFCs' compact header names.
fn expand_compact(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "a" => "accept-contact",
        "b" => "referred-by",
        "c" => "content-type",
        "d" => "request-disposition",
        "e" => "content-encoding",
        "f" => "from",
        "i" => "call-id",
        "j" => "reject-contact",
        "k" => "supported",
        "l" => "content-length",
        "m" => "contact",
        "o" => "event",
        "r" => "refer-to",
        "s" => "subject",
        "t" => "to",
        "u" => "allow-events",
        "v" => "via",
        "x" => "session-expires",
        "y" => "identity",
        _ => return None,
    })
}

pub(crate) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Splits `buf` into lines; each item is (content range, range including the line ending).
fn lines(buf: &[u8], from: usize) -> impl Iterator<Item = (Range<usize>, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let start = pos;
        match buf[start..].iter().position(|&c| c == b'\n') {
            Some(i) => {
                let lf = start + i;
                let end = if lf > start && buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                pos = lf + 1;
                Some((start..end, pos))
            }
            None => {
                pos = buf.len();
                Some((start..buf.len(), buf.len()))
            }
        }
    })
}

fn trim_range(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && buf[r.start].is_ascii_whitespace() {
        r.start += 1;
    }
    while r.end > r.start && buf[r.end - 1].is_ascii_whitespace() {
        r.end -= 1;
    }
    r
}

/// Replaces every line break followed by WSP (a fold) with one SP and trims.
fn unfold(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'\r' || c == b'\n' {
            // Swallow the break and the indentation after it.
            while i < raw.len() && (raw[i] == b'\r' || raw[i] == b'\n' || is_wsp(raw[i])) {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

impl<'a> RawMessage<'a> {
    pub fn frame(buf: &'a [u8], framing: Framing) -> Result<Self, SipError> {
        // RFC 3261 s.7.5: empty lines before the start line are ignored (keep-alives).
        let mut it = lines(buf, 0).skip_while(|(r, _)| r.is_empty()).peekable();
        let (start_line, mut next) = it.next().ok_or(SipError::Empty)?;
        if buf.get(start_line.start).copied().is_some_and(is_wsp) {
            return Err(SipError::StartLine("starts with whitespace".into()));
        }
        let eol: &'static [u8] = if buf[..next].ends_with(b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };

        let mut headers: Vec<RawHeader> = Vec::new();
        let mut spans: Vec<(Range<usize>, Range<usize>)> = Vec::new(); // (name, value)
        let mut headers_end = None;
        for (line, after) in it {
            next = after;
            if line.is_empty() {
                headers_end = Some(line.start);
                break;
            }
            if is_wsp(buf[line.start]) {
                // Continuation of the previous header (RFC 3261 s.7.3.1).
                let last = spans.last_mut().ok_or(SipError::HeaderLine {
                    line: String::from_utf8_lossy(&buf[line.clone()]).into_owned(),
                    reason: "continuation line before any header",
                })?;
                last.1.end = line.end;
                continue;
            }
            let colon = buf[line.clone()]
                .iter()
                .position(|&c| c == b':')
                .ok_or_else(|| SipError::HeaderLine {
                    line: String::from_utf8_lossy(&buf[line.clone()]).into_owned(),
                    reason: "no colon",
                })?;
            let name = trim_range(buf, line.start..line.start + colon);
            spans.push((name, line.start + colon + 1..line.end));
        }
        let headers_end = headers_end.ok_or(SipError::NoHeaderEnd)?;
        let body_start = next;

        for (name_r, value_r) in spans {
            let name = &buf[name_r.clone()];
            if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
                return Err(SipError::HeaderLine {
                    line: String::from_utf8_lossy(&buf[name_r.start..value_r.end]).into_owned(),
                    reason: "header name is not a token",
                });
            }
            // Token chars are ASCII, so this cannot fail.
            let name = std::str::from_utf8(name).unwrap_or_default();
            let canon = expand_compact(name)
                .map(str::to_owned)
                .unwrap_or_else(|| name.to_ascii_lowercase());
            let value = trim_range(buf, value_r);
            let unfolded = String::from_utf8(unfold(&buf[value.clone()]))
                .map_err(|_| SipError::HeaderNotUtf8(canon.clone()))?;
            headers.push(RawHeader {
                canon,
                value,
                unfolded,
            });
        }

        let mut msg = RawMessage {
            buf,
            start_line,
            headers,
            headers_end,
            eol,
            body: body_start..buf.len(),
        };
        msg.bound_body(framing)?;
        Ok(msg)
    }

    /// Bounds the body by Content-Length (RFC 3261 s.18.3).
    fn bound_body(&mut self, framing: Framing) -> Result<(), SipError> {
        let available = self.buf.len() - self.body.start;
        let declared = match self.single("content-length")? {
            None => match framing {
                // Over UDP the body runs to the end of the datagram.
                Framing::Datagram => return Ok(()),
                Framing::Stream => return Err(SipError::MissingHeader("Content-Length")),
            },
            Some(h) => {
                let v = h.unfolded.as_str();
                if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(SipError::ContentLength(v.to_owned()));
                }
                v.parse::<usize>()
                    .map_err(|_| SipError::ContentLength(v.to_owned()))?
            }
        };
        if declared > available {
            return Err(SipError::BodyTruncated {
                declared,
                available,
            });
        }
        if declared < available && framing == Framing::Stream {
            return Err(SipError::TrailingData(available - declared));
        }
        // Datagram: bytes past the body are discarded (s.18.3).
        self.body.end = self.body.start + declared;
        Ok(())
    }

    /// The only header with this canonical name; an error if repeated.
    pub fn single(&self, canon: &'static str) -> Result<Option<&RawHeader>, SipError> {
        let mut found = self.headers.iter().filter(|h| h.canon == canon);
        let first = found.next();
        if found.next().is_some() {
            return Err(SipError::DuplicateHeader(canon));
        }
        Ok(first)
    }

    pub fn all<'s>(&'s self, canon: &'s str) -> impl Iterator<Item = &'s RawHeader> + 's {
        self.headers.iter().filter(move |h| h.canon == canon)
    }

    pub fn start_line_str(&self) -> Result<&'a str, SipError> {
        std::str::from_utf8(&self.buf[self.start_line.clone()])
            .map_err(|_| SipError::StartLine("not UTF-8".into()))
    }

    /// Headers rebuilt for rsip: unfolded, canonical names, `Name: value`, CRLF, empty line.
    pub fn normalised_headers(&self) -> String {
        let mut s = String::new();
        for h in &self.headers {
            s.push_str(&h.canon);
            s.push_str(": ");
            s.push_str(&h.unfolded);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }
}

/// Applies non-overlapping edits to `buf[..end]`; the rest of `buf` is dropped.
pub(crate) fn splice(buf: &[u8], end: usize, mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Vec<u8> {
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut out = Vec::with_capacity(end + 64);
    let mut pos = 0;
    for (r, with) in edits {
        out.extend_from_slice(&buf[pos..r.start]);
        out.extend_from_slice(&with);
        pos = r.end;
    }
    out.extend_from_slice(&buf[pos..end]);
    out
}
