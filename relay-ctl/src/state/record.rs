//! The per-call record a shared store holds: one call's state, who owns it and since which
//! takeover. JSON, self-describing (`format`, `version`), decoded in two steps so an unknown
//! version is recognised and refused before any of its content is interpreted.
//!
//! Versions:
//! - 1: `{format, version: 1, call_id, owner, created, call}`: the first layout, without
//!   takeover epochs. Read as epoch 0, updated = created.
//! - 2 (written now): adds `epoch` (takeover epoch, see [`super::takeover`]) and `updated_ms`.
//!
//! `call` is relay-core's [`CallExport`], which carries its own body version.

use relay_core::session::CallExport;
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
        // A record is plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes any version this relay reads, upgraded to the current layout.
    pub fn decode(bytes: &[u8]) -> Result<CallRecord, RecordError> {
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
        let body = rec.call.call_version;
        if !(relay_core::session::CALL_VERSION_MIN..=relay_core::session::CALL_VERSION)
            .contains(&body)
        {
            return Err(RecordError::Version(u64::from(body)));
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
        assert_eq!(v1.call.ports(), r.call.ports());
    }

    #[test]
    fn refuses_unknown_versions_and_garbage_without_panicking() {
        let mut v: Value = serde_json::from_slice(&record("a", 1).encode()).unwrap();
        v["version"] = Value::from(3);
        let e = CallRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.kind(), "version");
        v["version"] = Value::from(2);
        v["call"]["call_version"] = Value::from(99);
        let e = CallRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.kind(), "version");
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"{\"format\":\"xdp-relay-call\"}",
            b"{\"format\":\"other\",\"version\":2}",
            b"{\"format\":\"xdp-relay-call\",\"version\":2,\"call\":7}",
            b"\xff\xfe",
        ] {
            assert_eq!(CallRecord::decode(junk).unwrap_err().kind(), "corrupt");
        }
        let e = CallRecord::decode_for("other", &record("a", 1).encode()).unwrap_err();
        assert_eq!(e.kind(), "corrupt");
    }
}
