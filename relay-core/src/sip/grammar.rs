//! Strict checks of the RFC 3261 grammar for the headers the relay relies on, on unfolded values.
//! They reject what RFC 4475 s.3.1.2 calls invalid where rsip 0.4 is lenient, and accept the LWS
//! around separators that rsip's typed parsers refuse.

use super::raw::is_token_char;

pub(crate) type Param = (String, Option<String>);

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Index just past a quoted string starting at `s[0] == '"'`.
fn quoted_end(s: &[u8]) -> Result<usize, &'static str> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated quoted string")
}

/// Splits at `sep` outside quoted strings and `<...>`.
pub(crate) fn split_outside(s: &str, sep: u8) -> Result<Vec<&str>, &'static str> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let (mut i, mut start, mut angle) = (0, 0, false);
    while i < b.len() {
        match b[i] {
            b'"' if !angle => {
                i += quoted_end(&b[i..])?;
                continue;
            }
            b'<' => angle = true,
            b'>' => angle = false,
            c if c == sep && !angle => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// `*( SEMI name [ EQUAL value ] )` with optional LWS around the separators.
pub(crate) fn params(s: &str) -> Result<Vec<Param>, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let rest = s.strip_prefix(';').ok_or("garbage before parameters")?;
    let mut out = Vec::new();
    for p in split_outside(rest, b';')? {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if !is_token(name) {
            return Err("empty or non-token parameter name");
        }
        if let Some(v) = value {
            let ok = if v.starts_with('"') {
                quoted_end(v.as_bytes())? == v.len()
            } else {
                // token, or a host / IPv6 reference (received=, maddr=)
                !v.is_empty() && v.bytes().all(|c| is_token_char(c) || b":[]".contains(&c))
            };
            if !ok {
                return Err("bad parameter value");
            }
        }
        out.push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
    Ok(out)
}

fn uri_ok(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut sc = scheme.bytes();
    sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        && sc.all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        && !rest.is_empty()
        && !uri
            .bytes()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || c == b'<')
}

/// RFC 3261 `name-addr / addr-spec` followed by header parameters (From, To, Contact elements).
pub(crate) fn name_addr(s: &str) -> Result<(String, Vec<Param>), &'static str> {
    let s = s.trim();
    let b = s.as_bytes();
    let (uri, rest) = if b.first() == Some(&b'"') || s.contains('<') {
        let lt = if b.first() == Some(&b'"') {
            let end = quoted_end(b)?;
            let after = &s[end..];
            end + after.find('<').ok_or("display name without <URI>")?
        } else {
            s.find('<').ok_or("missing <")?
        };
        let display = s[..lt].trim();
        if !display.starts_with('"') && !display.split_ascii_whitespace().all(is_token) {
            return Err("display name is neither a quoted string nor tokens");
        }
        if display.starts_with('"') && quoted_end(display.as_bytes())? != display.len() {
            return Err("text after quoted display name");
        }
        let gt = s[lt..].find('>').ok_or("missing >")? + lt;
        (&s[lt + 1..gt], &s[gt + 1..])
    } else {
        // addr-spec: a URI with , ? or ; must be in <> (RFC 3261 s.20.10); ; starts header params.
        let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
        let uri = &s[..end];
        if uri.contains(['?', ',']) {
            return Err("URI with ? or , not enclosed in <>");
        }
        (uri, &s[end..])
    };
    if !uri_ok(uri) {
        return Err("malformed URI");
    }
    Ok((uri.to_owned(), params(rest)?))
}

/// One via-parm: `SIP / 2.0 / transport LWS sent-by *( SEMI via-params )`.
#[derive(Debug)]
pub(crate) struct ViaParm {
    pub host: String,
    pub params: Vec<Param>,
}

pub(crate) fn via_parm(s: &str) -> Result<ViaParm, &'static str> {
    let mut parts = s.splitn(3, '/');
    let (Some(proto), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("no sent-protocol");
    };
    if !is_token(proto.trim()) || version.trim() != "2.0" {
        return Err("sent-protocol is not <token>/2.0");
    }
    let rest = rest.trim_start();
    let tlen = rest.bytes().take_while(|&c| is_token_char(c)).count();
    if tlen == 0 {
        return Err("no transport");
    }
    let rest = rest[tlen..].trim_start();
    let end = rest.find(';').unwrap_or(rest.len());
    let sent_by = rest[..end].trim();
    let host = if let Some(v6) = sent_by.strip_prefix('[') {
        let close = v6.find(']').ok_or("unterminated IPv6 reference")?;
        let port = &v6[close + 1..];
        if !port.is_empty() && !port_ok(port) {
            return Err("bad sent-by port");
        }
        &v6[..close]
    } else {
        let (h, port) = match sent_by.split_once(':') {
            Some((h, p)) => (h.trim(), Some(p.trim())),
            None => (sent_by, None),
        };
        if port.is_some_and(|p| !p.bytes().all(|c| c.is_ascii_digit()) || p.is_empty()) {
            return Err("bad sent-by port");
        }
        h
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.:".contains(&c))
    {
        return Err("bad sent-by host");
    }
    Ok(ViaParm {
        host: host.to_owned(),
        params: params(&rest[end..])?,
    })
}

fn port_ok(p: &str) -> bool {
    p.strip_prefix(':')
        .map(str::trim)
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// `CSeq: 1*DIGIT LWS Method`, number below 2**31 (RFC 3261 s.8.1.1.5).
pub(crate) fn cseq(s: &str) -> Result<(u32, String), &'static str> {
    let mut it = s.split_ascii_whitespace();
    let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
        return Err("not <number> <method>");
    };
    if !n.bytes().all(|c| c.is_ascii_digit()) {
        return Err("sequence number is not a number");
    }
    let n: u32 = n.parse().map_err(|_| "sequence number too large")?;
    if n >= 1 << 31 {
        return Err("sequence number too large");
    }
    if !is_token(m) {
        return Err("method is not a token");
    }
    Ok((n, m.to_owned()))
}

/// RFC 1123 date in GMT, as SIP-date requires: `Sat, 13 Nov 2010 23:29:00 GMT`.
pub(crate) fn sip_date(s: &str) -> Result<(), &'static str> {
    let f: Vec<&str> = s.split_ascii_whitespace().collect();
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |x: &str, n: usize| x.len() == n && x.bytes().all(|c| c.is_ascii_digit());
    let ok = f.len() == 6
        && DAYS.contains(&f[0])
        && digits(f[1], 2)
        && MONTHS.contains(&f[2])
        && digits(f[3], 4)
        && f[4].split(':').count() == 3
        && f[4].split(':').all(|x| digits(x, 2))
        && f[5] == "GMT";
    if ok {
        Ok(())
    } else {
        Err("not an RFC 1123 date in GMT")
    }
}

pub(crate) fn param<'p>(params: &'p [Param], name: &str) -> Option<&'p Option<String>> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}
