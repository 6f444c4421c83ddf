//! relay-ctl's operator subcommands against a running daemon: an INVITE and its 200 OK are sent
//! as whole SIP messages and come back with rewritten bodies and correct Content-Length; the
//! call is listed, shown and deleted; errors exit non-zero with a message.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use relay_tests::{
    daemon::{Daemon, relay_ctl_bin},
    netns::{Bpffs, Netns},
    topology::{RELAY_SERVICE, Topology},
};

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.2:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@10.1.1.2>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 123\r\n\
\r\n\
v=0\r\no=alice 1 1 IN IP4 10.1.1.2\r\ns=-\r\nc=IN IP4 10.1.1.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";

const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 10.1.1.2:5060;branch=z9hG4bK776asdhds;rport=5060\r\n\
To: <sip:bob@example.com>;tag=a6c85cf\r\n\
From: <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 121\r\n\
\r\n\
v=0\r\no=bob 2 2 IN IP4 10.1.2.2\r\ns=-\r\nc=IN IP4 10.1.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";

fn ctl(ns: &Netns, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(relay_ctl_bin().unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn body_and_length(msg: &str) -> (String, usize) {
    let (head, body) = msg.split_once("\r\n\r\n").expect("header/body separator");
    let cl = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .trim()
        .parse()
        .unwrap();
    (body.to_owned(), cl)
}

#[test]
fn relay_ctl_drives_a_call_from_sip_messages() {
    if !relay_tests::privileged("relay_ctl_drives_a_call_from_sip_messages") {
        return;
    }
    assert_eq!(INVITE.split_once("\r\n\r\n").unwrap().1.len(), 123);
    assert_eq!(OK.split_once("\r\n\r\n").unwrap().1.len(), 121);
    let t = Topology::new().unwrap();
    let bpffs = Bpffs::new(&t.prefix).unwrap();
    let listen = format!("--listen=pub/{RELAY_SERVICE}");
    let _d = Daemon::start(
        &t.relay,
        &bpffs.path().join("relay"),
        &[&listen, "--detach"],
    )
    .unwrap();

    let out = ctl(&t.relay, &["offer", "--sip", "-"], Some(INVITE));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let invite_out = String::from_utf8(out.stdout).unwrap();
    let (body, cl) = body_and_length(&invite_out);
    assert_eq!(cl, body.len(), "Content-Length matches the rewritten body");
    assert!(
        body.contains(&format!("c=IN IP4 {RELAY_SERVICE}\r\n")),
        "{body}"
    );
    // Headers are untouched apart from Content-Length.
    let head_in: Vec<_> = INVITE
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .collect();
    let head_out: Vec<_> = invite_out
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .collect();
    assert_eq!(head_in, head_out);

    let out = ctl(&t.relay, &["answer", "--sip", "-"], Some(OK));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, cl) = body_and_length(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(cl, body.len());
    assert!(body.contains(&format!("c=IN IP4 {RELAY_SERVICE}\r\n")));

    let out = ctl(&t.relay, &["list"], None);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "a84b4c76e66710@pc33.example.com\n"
    );
    let out = ctl(&t.relay, &["show", "a84b4c76e66710@pc33.example.com"], None);
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(
        show.starts_with("call a84b4c76e66710@pc33.example.com  created "),
        "{show}"
    );
    assert!(
        show.lines().any(|l| l.starts_with("1928301774  1 audio")),
        "{show}"
    );
    assert!(
        show.lines().any(|l| l.starts_with("a6c85cf     1 audio")),
        "{show}"
    );
    let out = ctl(
        &t.relay,
        &["show", "--json", "a84b4c76e66710@pc33.example.com"],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"]["a6c85cf"]["medias"][0]["type"], "audio");

    let out = ctl(
        &t.relay,
        &["delete", "--call-id", "a84b4c76e66710@pc33.example.com"],
        None,
    );
    assert!(out.status.success());
    let out = ctl(
        &t.relay,
        &["delete", "--call-id", "a84b4c76e66710@pc33.example.com"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "a second delete is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Call-ID not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&t.relay, &["show", "a84b4c76e66710@pc33.example.com"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim(),
        "relay-ctl: error: query refused: Unknown call-id"
    );

    // Bad input: clear errors, non-zero exit, nothing created.
    let out = ctl(&t.relay, &["offer", "--sip", "-"], Some("NOT SIP\r\n\r\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsing the SIP message"));
    let out = ctl(
        &t.relay,
        &["offer", "--call-id", "x", "--from-tag", "y"],
        Some("v=0\r\nm=bogus\r\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("offer refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(ctl(&t.relay, &["list"], None).stdout).unwrap(),
        ""
    );
}
