//! NG message bodies on the wire: bencode dictionaries (what Kamailio's and OpenSIPS's rtpengine
//! modules send) or JSON objects, decoded into one dictionary form for the engine; replies go
//! back in the request's encoding. The bencode codec is the serde_bencode crate; this module adds
//! the limits a network-facing decoder needs.

use serde_bencode::value::Value as Ben;
use serde_json::{Map, Value};

/// Deeper nesting than any NG message has; refusing it bounds the decoder's recursion.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Bencode,
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("Could not decode dictionary: {0}")]
    Decode(String),
    #[error("Could not decode dictionary: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("Could not decode dictionary: not a dictionary")]
    NotDict,
    #[error("Could not decode dictionary: string is not UTF-8")]
    NotUtf8,
}

pub fn decode(body: &[u8]) -> Result<(Map<String, Value>, Encoding), WireError> {
    match body.first() {
        Some(b'{') => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok((m, Encoding::Json)),
            Ok(_) => Err(WireError::NotDict),
            Err(e) => Err(WireError::Decode(e.to_string())),
        },
        Some(b'd') => {
            check_depth(body)?;
            let v: Ben =
                serde_bencode::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
            match ben_to_json(v)? {
                Value::Object(m) => Ok((m, Encoding::Bencode)),
                _ => Err(WireError::NotDict),
            }
        }
        _ => Err(WireError::NotDict),
    }
}

pub fn encode(reply: &Map<String, Value>, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Json => Value::Object(reply.clone()).to_string().into_bytes(),
        Encoding::Bencode => serde_bencode::to_bytes(&json_to_ben(&Value::Object(reply.clone())))
            .unwrap_or_else(|_| b"de".to_vec()),
    }
}

/// Walks the token structure without recursion to refuse deep nesting and bad framing early.
fn check_depth(b: &[u8]) -> Result<(), WireError> {
    let (mut i, mut depth) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'd' | b'l' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(WireError::TooDeep);
                }
                i += 1;
            }
            b'e' => {
                depth = depth.saturating_sub(1);
                i += 1;
                if depth == 0 {
                    return if i == b.len() {
                        Ok(())
                    } else {
                        Err(WireError::Decode(
                            "trailing data after the dictionary".into(),
                        ))
                    };
                }
            }
            b'i' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'e')
                    .ok_or_else(|| WireError::Decode("unterminated integer".into()))?;
                i += end + 1;
            }
            b'0'..=b'9' => {
                let colon = b[i..]
                    .iter()
                    .position(|&c| c == b':')
                    .ok_or_else(|| WireError::Decode("bad string length".into()))?;
                let len: usize = std::str::from_utf8(&b[i..i + colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| WireError::Decode("bad string length".into()))?;
                i = i
                    .checked_add(colon + 1)
                    .and_then(|x| x.checked_add(len))
                    .filter(|&x| x <= b.len())
                    .ok_or_else(|| WireError::Decode("string runs past the end".into()))?;
            }
            c => return Err(WireError::Decode(format!("unexpected byte {c:#04x}"))),
        }
    }
    Err(WireError::Decode("truncated".into()))
}

fn ben_to_json(v: Ben) -> Result<Value, WireError> {
    Ok(match v {
        Ben::Bytes(b) => Value::String(String::from_utf8(b).map_err(|_| WireError::NotUtf8)?),
        Ben::Int(i) => Value::Number(i.into()),
        Ben::List(l) => Value::Array(l.into_iter().map(ben_to_json).collect::<Result<_, _>>()?),
        Ben::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d {
                m.insert(
                    String::from_utf8(k).map_err(|_| WireError::NotUtf8)?,
                    ben_to_json(v)?,
                );
            }
            Value::Object(m)
        }
    })
}

fn json_to_ben(v: &Value) -> Ben {
    match v {
        Value::String(s) => Ben::Bytes(s.clone().into_bytes()),
        Value::Number(n) => n
            .as_i64()
            .map(Ben::Int)
            .unwrap_or_else(|| Ben::Bytes(n.to_string().into_bytes())),
        Value::Bool(b) => Ben::Int(i64::from(*b)),
        Value::Null => Ben::Bytes(Vec::new()),
        Value::Array(a) => Ben::List(a.iter().map(json_to_ben).collect()),
        Value::Object(o) => Ben::Dict(
            o.iter()
                .map(|(k, v)| (k.clone().into_bytes(), json_to_ben(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kamailio_offer_decodes() {
        let body = b"d7:command5:offer7:call-id3:abc8:from-tag2:t13:sdp4:v=0\n5:flagsl13:trust-addresse7:replacel6:origine13:received froml3:IP49:192.0.2.1ee";
        let (m, enc) = decode(body).unwrap();
        assert_eq!(enc, Encoding::Bencode);
        assert_eq!(
            Value::Object(m),
            json!({"command": "offer", "call-id": "abc", "from-tag": "t1", "sdp": "v=0\n",
            "flags": ["trust-address"], "replace": ["origin"], "received from": ["IP4", "192.0.2.1"]})
        );
    }

    #[test]
    fn replies_are_bencoded_with_sorted_keys() {
        let reply = json!({"result": "ok", "sdp": "v=0\r\n", "created": 17, "calls": ["a", "b"]});
        let out = encode(reply.as_object().unwrap(), Encoding::Bencode);
        assert_eq!(
            out,
            b"d5:callsl1:a1:be7:createdi17e6:result2:ok3:sdp5:v=0\r\ne".to_vec()
        );
        let (back, _) = decode(&out).unwrap();
        assert_eq!(Value::Object(back), reply);
        assert_eq!(
            encode(reply.as_object().unwrap(), Encoding::Json),
            reply.to_string().into_bytes()
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let deep = format!("d1:a{}i1e{}e", "l".repeat(100), "e".repeat(100));
        for (body, want) in [
            (&b"d7:command"[..], "truncated"),
            (b"d7:command4:pinge trailing", "trailing"),
            (b"li1ee", "not a dictionary"),
            (b"[1]", "not a dictionary"),
            (b"{\"a\":", "EOF"),
            (b"d3:abc99999:xe", "past the end"),
            (b"d1:ai12", "unterminated"),
            (b"d1:a1:\xffe", "UTF-8"),
            (deep.as_bytes(), "nesting"),
            (b"", "not a dictionary"),
        ] {
            let e = decode(body).unwrap_err().to_string();
            assert!(
                e.starts_with("Could not decode dictionary") && e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
