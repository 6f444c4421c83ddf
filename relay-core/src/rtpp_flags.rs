//! rtpengine's `rtpp-flags` string: the one flag string newer Kamailio (and OpenSIPS) send instead
//! of parsing the flags themselves, e.g.
//! `replace-origin via-branch=auto-next strict-source label=callee codec=[strip=[PCMA] mask=[G722]]`.
//!
//! [`parse`] turns it into the dictionary the proxy would have sent had it parsed the flags
//! itself (Kamailio's `parse_flags` in its rtpengine module): bare words go to `flags` unless they
//! are a transport (`RTP/AVP`, `RTP` + `AVP` ...), a direction (`internal`, `external`) or a
//! prefixed list item (`replace-origin` -> `replace: [origin]`, `codec-strip-PCMA` ->
//! `codec: {strip: [PCMA]}`); `key=value` becomes a dictionary key; `[ ]` makes lists, and
//! dictionaries when the first item is `key=value`. [`merge`] adds the result to the request, so
//! the rest of the daemon sees one form only.
//!
//! Unlike rtpengine, which skips what it cannot read, a malformed string (unbalanced brackets,
//! `key=` with no value, nesting deeper than [`MAX_DEPTH`]) is an error and nothing of it is used.
//! Keys the relay does not know are left out of the dictionary and returned in
//! [`Parsed::unknown`], for the daemon to log once; unknown bare flags stay in `flags`, where the
//! option mapping reports them.

use serde_json::{Map, Value};
use thiserror::Error;

/// Brackets nest at most this deep (rtpengine's own examples use two levels).
pub const MAX_DEPTH: usize = 4;

/// Dictionary keys (normalised: lower case, `-` for `_` and space) the relay reads or accepts as
/// harmless. Anything else given as `key=value` is reported as unknown.
pub const KNOWN_KEYS: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "flags",
    "replace",
    "rtcp-mux",
    "ice",
    "direction",
    "address-family",
    "received-from",
    "media-address",
    "label",
    "from-label",
    "to-label",
    "set-label",
    "codec",
    "tos",
    "delete-delay",
    "from-tags",
    "supports",
    "sip-message-type",
    "transport-protocol",
    "all",
    "limit",
    "interface",
    "from-interface",
    "to-interface",
    "rtpp-flags",
    "osrtp",
];

/// Known keys that take one string (a list for them is malformed).
const SCALAR_KEYS: &[&str] = &[
    "call-id",
    "from-tag",
    "to-tag",
    "label",
    "from-label",
    "to-label",
    "set-label",
    "ice",
    "address-family",
    "media-address",
    "tos",
    "delete-delay",
    "transport-protocol",
    "interface",
    "from-interface",
    "to-interface",
];

/// Kamailio's `via-branch=` instructions (which Via, and whether to take the branch or an extra
/// id). Kamailio resolves them and sends the branch itself in the `via-branch` key, so in the flag
/// string they are dropped rather than taken for a branch.
const VIA_BRANCH_INSTRUCTIONS: &[&str] = &[
    "1",
    "2",
    "auto",
    "extra",
    "next",
    "auto-next",
    "next-auto",
    "auto-extra",
    "extra-auto",
];

/// List-valued keys whose items may also be given as `KEY-ITEM` bare flags.
const PREFIX_LISTS: &[(&str, &str)] = &[
    ("replace-", "replace"),
    ("rtcp-mux-", "rtcp-mux"),
    ("SDES-", "SDES"),
    ("OSRTP-", "OSRTP"),
    ("T38-", "T.38"),
    ("T.38-", "T.38"),
    ("from-tags-", "from-tags"),
];

/// Codec keys: `codec-strip=PCMA`, `codec-strip-PCMA` and `codec=[strip=[PCMA]]` are one thing.
const CODEC_KEYS: &[(&str, &str)] = &[
    ("codec-strip", "strip"),
    ("codec-offer", "offer"),
    ("codec-mask", "mask"),
    ("codec-except", "except"),
    ("codec-accept", "accept"),
    ("codec-consume", "consume"),
    ("codec-set", "set"),
    ("codec-transcode", "transcode"),
    ("transcode", "transcode"),
];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtppFlagsError {
    #[error("unbalanced '[' in rtpp-flags")]
    Unclosed,
    #[error("unexpected ']' in rtpp-flags at byte {0}")]
    UnexpectedClose(usize),
    #[error("unexpected '[' in rtpp-flags at byte {0}")]
    UnexpectedOpen(usize),
    #[error("rtpp-flags nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("missing value for '{0}' in rtpp-flags")]
    MissingValue(String),
    #[error("dictionary entry without '=' in rtpp-flags: '{0}'")]
    NotKeyValue(String),
    #[error("'{key}' in rtpp-flags takes a single value, not a list")]
    NotScalar { key: String },
}

