//! Every RFC 4475 torture message, with the outcome this crate must give it.

use std::net::SocketAddr;
use std::path::PathBuf;

use relay_core::sip::{self, SipError, SipMessage};

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Parsed; the SDP body is rewritten.
    Rewritten,
    /// Parsed; no SDP body, so `rewrite_body` answers NoSdpBody.
    NoSdp,
    /// Parsed; the body is not something the relay rewrites.
    Unsupported,
    /// Refused as malformed; the check names the expected error.
    Refused(fn(&SipError) -> bool),
}
use Expect::*;

fn start(e: &SipError) -> bool {
    matches!(e, SipError::StartLine(_))
}
/// (file, RFC 4475 section, expected outcome)
const TABLE: &[(&str, &str, Expect)] = &[
    // 3.1.1 valid messages
    ("wsinv", "3.1.1.1", Rewritten),
    ("intmeth", "3.1.1.2", NoSdp),
    ("esc01", "3.1.1.3", Rewritten),
    ("escnull", "3.1.1.4", NoSdp),
    ("esc02", "3.1.1.5", NoSdp),
    ("lwsdisp", "3.1.1.6", NoSdp),
    ("longreq", "3.1.1.7", Rewritten),
    ("dblreq", "3.1.1.8", NoSdp),
    ("semiuri", "3.1.1.9", NoSdp),
    ("transports", "3.1.1.10", NoSdp),
    ("mpart01", "3.1.1.11", Unsupported),
    ("unreason", "3.1.1.12", Rewritten),
    ("noreason", "3.1.1.13", NoSdp),
    // 3.1.2 invalid messages
    (
        "badinv01",
        "3.1.2.1",
        Refused(|e| matches!(e, SipError::InvalidHeader { header: "Via", .. })),
    ),
    (
        "clerr",
        "3.1.2.2",
        Refused(|e| matches!(e, SipError::BodyTruncated { .. })),
    ),
    (
        "ncl",
        "3.1.2.3",
        Refused(|e| matches!(e, SipError::ContentLength(_))),
    ),
    (
        "scalar02",
        "3.1.2.4",
        Refused(|e| matches!(e, SipError::InvalidHeader { header: "CSeq", .. })),
    ),
    (
        "scalarlg",
        "3.1.2.5",
        Refused(|e| matches!(e, SipError::InvalidHeader { header: "CSeq", .. })),
    ),
    (
        "quotbal",
        "3.1.2.6",
        Refused(|e| matches!(e, SipError::InvalidHeader { .. })),
    ),
    ("ltgtruri", "3.1.2.7", Refused(start)),
    ("lwsruri", "3.1.2.8", Refused(start)),
    ("lwsstart", "3.1.2.9", Refused(start)),
    ("trws", "3.1.2.10", Refused(start)),
    ("escruri", "3.1.2.11", Refused(start)),
    (
        "baddate",
        "3.1.2.12",
        Refused(|e| matches!(e, SipError::InvalidHeader { header: "Date", .. })),
    ),
    (
        "regbadct",
        "3.1.2.13",
        Refused(|e| {
            matches!(
                e,
                SipError::InvalidHeader {
                    header: "Contact",
                    ..
                }
            )
        }),
    ),
    (
        "badaspec",
        "3.1.2.14",
        Refused(|e| matches!(e, SipError::InvalidHeader { .. })),
    ),
    (
        "baddn",
        "3.1.2.15",
        Refused(|e| matches!(e, SipError::InvalidHeader { header: "From", .. })),
    ),
    ("badvers", "3.1.2.16", Refused(start)),
    (
        "mismatch01",
        "3.1.2.17",
        Refused(|e| matches!(e, SipError::CSeqMismatch { .. })),
    ),
    (
        "mismatch02",
        "3.1.2.18",
        Refused(|e| matches!(e, SipError::CSeqMismatch { .. })),
    ),
    ("bigcode", "3.1.2.19", Refused(start)),
    // 3.2 transaction layer semantics: no RFC 3261 branch, still a parsable message
    ("badbranch", "3.2.1", NoSdp),
    // 3.3 application layer semantics
    (
        "insuf",
        "3.3.1",
        Refused(|e| matches!(e, SipError::MissingHeader(_))),
    ),
    ("unkscm", "3.3.2", NoSdp),
    ("novelsc", "3.3.3", NoSdp),
    ("unksm2", "3.3.4", NoSdp),
    ("bext01", "3.3.5", NoSdp),
    ("invut", "3.3.6", Unsupported),
    ("regaut01", "3.3.7", NoSdp),
    (
        "multi01",
        "3.3.8",
        Refused(|e| matches!(e, SipError::DuplicateHeader(_))),
    ),
    (
        "mcl01",
        "3.3.9",
        Refused(|e| matches!(e, SipError::DuplicateHeader("content-length"))),
    ),
    ("bcast", "3.3.10", Rewritten),
    ("zeromf", "3.3.11", NoSdp),
    ("cparam01", "3.3.12", NoSdp),
    ("cparam02", "3.3.13", NoSdp),
    ("regescrt", "3.3.14", NoSdp),
    ("sdp01", "3.3.15", Rewritten),
    // 3.4 backward compatibility
    ("inv2543", "3.4.1", Rewritten),
];

/// `shared/vectors/rfc4475` beside the repository (or a worktree's ancestor).
fn vectors_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/vectors/rfc4475"))
        .find(|p| p.is_dir())
        .expect("shared/vectors/rfc4475 beside the repository")
}

fn new_c(sdp: &str) -> Result<String, std::convert::Infallible> {
    // Replace the address of every c= line, keep each line's ending.
    Ok(sdp
        .split_inclusive('\n')
        .map(|l| {
            if l.starts_with("c=") {
                let eol = &l[l.trim_end_matches(['\r', '\n']).len()..];
                format!("c=IN IP4 203.0.113.77{eol}")
            } else {
                l.to_owned()
            }
        })
        .collect())
}

