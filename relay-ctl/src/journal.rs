//! Write-ahead state: every call change is appended to a journal and synced before its NG reply
//! goes out and before its fast-path entries change, so a crash never loses an acknowledged
//! change and a restart never finds the map newer than the state.
//!
//! On disk, next to the state file (`sessions.json`):
//! - the snapshot, `sessions.json`: `{"version": 3, "calls": [CALL, ...]}`, replaced atomically
//!   when the journal is compacted;
//! - the journal, `sessions.json.journal`: one operation per line, `CRC32-HEX SP JSON LF`, where
//!   JSON is `{"put": CALL}` (the call's whole state after the change) or `{"delete": "ID"}`.
//!
//! Loading replays the journal over the snapshot in order. Replaying an operation twice changes
//! nothing (a put carries the whole call), so a crash between writing a snapshot and truncating
//! the journal is harmless. A torn last line is a write that was never synced, so never
//! acknowledged: it is dropped. Any other damage refuses the whole state, which is moved aside.

use std::os::unix::fs::OpenOptionsExt as _;
use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use relay_core::session::CallRecord;

/// Snapshot format written by this version; 1 and 2 are the whole-state files of earlier
/// daemons (see [`Loaded::Legacy`]).
pub const SNAPSHOT_VERSION: u32 = 3;

/// One call as the daemon keeps it: the session record plus the daemon's own bookkeeping.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedCall {
    pub record: CallRecord,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Fast-path counter slot of each relay endpoint with an entry.
    pub slots: Vec<(SocketAddr, u32)>,
    /// The SRTP the relay terminates on the call's legs (keys included): absent for calls
    /// without crypto conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<crate::gateway::CallCrypto>,
    /// Labels, Via branches and TOS (rtpengine's options): absent when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<crate::ngopts::Names>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put(Box<SavedCall>),
    Delete(String),
}

impl Op {
    pub fn call_id(&self) -> &str {
        match self {
            Op::Put(c) => &c.record.call_id,
            Op::Delete(id) => id,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    version: u32,
    calls: Vec<SavedCall>,
}

/// What was on disk.
#[derive(Debug)]
pub enum Loaded {
    /// Nothing saved.
    Empty,
    /// Calls by id, after the journal's operations.
    Calls(BTreeMap<String, SavedCall>),
    /// A whole-state file of an earlier daemon (format 1 or 2), to be read by its own code.
    Legacy(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} line {line} is damaged ({why}); the state was moved to {kept} and nothing was \
         loaded: fix or remove it to start with its calls"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
        kept: PathBuf,
    },
    #[error(
        "{path} is snapshot format {found}; this daemon reads up to {SNAPSHOT_VERSION}: the \
         state was moved to {kept}"
    )]
    Version {
        path: PathBuf,
        found: u32,
        kept: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The open journal of one state file.
pub struct Journal {
    snapshot: PathBuf,
    path: PathBuf,
    file: File,
    /// Operations appended since the last compaction.
    appended: u64,
}

impl Journal {
    /// Opens (creating) the journal of `state_file` and loads what is saved. Temporary files
    /// left by a crash are removed first.
    pub fn open(state_file: &Path) -> Result<(Journal, Loaded), JournalError> {
        let dir = parent(state_file);
        fs::create_dir_all(dir).map_err(io(dir))?;
        remove_leftovers(state_file);
        let path = journal_path(state_file);
        let loaded = load(state_file, &path)?;
        // Owner only, like the snapshot: records carry the SRTP keys of crypto calls.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let appended = count_lines(&path);
        Ok((
            Journal {
                snapshot: state_file.to_owned(),
                path,
                file,
                appended,
            },
            loaded,
        ))
    }

    /// Appends operations and syncs them: when this returns Ok they survive a crash.
    pub fn append(&mut self, ops: &[Op]) -> Result<(), JournalError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(ops.len() * 1024);
        for op in ops {
            let json = serde_json::to_vec(op).map_err(|e| JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
            write!(buf, "{:08x} ", crc32fast::hash(&json)).ok();
            buf.extend_from_slice(&json);
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.appended += ops.len() as u64;
        Ok(())
    }

    /// Operations appended since the last compaction.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Writes `calls` (the whole current state) as the snapshot and empties the journal.
    pub fn compact(&mut self, calls: Vec<SavedCall>) -> Result<(), JournalError> {
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            calls,
        };
        let bytes = serde_json::to_vec(&snap).map_err(|e| JournalError::Io {
            path: self.snapshot.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::state_file::write_atomic(&self.snapshot, &bytes).map_err(io(&self.snapshot))?;
        // Safe to crash here: replaying the old journal over the new snapshot converges.
        self.file.set_len(0).map_err(io(&self.path))?;
        self.file.sync_all().map_err(io(&self.path))?;
        self.appended = 0;
        Ok(())
    }
}

fn parent(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

pub fn journal_path(state_file: &Path) -> PathBuf {
    let mut s = state_file.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// `sessions.tmp.PID` files of atomic writes that a crash interrupted.
fn remove_leftovers(state_file: &Path) {
    let (Some(stem), Ok(entries)) = (
        state_file.file_stem().and_then(|s| s.to_str()),
        fs::read_dir(parent(state_file)),
    ) else {
        return;
    };
    let prefix = format!("{stem}.tmp.");
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(path = %e.path().display(), "removed a leftover temporary state file")
                }
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "removing a leftover temporary state file")
                }
            }
        }
    }
}