/// The dictionary form of a flag string, and the keys it used that the relay does not know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub dict: Map<String, Value>,
    pub unknown: Vec<String>,
}

/// One syntactic item: a bare word, `key=value`, or a bracketed group.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Word(String),
    Pair(String, Value),
}

pub fn normalise(key: &str) -> String {
    key.to_ascii_lowercase().replace([' ', '_'], "-")
}

/// Parses a flag string into the dictionary form; see the module documentation.
pub fn parse(input: &str) -> Result<Parsed, RtppFlagsError> {
    let mut lx = Lexer {
        s: input.as_bytes(),
        i: 0,
    };
    let mut out = Parsed::default();
    let mut transport = 0u32;
    loop {
        lx.skip_spaces();
        match lx.peek() {
            None => break,
            Some(b']') => return Err(RtppFlagsError::UnexpectedClose(lx.i)),
            Some(b'[') => return Err(RtppFlagsError::UnexpectedOpen(lx.i)),
            _ => {}
        }
        match lx.item(0)? {
            Item::Word(w) => word(&mut out, &mut transport, &w),
            Item::Pair(k, v) => pair(&mut out, k, v)?,
        }
    }
    if let Some(t) = transport_name(transport) {
        out.dict
            .insert("transport-protocol".into(), Value::String(t.into()));
    }
    Ok(out)
}

/// Adds `parsed` to a request dictionary: list keys are appended to, dictionaries (`codec`) merged,
/// and a scalar the request already has is kept (the proxy's explicit key wins).
pub fn merge(request: &mut Map<String, Value>, parsed: Map<String, Value>) {
    let existing: Vec<(String, String)> =
        request.keys().map(|k| (normalise(k), k.clone())).collect();
    for (k, v) in parsed {
        let n = normalise(&k);
        let key = existing
            .iter()
            .find(|(e, _)| *e == n)
            .map_or(k, |(_, orig)| orig.clone());
        match (request.get_mut(&key), v) {
            (None, v) => {
                request.insert(key, v);
            }
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (Some(Value::Array(a)), s @ Value::String(_)) => a.push(s),
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (Some(old @ Value::String(_)), Value::Array(b)) if is_list_key(&n) => {
                let mut l = vec![old.take()];
                l.extend(b);
                *old = Value::Array(l);
            }
            (Some(_), _) => {}
        }
    }
}

/// Moves prefixed items of a request's `flags` list where they belong, as rtpengine does for the
/// dictionary form too: `replace-origin` -> `replace: [origin]`, `codec-strip-PCMA` ->
/// `codec: {strip: [PCMA]}`, `from-tags-T` -> `from-tags: [T]`. Other flags stay.
pub fn expand_flags(request: &mut Map<String, Value>) {
    let Some(key) = request.keys().find(|k| normalise(k) == "flags").cloned() else {
        return;
    };
    let words: Vec<String> = match request.remove(&key) {
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s],
        _ => return,
    };
    let mut p = Parsed::default();
    let mut transport = 0;
    for w in words {
        word(&mut p, &mut transport, &w);
    }
    if let Some(t) = transport_name(transport) {
        p.dict
            .insert("transport-protocol".into(), Value::String(t.into()));
    }
    merge(request, p.dict);
}

fn is_list_key(n: &str) -> bool {
    matches!(
        n,
        "flags" | "replace" | "rtcp-mux" | "direction" | "from-tags" | "supports" | "sdes"
    )
}

fn push(dict: &mut Map<String, Value>, key: &str, v: Value) {
    match dict.get_mut(key) {
        Some(Value::Array(a)) => match v {
            Value::Array(b) => a.extend(b),
            v => a.push(v),
        },
        Some(old) => {
            let mut l = vec![old.take()];
            match v {
                Value::Array(b) => l.extend(b),
                v => l.push(v),
            }
            *old = Value::Array(l);
        }
        None => {
            let v = match v {
                a @ Value::Array(_) => a,
                v => Value::Array(vec![v]),
            };
            dict.insert(key.to_owned(), v);
        }
    }
}

fn codec_push(dict: &mut Map<String, Value>, sub: &str, v: Value) {
    let codec = dict
        .entry("codec")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(c) = codec {
        push(c, sub, v);
    }
}