/// Header section (start line + headers) split into lines with their endings.
fn head_lines(msg: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = msg[pos..].iter().position(|&c| c == b'\n') {
        let line = &msg[pos..pos + i + 1];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        out.push(line);
        pos += i + 1;
    }
    out
}

fn is_cl_line(l: &[u8]) -> bool {
    let s = String::from_utf8_lossy(l).to_ascii_lowercase();
    let name = s.split(':').next().unwrap_or("").trim().to_owned();
    name == "content-length" || name == "l"
}

/// Checks that `out` equals `input` except the Content-Length value (and an added one).
fn assert_headers_preserved(file: &str, input: &[u8], out: &[u8]) {
    let a = head_lines(input);
    let b = head_lines(out);
    let mut bi = b.iter();
    for la in &a {
        let lb = bi
            .next()
            .unwrap_or_else(|| panic!("{file}: output lost header lines"));
        if is_cl_line(la) {
            assert!(is_cl_line(lb), "{file}: Content-Length moved");
            let (na, nb) = (
                la.iter().position(|&c| c == b':'),
                lb.iter().position(|&c| c == b':'),
            );
            assert_eq!(
                la[..na.unwrap()],
                lb[..nb.unwrap()],
                "{file}: CL name changed"
            );
        } else {
            assert_eq!(
                String::from_utf8_lossy(la),
                String::from_utf8_lossy(lb),
                "{file}: header line changed"
            );
        }
    }
    for extra in bi {
        assert!(
            is_cl_line(extra),
            "{file}: unexpected added line {:?}",
            String::from_utf8_lossy(extra)
        );
    }
}

#[test]
fn rfc4475_table() {
    let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
        .expect("RFC 4475 vectors present")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".dat").map(str::to_owned))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = TABLE.iter().map(|t| t.0).collect();
    listed.sort();
    assert_eq!(files, listed, "the table must name every vector file");

    let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let mut failures = Vec::new();
    for &(file, section, expect) in TABLE {
        let input = std::fs::read(vectors_dir().join(format!("{file}.dat"))).unwrap();
        let parsed = SipMessage::parse(&input);
        let rewritten = sip::rewrite_body(&input, new_c);
        let outcome = match (&parsed, &rewritten) {
            (Err(e), _) => format!("refused: {e}"),
            (Ok(_), Ok(_)) => "rewritten".into(),
            (Ok(_), Err(e)) => format!("not rewritten: {e}"),
        };
        println!("{file:12} {section:9} {outcome}");
        let ok = match expect {
            Refused(check) => {
                parsed.as_ref().err().is_some_and(check)
                    && rewritten.as_ref().err().is_some_and(check)
                    && sip::apply_rport(&input, src)
                        .err()
                        .as_ref()
                        .is_some_and(check)
            }
            Rewritten => {
                if let Ok(out) = &rewritten {
                    assert_headers_preserved(file, &input, out);
                    let again = SipMessage::parse_framed(out, sip::Framing::Stream)
                        .unwrap_or_else(|e| panic!("{file}: output does not parse: {e}"));
                    let m = parsed.as_ref().unwrap();
                    assert_eq!(again.sdp().unwrap(), new_c(m.sdp().unwrap()).unwrap());
                    assert!(again.sdp().unwrap().contains("c=IN IP4 203.0.113.77"));
                    assert_eq!(again.call_id(), m.call_id());
                }
                rewritten.is_ok()
            }
            NoSdp => matches!(rewritten, Err(SipError::NoSdpBody)),
            Unsupported => matches!(rewritten, Err(SipError::UnsupportedBody(_))),
        };
        // rport on every parsable request: only the top Via line may change.
        if let Ok(m) = &parsed
            && m.is_request()
        {
            let out = sip::apply_rport(&input, src).unwrap();
            let (a, b) = (head_lines(&input), head_lines(&out));
            assert_eq!(a.len(), b.len(), "{file}: rport changed line count");
            let changed: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
            assert!(
                changed.len() <= 1,
                "{file}: rport changed {} lines",
                changed.len()
            );
            let again = SipMessage::parse(&out).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(again.via_branch(), m.via_branch());
        }
        if !ok {
            failures.push(format!(
                "{file} ({section}): expected {expect:?}, got {outcome}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The summary an offer/answer driver reads, from the most whitespace-heavy valid message.
#[test]
fn wsinv_summary() {
    let input = std::fs::read(vectors_dir().join("wsinv.dat")).unwrap();
    let m = SipMessage::parse(&input).unwrap();
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(m.from_tag(), Some("98asjd8"));
    assert_eq!(m.to_tag(), Some("1918181833n"));
    assert_eq!(m.cseq(), (9, "INVITE"));
    assert_eq!(m.via_branch(), Some("390skdjuw"));
    assert_eq!(m.body().len(), 150);
    assert!(m.sdp().unwrap().starts_with("v=0\r\n"));
}

/// dblreq over UDP: the second message after Content-Length is dropped, not parsed.
#[test]
fn dblreq_second_message_dropped() {
    let input = std::fs::read(vectors_dir().join("dblreq.dat")).unwrap();
    let m = SipMessage::parse(&input).unwrap();
    assert_eq!(m.method(), Some("REGISTER"));
    assert!(m.body().is_empty());
    let src = "192.0.2.125:5060".parse().unwrap();
    let out = sip::apply_rport(&input, src).unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("INVITE"));
    assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    assert!(matches!(
        SipMessage::parse_framed(&input, sip::Framing::Stream),
        Err(SipError::TrailingData(_))
    ));
}