fn count_lines(path: &Path) -> u64 {
    File::open(path)
        .map(|f| BufReader::new(f).lines().count() as u64)
        .unwrap_or(0)
}

/// Moves the damaged state (snapshot and journal) aside, so the next start begins clean and the
/// operator keeps the evidence.
fn keep_aside(state_file: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = PathBuf::from(format!("{}.damaged-{stamp}", state_file.display()));
    let _ = fs::rename(state_file, &kept);
    let journal = journal_path(state_file);
    let _ = fs::rename(&journal, format!("{}.journal", kept.display()));
    kept
}

fn load(state_file: &Path, journal: &Path) -> Result<Loaded, JournalError> {
    let mut calls = BTreeMap::new();
    let mut any = false;
    match crate::state_file::read(state_file).map_err(io(state_file))? {
        None => {}
        Some(bytes) => {
            any = true;
            #[derive(serde::Deserialize)]
            struct Probe {
                version: Option<u32>,
            }
            let version = serde_json::from_slice::<Probe>(&bytes)
                .map(|p| p.version)
                .map_err(|e| JournalError::Corrupt {
                    path: state_file.to_owned(),
                    line: 1,
                    why: e.to_string(),
                    kept: keep_aside(state_file),
                })?;
            match version {
                Some(SNAPSHOT_VERSION) => {
                    let snap: Snapshot =
                        serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                            path: state_file.to_owned(),
                            line: 1,
                            why: e.to_string(),
                            kept: keep_aside(state_file),
                        })?;
                    for c in snap.calls {
                        calls.insert(c.record.call_id.clone(), c);
                    }
                }
                Some(v) if v > SNAPSHOT_VERSION => {
                    return Err(JournalError::Version {
                        path: state_file.to_owned(),
                        found: v,
                        kept: keep_aside(state_file),
                    });
                }
                // Format 1 and 2: the whole state of an earlier daemon, with no journal.
                _ if !journal.exists() || count_lines(journal) == 0 => {
                    return Ok(Loaded::Legacy(bytes));
                }
                _ => {
                    return Err(JournalError::Corrupt {
                        path: state_file.to_owned(),
                        line: 1,
                        why: "an old-format state file next to a journal".into(),
                        kept: keep_aside(state_file),
                    });
                }
            }
        }
    }
    let text = match fs::read(journal) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(journal)(e)),
    };
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        any = true;
        let last = i + 1 == lines.len();
        match parse_line(line) {
            Ok(Op::Put(c)) => {
                calls.insert(c.record.call_id.clone(), *c);
            }
            Ok(Op::Delete(id)) => {
                calls.remove(&id);
            }
            // A torn last line was never synced, so never acknowledged.
            Err(why) if last => {
                tracing::warn!(path = %journal.display(), line = i + 1, %why, "dropping a torn last journal line (a write interrupted by a crash)");
            }
            Err(why) => {
                return Err(JournalError::Corrupt {
                    path: journal.to_owned(),
                    line: i + 1,
                    why,
                    kept: keep_aside(state_file),
                });
            }
        }
    }
    Ok(if any {
        Loaded::Calls(calls)
    } else {
        Loaded::Empty
    })
}