fn word(out: &mut Parsed, transport: &mut u32, w: &str) {
    // Transports, as Kamailio builds them: a full profile, or RTP/AVP with SRTP/AVPF/DTLS added.
    match w {
        "RTP" => *transport = (*transport | 0x100) & !0x001,
        "AVP" => *transport = (*transport | 0x100) & !0x002,
        "SRTP" => *transport |= 0x101,
        "AVPF" => *transport |= 0x102,
        "DTLS" => *transport |= 0x104,
        "RTP/AVP" => *transport = 0x100,
        "RTP/SAVP" => *transport = 0x101,
        "RTP/AVPF" => *transport = 0x102,
        "RTP/SAVPF" => *transport = 0x103,
        "UDP/TLS/RTP/SAVP" => *transport = 0x104,
        "UDP/TLS/RTP/SAVPF" => *transport = 0x106,
        "internal" | "external" => push(&mut out.dict, "direction", Value::String(w.into())),
        _ => {
            for (prefix, sub) in CODEC_KEYS {
                if let Some(rest) = w.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'))
                    && !rest.is_empty()
                {
                    codec_push(&mut out.dict, sub, Value::String(rest.into()));
                    return;
                }
            }
            for (prefix, key) in PREFIX_LISTS {
                if let Some(rest) = w.strip_prefix(prefix)
                    && !rest.is_empty()
                {
                    push(&mut out.dict, key, Value::String(rest.into()));
                    return;
                }
            }
            push(&mut out.dict, "flags", Value::String(w.into()));
        }
    }
}

fn pair(out: &mut Parsed, k: String, v: Value) -> Result<(), RtppFlagsError> {
    let n = normalise(&k);
    if let Some((_, sub)) = CODEC_KEYS.iter().find(|(c, _)| *c == n) {
        codec_push(&mut out.dict, sub, v);
        return Ok(());
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(RtppFlagsError::NotScalar { key: k.clone() }),
    };
    match n.as_str() {
        "codec" => match v {
            Value::Object(m) => {
                for (sub, val) in m {
                    codec_push(&mut out.dict, &sub, val);
                }
            }
            _ => return Err(RtppFlagsError::NotKeyValue(k)),
        },
        "via-branch" => {
            let s = scalar(&v)?;
            if !VIA_BRANCH_INSTRUCTIONS.contains(&s.as_str()) {
                out.dict.insert(k, Value::String(s));
            }
        }
        "direction" | "from-tags" | "flags" | "replace" | "rtcp-mux" | "supports" => {
            push(&mut out.dict, &n, v)
        }
        // The same list as the `OSRTP-` flags fill.
        "osrtp" => push(&mut out.dict, "OSRTP", v),
        _ if SCALAR_KEYS.contains(&n.as_str()) => {
            let s = scalar(&v)?;
            out.dict.insert(k, Value::String(s));
        }
        _ if KNOWN_KEYS.contains(&n.as_str()) => {
            out.dict.insert(k, v);
        }
        _ => out.unknown.push(k),
    }
    Ok(())
}

