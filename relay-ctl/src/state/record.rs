//! The per-call record a shared store holds: one call's state, who owns it and since which
//! takeover. Self-describing, and decoded in two steps so an unknown version is recognised and
//! refused before any of its content is interpreted.
//!
//! Versions:
//! - 1: one JSON object `{format, version: 1, call_id, owner, created, call}`, without takeover
//!   epochs. Read as epoch 0, updated = created.
//! - 2 (written now): a header line `xdp-relay-call 2 OWNER EPOCH`, then the JSON object (which
//!   adds `epoch` and `updated_ms`). The header lets Redis's write script and the keyspace
//!   subscriber read owner and epoch from the first bytes (GETRANGE) without decoding the call.
//!
//! `call` is relay-core's per-call record ([`CallExport`]), which carries its own version.

use std::net::IpAddr;

pub use relay_core::session::CallRecord as CallExport;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const RECORD_FORMAT: &str = "xdp-relay-call";
/// The version this relay writes.
pub const RECORD_VERSION: u32 = 2;
/// The oldest version this relay reads.
pub const RECORD_VERSION_MIN: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallRecord {
    pub format: String,
    pub version: u32,
    pub call_id: String,
    /// Relay id of the relay that installs this call's media (`--relay-id`, default hostname).
    pub owner: String,
    /// Raised by one at every takeover; a relay overwrites a record owned by another relay only
    /// with a higher epoch (see [`super::takeover`]).
    pub epoch: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Last write, milliseconds since the Unix epoch.
    pub updated_ms: u64,
    pub call: CallExport,
}

/// Why a stored value is not a record this relay can use (counted per kind in the metrics).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a call record: {0}")]
    Corrupt(String),
    #[error(
        "call record version {0} is not one this relay reads ({RECORD_VERSION_MIN} to {RECORD_VERSION}): written by a newer relay? left untouched"
    )]
    Version(u64),
    #[error("call record for `{key}` names call `{call_id}`")]
    KeyMismatch { key: String, call_id: String },
}

impl RecordError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Corrupt(_) | RecordError::KeyMismatch { .. } => "corrupt",
            RecordError::Version(_) => "version",
        }
    }
}

/// Version 1 as it was written.
#[derive(Deserialize)]
struct V1 {
    call_id: String,
    owner: String,
    created: u64,
    call: CallExport,
}

impl CallRecord {
    pub fn new(
        call_id: &str,
        owner: &str,
        epoch: u64,
        created: u64,
        updated_ms: u64,
        call: CallExport,
    ) -> CallRecord {
        CallRecord {
            format: RECORD_FORMAT.to_owned(),
            version: RECORD_VERSION,
            call_id: call_id.to_owned(),
            owner: owner.to_owned(),
            epoch,
            created,
            updated_ms,
            call,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{RECORD_FORMAT} {} {} {}\n",
            self.version, self.owner, self.epoch
        )
        .into_bytes();
        // A record is plain data: serialising it cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Decodes any version this relay reads, upgraded to the current layout.
    pub fn decode(bytes: &[u8]) -> Result<CallRecord, RecordError> {
        if bytes.first() == Some(&b'{') {
            return CallRecord::decode_json(bytes, 1);
        }
        let Some(head) = Head::parse(bytes) else {
            return Err(RecordError::Corrupt("no record header".into()));
        };
        if head.version != u64::from(RECORD_VERSION) {
            return Err(RecordError::Version(head.version));
        }
        let rec = CallRecord::decode_json(&bytes[head.len..], RECORD_VERSION)?;
        if rec.owner != head.owner || rec.epoch != head.epoch {
            return Err(RecordError::Corrupt("header and body disagree".into()));
        }
        Ok(rec)
    }

    /// The JSON part of a record of layout `layout` (1: JSON only; 2: after the header).
    fn decode_json(bytes: &[u8], layout: u32) -> Result<CallRecord, RecordError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Corrupt(e.to_string()))?;
        if v.get("format").and_then(Value::as_str) != Some(RECORD_FORMAT) {
            return Err(RecordError::Corrupt(format!(
                "no \"format\": \"{RECORD_FORMAT}\""
            )));
        }
        let version = v
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| RecordError::Corrupt("no version".into()))?;
        let corrupt = |e: serde_json::Error| RecordError::Corrupt(e.to_string());
        if version != u64::from(layout) {
            return Err(if layout == 1 && version > 1 {
                RecordError::Version(version)
            } else {
                RecordError::Corrupt(format!("version {version} in a layout {layout} record"))
            });
        }
        let rec = match version {
            1 => {
                let old: V1 = serde_json::from_value(v).map_err(corrupt)?;
                CallRecord {
                    format: RECORD_FORMAT.to_owned(),
                    version: RECORD_VERSION,
                    call_id: old.call_id,
                    owner: old.owner,
                    epoch: 0,
                    created: old.created,
                    updated_ms: old.created.saturating_mul(1000),
                    call: old.call,
                }
            }
            2 => serde_json::from_value(v).map_err(corrupt)?,
            other => return Err(RecordError::Version(other)),
        };
        let body = rec.call.version;
        if !(1..=relay_core::session::CALL_RECORD_VERSION).contains(&body) {
            return Err(RecordError::Version(u64::from(body)));
        }
        if rec.call.call_id != rec.call_id {
            return Err(RecordError::Corrupt(
                "record and call body name other calls".into(),
            ));
        }
        Ok(rec)
    }

    /// Decodes the value stored under `key`'s call id, checking they agree.
    pub fn decode_for(call_id: &str, bytes: &[u8]) -> Result<CallRecord, RecordError> {
        let rec = CallRecord::decode(bytes)?;
        if rec.call_id != call_id {
            return Err(RecordError::KeyMismatch {
                key: call_id.to_owned(),
                call_id: rec.call_id,
            });
        }
        Ok(rec)
    }

    /// Owner and epoch from the first bytes of a stored value (None: no version 2 header).
    pub fn head(bytes: &[u8]) -> Option<(String, u64)> {
        Head::parse(bytes).map(|h| (h.owner, h.epoch))
    }

    /// The same record in the version 1 layout (tests of the upgrade path, migration tools).
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("version".into(), Value::from(1));
            m.remove("epoch");
            m.remove("updated_ms");
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// The bind addresses a call's relay endpoints use (what a relay needs on its host to take it
/// over).
pub fn binds(call: &CallExport) -> Vec<IpAddr> {
    let mut b: Vec<IpAddr> = call.endpoints().iter().map(|e| e.ip()).collect();
    b.sort();
    b.dedup();
    b
}