fn parse_line(line: &[u8]) -> Result<Op, String> {
    let body = line.strip_suffix(b"\n").ok_or("no line end (torn write)")?;
    let (crc, json) = body
        .split_at_checked(9)
        .filter(|(c, _)| c.last() == Some(&b' '))
        .ok_or("no checksum")?;
    let crc = std::str::from_utf8(&crc[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("bad checksum field")?;
    if crc32fast::hash(json) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::session::{AnswerOptions, Config, OfferOptions, Sessions};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("relay-journal-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn record(call_id: &str, port: u16) -> SavedCall {
        let mut s = Sessions::new(Config {
            interfaces: vec!["pub/192.0.2.1".parse().unwrap()],
            port_min: 30000,
            port_max: 30099,
        })
        .unwrap();
        let sdp = |o: &str| {
            format!(
                "v=0\r\no={o} 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            )
        };
        s.offer(call_id, "A", &sdp("a"), &OfferOptions::default())
            .unwrap();
        s.answer(call_id, "A", "B", &sdp("b"), &AnswerOptions::default())
            .unwrap();
        SavedCall {
            record: s.export_call(call_id).unwrap(),
            created: 1,
            slots: vec![],
            crypto: None,
            names: None,
        }
    }

    fn ids(l: &Loaded) -> Vec<String> {
        match l {
            Loaded::Calls(c) => c.keys().cloned().collect(),
            _ => panic!("{l:?}"),
        }
    }

    #[test]
    fn replay_over_snapshot_and_compaction() {
        let dir = tmpdir("replay");
        let state = dir.join("sessions.json");
        let (mut j, loaded) = Journal::open(&state).unwrap();
        assert!(matches!(loaded, Loaded::Empty));
        j.append(&[Op::Put(Box::new(record("a", 4000)))]).unwrap();
        j.append(&[Op::Put(Box::new(record("b", 4002))), Op::Delete("a".into())])
            .unwrap();
        drop(j);
        let (mut j, loaded) = Journal::open(&state).unwrap();
        assert_eq!(ids(&loaded), ["b"]);
        assert_eq!(j.appended(), 3);
        j.compact(vec![record("b", 4002)]).unwrap();
        assert_eq!(j.appended(), 0);
        j.append(&[Op::Put(Box::new(record("c", 4004)))]).unwrap();
        drop(j);
        let (_, loaded) = Journal::open(&state).unwrap();
        assert_eq!(ids(&loaded), ["b", "c"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_dropped_damage_elsewhere_refuses_everything() {
        let dir = tmpdir("torn");
        let state = dir.join("sessions.json");
        let (mut j, _) = Journal::open(&state).unwrap();
        j.append(&[Op::Put(Box::new(record("a", 4000)))]).unwrap();
        drop(j);
        let jp = journal_path(&state);
        let mut f = OpenOptions::new().append(true).open(&jp).unwrap();
        f.write_all(b"0badf00d {\"put\":").unwrap();
        drop(f);
        let (_, loaded) = Journal::open(&state).unwrap();
        assert_eq!(ids(&loaded), ["a"]);
        // A damaged line in the middle: refused, kept aside, the next start is empty.
        let mut text = fs::read(&jp).unwrap();
        let at = text.iter().position(|b| *b == b'{').unwrap() + 3;
        text[at] ^= 0x20;
        fs::write(&jp, &text).unwrap();
        let mut f = OpenOptions::new().append(true).open(&jp).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let err = Journal::open(&state).err().unwrap();
        assert!(
            matches!(err, JournalError::Corrupt { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("damaged"), "{err}");
        let (_, loaded) = Journal::open(&state).unwrap();
        assert!(matches!(loaded, Loaded::Empty));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leftovers_are_removed_and_old_formats_handed_back() {
        let dir = tmpdir("legacy");
        let state = dir.join("sessions.json");
        fs::write(dir.join("sessions.tmp.12345"), b"partial").unwrap();
        fs::write(&state, br#"{"sessions":{},"calls":[],"slots":[]}"#).unwrap();
        let (_, loaded) = Journal::open(&state).unwrap();
        assert!(matches!(loaded, Loaded::Legacy(_)));
        assert!(!dir.join("sessions.tmp.12345").exists());
        fs::write(&state, br#"{"version":9,"calls":[]}"#).unwrap();
        assert!(matches!(
            Journal::open(&state).err().unwrap(),
            JournalError::Version { found: 9, .. }
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}