fn transport_name(t: u32) -> Option<&'static str> {
    if t & 0x100 == 0 {
        return None;
    }
    Some(match t & 0x7 {
        0 => "RTP/AVP",
        1 => "RTP/SAVP",
        2 => "RTP/AVPF",
        3 => "RTP/SAVPF",
        4 => "UDP/TLS/RTP/SAVP",
        6 | 7 => "UDP/TLS/RTP/SAVPF",
        _ => "UDP/TLS/RTP/SAVP",
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// Bytes up to a space, a bracket, or (for keys) `=`.
    fn token(&mut self, stop_at_eq: bool) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'[' | b']') || (stop_at_eq && c == b'=')
            {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A word or `key=value` at nesting `depth` (0: the top level).
    fn item(&mut self, depth: usize) -> Result<Item, RtppFlagsError> {
        let key = self.token(true);
        if self.peek() != Some(b'=') {
            if self.peek() == Some(b'[') {
                return Err(RtppFlagsError::UnexpectedOpen(self.i));
            }
            return Ok(Item::Word(key));
        }
        self.i += 1;
        let value = match self.peek() {
            Some(b'[') => self.group(depth + 1)?,
            _ => {
                let v = self.token(false);
                if self.peek() == Some(b'[') {
                    return Err(RtppFlagsError::UnexpectedOpen(self.i));
                }
                if v.is_empty() {
                    return Err(RtppFlagsError::MissingValue(key));
                }
                Value::String(v)
            }
        };
        if key.is_empty() {
            return Err(RtppFlagsError::MissingValue(String::new()));
        }
        Ok(Item::Pair(key, value))
    }

    /// `[ ... ]` starting at the `[`: a list, or a dictionary if its first item is `key=value`.
    fn group(&mut self, depth: usize) -> Result<Value, RtppFlagsError> {
        if depth > MAX_DEPTH {
            return Err(RtppFlagsError::TooDeep);
        }
        self.i += 1;
        let mut list = Vec::new();
        let mut dict: Option<Map<String, Value>> = None;
        loop {
            self.skip_spaces();
            match self.peek() {
                None => return Err(RtppFlagsError::Unclosed),
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                Some(b'[') => {
                    if dict.is_some() {
                        return Err(RtppFlagsError::UnexpectedOpen(self.i));
                    }
                    list.push(self.group(depth + 1)?);
                    continue;
                }
                _ => {}
            }
            match self.item(depth)? {
                Item::Pair(k, v) if list.is_empty() => {
                    dict.get_or_insert_with(Map::new).insert(k, v);
                }
                Item::Word(w) if dict.is_none() => list.push(Value::String(w)),
                Item::Word(w) => return Err(RtppFlagsError::NotKeyValue(w)),
                Item::Pair(k, _) => return Err(RtppFlagsError::NotKeyValue(k)),
            }
        }
        Ok(match dict {
            Some(d) => Value::Object(d),
            None => Value::Array(list),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dict(s: &str) -> Value {
        Value::Object(parse(s).unwrap().dict)
    }

    #[test]
    fn rtpengine_documented_examples() {
        assert_eq!(
            dict(
                "replace-origin via-branch=auto-next strict-source label=callee OSRTP-accept \
                 transport-protocol=RTP/AVP address-family=IP4 codec=[strip=[PCMA] mask=[G722]]"
            ),
            json!({
                "replace": ["origin"], "flags": ["strict-source"], "label": "callee",
                "OSRTP": ["accept"], "transport-protocol": "RTP/AVP", "address-family": "IP4",
                "codec": {"strip": ["PCMA"], "mask": ["G722"]},
            })
        );
        assert_eq!(
            dict(
                "via-branch=auto-next OSRTP=[accept] codec=[transcode=[PCMA PCMU] accept=[AMR-WB AMR] strip=[EVS]]"
            ),
            json!({"OSRTP": ["accept"],
                   "codec": {"transcode": ["PCMA", "PCMU"], "accept": ["AMR-WB", "AMR"], "strip": ["EVS"]}})
        );
    }

    #[test]
    fn kamailio_everyday_flags() {
        assert_eq!(
            dict(
                "replace-origin replace-session-connection ICE=remove RTP/AVP SIP-source-address \
                 label=caller via-branch=z9hG4bK-1 codec-strip-PCMA codec-mask=G722 TOS=184 internal external"
            ),
            json!({
                "replace": ["origin", "session-connection"], "ICE": "remove",
                "flags": ["SIP-source-address"], "label": "caller", "via-branch": "z9hG4bK-1",
                "codec": {"strip": ["PCMA"], "mask": ["G722"]}, "TOS": "184",
                "direction": ["internal", "external"], "transport-protocol": "RTP/AVP",
            })
        );
        assert_eq!(
            dict("RTP AVPF SRTP")["transport-protocol"],
            json!("RTP/SAVPF")
        );
    }

    #[test]
    fn unknown_keys_are_returned_not_used() {
        let p = parse("frobnicate=7 strict-source").unwrap();
        assert_eq!(p.unknown, vec!["frobnicate".to_owned()]);
        assert_eq!(Value::Object(p.dict), json!({"flags": ["strict-source"]}));
    }

    #[test]
    fn malformed_strings_are_errors() {
        for bad in [
            "codec=[strip=[PCMA]",
            "label=",
            "a] b",
            "[x]",
            "codec=[strip=[PCMA] EVS]",
            "replace=[origin x=y]",
            "label=[a b]",
            "x=[[[[[[a]]]]]]",
            "=v",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(dict(""), json!({}));
        assert_eq!(dict("  "), json!({}));
    }

    #[test]
    fn merge_appends_lists_and_keeps_explicit_scalars() {
        let mut req =
            json!({"flags": ["trust-address"], "label": "x", "codec": {"strip": ["PCMU"]}})
                .as_object()
                .unwrap()
                .clone();
        merge(
            &mut req,
            parse("strict-source label=y codec-strip=PCMA")
                .unwrap()
                .dict,
        );
        assert_eq!(
            Value::Object(req),
            json!({"flags": ["trust-address", "strict-source"], "label": "x", "codec": {"strip": ["PCMU", "PCMA"]}})
        );
    }
}