/// `xdp-relay-call VERSION OWNER EPOCH\n`
struct Head {
    version: u64,
    owner: String,
    epoch: u64,
    /// Header length including the newline.
    len: usize,
}

/// Longest header read (GETRANGE 0..HEAD_MAX); relay ids are at most 64 bytes.
pub const HEAD_MAX: usize = 128;

impl Head {
    fn parse(bytes: &[u8]) -> Option<Head> {
        let nl = bytes.iter().take(HEAD_MAX).position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mut f = line.split(' ');
        if f.next()? != RECORD_FORMAT {
            return None;
        }
        let version = f.next()?.parse().ok()?;
        let owner = f.next()?.to_owned();
        let epoch = f.next().map_or(Some(0), |e| e.parse().ok())?;
        Some(Head {
            version,
            owner,
            epoch,
            len: nl + 1,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use relay_core::session::{Config, OfferOptions, Sessions};

    pub(crate) fn export(bind: &str, call_id: &str) -> CallExport {
        let mut s = Sessions::new(Config {
            interfaces: vec![format!("pub/{bind}").parse().unwrap()],
            port_min: 30000,
            port_max: 30100,
        })
        .unwrap();
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        s.offer(call_id, "ft", sdp, &OfferOptions::default())
            .unwrap();
        s.export_call(call_id).unwrap()
    }

    pub(crate) fn record(owner: &str, epoch: u64) -> CallRecord {
        CallRecord::new(
            "c1",
            owner,
            epoch,
            1_700_000_000,
            1,
            export("10.0.0.1", "c1"),
        )
    }

    #[test]
    fn round_trips_and_reads_version_1() {
        let r = record("a", 3);
        let back = CallRecord::decode(&r.encode()).unwrap();
        assert_eq!((back.owner.as_str(), back.epoch), ("a", 3));
        let v1 = CallRecord::decode(&r.encode_v1()).unwrap();
        assert_eq!((v1.version, v1.epoch, v1.call_id.as_str()), (2, 0, "c1"));
        assert_eq!(v1.call.endpoints(), r.call.endpoints());
    }

    #[test]
    fn refuses_unknown_versions_and_garbage_without_panicking() {
        let enc = record("a", 1).encode();
        let nl = enc.iter().position(|&b| b == b'\n').unwrap();
        assert_eq!(CallRecord::head(&enc), Some(("a".into(), 1)));
        // A future header version is refused before its body is looked at.
        let mut future = b"xdp-relay-call 3 a 1\n".to_vec();
        future.extend_from_slice(b"anything at all");
        assert_eq!(CallRecord::decode(&future).unwrap_err().kind(), "version");
        let mut v: Value = serde_json::from_slice(&enc[nl + 1..]).unwrap();
        v["call"]["version"] = Value::from(99);
        let mut body_future = enc[..=nl].to_vec();
        body_future.extend(serde_json::to_vec(&v).unwrap());
        assert_eq!(
            CallRecord::decode(&body_future).unwrap_err().kind(),
            "version"
        );
        // A JSON-only record claiming a newer version is refused as such.
        v["version"] = Value::from(7);
        let e = CallRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.kind(), "version");
        // Header and body must agree.
        let mut lying = b"xdp-relay-call 2 b 1\n".to_vec();
        lying.extend_from_slice(&enc[nl + 1..]);
        assert_eq!(CallRecord::decode(&lying).unwrap_err().kind(), "corrupt");
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"{\"format\":\"xdp-relay-call\"}",
            b"{\"format\":\"other\",\"version\":2}",
            b"{\"format\":\"xdp-relay-call\",\"version\":1,\"call\":7}",
            b"xdp-relay-call 2 a 1\n{",
            b"xdp-relay-call x",
            b"\xff\xfe",
        ] {
            assert_eq!(CallRecord::decode(junk).unwrap_err().kind(), "corrupt");
        }
        let e = CallRecord::decode_for("other", &record("a", 1).encode()).unwrap_err();
        assert_eq!(e.kind(), "corrupt");
    }
}
