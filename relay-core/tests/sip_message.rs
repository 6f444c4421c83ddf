//! Unit-level behaviour of `relay_core::sip`: rport/received, Content-Length, compact forms,
//! folding, framing, multipart.

use std::convert::Infallible;
use std::net::SocketAddr;

use relay_core::sip::{self, Framing, SipError, SipMessage};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn invite(via: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: {via}\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: c1@example.com\r\n\
         CSeq: 1 INVITE\r\n\
         {extra}\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn top_via(msg: &[u8]) -> String {
    let s = String::from_utf8_lossy(msg);
    s.lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap()
        .to_owned()
}

fn set_c(sdp: &str) -> Result<String, Infallible> {
    Ok(sdp.replace("c=IN IP4 192.0.2.1", "c=IN IP4 203.0.113.5"))
}

#[test]
fn rport_without_value_gets_port_and_received() {
    let msg = invite("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bKa", "", SDP);
    let out = sip::apply_rport(&msg, addr("192.0.2.1:5070")).unwrap();
    // received even though the host equals the source (RFC 3581 s.4).
    assert_eq!(
        top_via(&out),
        "Via: SIP/2.0/UDP 192.0.2.1:5060;rport=5070;branch=z9hG4bKa;received=192.0.2.1"
    );
    let rest = |m: &[u8]| String::from_utf8_lossy(m).replace(&top_via(m), "");
    assert_eq!(rest(&out), rest(&msg));
}

#[test]
fn rport_last_param_and_existing_received() {
    let msg = invite(
        "SIP/2.0/UDP host.example.com;branch=z9hG4bKb;received=10.0.0.1 ; rport",
        "",
        "",
    );
    let out = sip::apply_rport(&msg, addr("198.51.100.7:1234")).unwrap();
    assert_eq!(
        top_via(&out),
        "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKb;received=198.51.100.7 ; rport=1234"
    );
}

#[test]
fn rport_ignores_lookalikes_in_quoted_values() {
    let msg = invite(
        "SIP/2.0/UDP h.example.com;x=\"a;rport;received=1\";branch=z9hG4bKq",
        "",
        "",
    );
    let out = sip::apply_rport(&msg, addr("192.0.2.8:7")).unwrap();
    assert_eq!(
        top_via(&out),
        "Via: SIP/2.0/UDP h.example.com;x=\"a;rport;received=1\";branch=z9hG4bKq;received=192.0.2.8"
    );
}

#[test]
fn received_only_when_host_differs_without_rport() {
    let msg = invite("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc", "", "");
    let same = sip::apply_rport(&msg, addr("192.0.2.1:9999")).unwrap();
    assert_eq!(same, msg, "nothing to add: same host, no rport");
    let other = sip::apply_rport(&msg, addr("203.0.113.9:9999")).unwrap();
    assert_eq!(
        top_via(&other),
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc;received=203.0.113.9"
    );
}

#[test]
fn rport_only_touches_first_via_parm() {
    let msg = invite(
        "SIP/2.0/UDP a.example.com;rport , SIP/2.0/UDP b.example.com;rport",
        "",
        "",
    );
    let out = sip::apply_rport(&msg, addr("[2001:db8::5]:5080")).unwrap();
    assert_eq!(
        top_via(&out),
        "Via: SIP/2.0/UDP a.example.com;rport=5080;received=2001:db8::5 , SIP/2.0/UDP b.example.com;rport"
    );
    // IPv6 sent-by equal to the source still gets received because rport was asked for.
    let msg = invite("SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bKd", "", "");
    assert_eq!(
        sip::apply_rport(&msg, addr("[2001:db8::5]:5060")).unwrap(),
        msg
    );
}

#[test]
fn rport_refuses_responses() {
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1;rport\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(
        sip::apply_rport(resp, addr("192.0.2.1:1")),
        Err(SipError::NotARequest)
    ));
    let m = SipMessage::parse(resp).unwrap();
    assert_eq!(
        (m.status(), m.to_tag(), m.from_tag()),
        (Some(200), Some("2"), Some("1"))
    );
}

#[test]
fn content_length_counts_bytes_of_multibyte_utf8() {
    let msg = invite("SIP/2.0/UDP h;branch=z9hG4bKe", "", SDP);
    let out = sip::rewrite_body(&msg, |sdp| {
        Ok::<_, Infallible>(format!("{sdp}s=Zürich ☎ 😀\r\n"))
    })
    .unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body.len(), SDP.len() + "s=Zürich ☎ 😀\r\n".len());
    assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert_ne!(
        body.len(),
        body.chars().count(),
        "the test needs multi-byte characters"
    );
    assert_eq!(
        SipMessage::parse_framed(&out, Framing::Stream)
            .unwrap()
            .sdp()
            .unwrap(),
        body
    );
}

#[test]
fn compact_forms_and_folding() {
    let msg = b"INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1\r\n  ;branch=z9hG4bKf\r\n\
f: Alice <sip:alice@example.com>\r\n ;tag=from1\r\n\
T : <sip:bob@example.com> ; tag = to1\r\n\
i: compact@example.com\r\n\
CSeq  :  7\r\n\tINVITE\r\n\
m: <sip:alice@192.0.2.1>\r\n\
c: application/sdp\r\n\
l: 999\r\n\
\r\n";
    let mut msg = msg.to_vec();
    let cl = msg.windows(3).position(|w| w == b"999").unwrap();
    msg.splice(cl..cl + 3, SDP.len().to_string().bytes());
    msg.extend_from_slice(SDP.as_bytes());
    let m = SipMessage::parse(&msg).unwrap();
    assert_eq!(m.call_id(), "compact@example.com");
    assert_eq!(m.from_tag(), Some("from1"));
    assert_eq!(m.to_tag(), Some("to1"));
    assert_eq!(m.cseq(), (7, "INVITE"));
    assert_eq!(m.via_branch(), Some("z9hG4bKf"));
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.sdp().unwrap(), SDP);

    let out = sip::rewrite_body(&msg, set_c).unwrap();
    let new_sdp = set_c(SDP).unwrap();
    let expected_head = String::from_utf8_lossy(&msg[..msg.len() - SDP.len()]).replace(
        &format!("l: {}\r\n", SDP.len()),
        &format!("l: {}\r\n", new_sdp.len()),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{expected_head}{new_sdp}")
    );
}

#[test]
fn missing_content_length_datagram_vs_stream() {
    let msg = invite("SIP/2.0/UDP h;branch=z9hG4bKg", "", SDP);
    let s = String::from_utf8(msg).unwrap();
    let no_cl = s.replace(&format!("Content-Length: {}\r\n", SDP.len()), "");
    // Datagram: body runs to the end; the output gains a Content-Length before the blank line.
    let out = String::from_utf8(sip::rewrite_body(no_cl.as_bytes(), set_c).unwrap()).unwrap();
    let new_sdp = set_c(SDP).unwrap();
    assert!(out.ends_with(&format!(
        "Content-Length: {}\r\n\r\n{new_sdp}",
        new_sdp.len()
    )));
    assert!(matches!(
        SipMessage::parse_framed(no_cl.as_bytes(), Framing::Stream),
        Err(SipError::MissingHeader("Content-Length"))
    ));
}

#[test]
fn trailing_bytes_dropped_on_datagram_refused_on_stream() {
    let mut msg = invite("SIP/2.0/UDP h;branch=z9hG4bKh", "", SDP);
    let clean = sip::rewrite_body(&msg, set_c).unwrap();
    msg.extend_from_slice(b"garbage after the body");
    assert_eq!(sip::rewrite_body(&msg, set_c).unwrap(), clean);
    assert!(matches!(
        sip::rewrite_body_framed(&msg, Framing::Stream, set_c),
        Err(SipError::TrailingData(22))
    ));
    assert_eq!(SipMessage::parse(&msg).unwrap().body(), SDP.as_bytes());
}

#[test]
fn lf_only_line_endings_are_kept() {
    let msg = String::from_utf8(invite("SIP/2.0/UDP h;branch=z9hG4bKi", "", SDP)).unwrap();
    let lf = msg.replace("\r\n", "\n");
    let lf = lf.replace(
        &format!("Content-Length: {}", SDP.len()),
        &format!("Content-Length: {}", SDP.len() - 6),
    );
    let out = String::from_utf8(
        sip::rewrite_body(lf.as_bytes(), |s| {
            Ok::<_, Infallible>(s.replace("192.0.2.1", "192.0.2.99"))
        })
        .unwrap(),
    )
    .unwrap();
    assert!(!out.contains('\r'));
    assert!(out.contains("c=IN IP4 192.0.2.99\n"));
}

#[test]
fn rewrite_error_and_non_sdp_bodies() {
    let msg = invite("SIP/2.0/UDP h;branch=z9hG4bKj", "", SDP);
    let err = sip::rewrite_body(&msg, |_| Err::<String, _>("no ports left")).unwrap_err();
    assert!(matches!(err, SipError::Rewrite(_)));
    assert!(err.to_string().contains("no ports left"));

    let text = String::from_utf8(msg)
        .unwrap()
        .replace("application/sdp", "text/plain");
    assert!(matches!(
        sip::rewrite_body(text.as_bytes(), set_c),
        Err(SipError::UnsupportedBody(_))
    ));
    let gz = invite(
        "SIP/2.0/UDP h;branch=z9hG4bKj",
        "Content-Encoding: gzip\r\n",
        SDP,
    );
    assert!(matches!(
        sip::rewrite_body(&gz, set_c),
        Err(SipError::UnsupportedBody(_))
    ));
}

#[test]
fn multipart_sdp_part_is_rewritten_in_place() {
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x02\x7f\r\n--b1--\r\n"
    );
    let multipart = |body: &str| {
        String::from_utf8(invite("SIP/2.0/UDP h;branch=z9hG4bKk", "", body))
            .unwrap()
            .replace(
                "Content-Type: application/sdp\r\nContent-Length",
                "Content-Type: multipart/mixed;boundary=b1\r\nContent-Length",
            )
    };
    let msg = multipart(&body);
    let out = sip::rewrite_body(msg.as_bytes(), set_c).unwrap();
    let new_body = body.replace("c=IN IP4 192.0.2.1", "c=IN IP4 203.0.113.5");
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with(&new_body), "{out}");
    assert!(out.contains(&format!("Content-Length: {}\r\n", new_body.len())));

    let two = multipart(&body.replace("application/isup;version=itu-t92+", "application/sdp"));
    assert!(matches!(
        sip::rewrite_body(two.as_bytes(), set_c),
        Err(SipError::UnsupportedBody(_))
    ));
}

#[test]
fn malformed_inputs_are_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
        b"INVITE sip:a@b SIP/2.0\r\n folded-first\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"\xff\xfe sip:a@b SIP/2.0\r\n\r\n",
    ];
    for c in cases {
        assert!(
            SipMessage::parse(c).is_err(),
            "{:?}",
            String::from_utf8_lossy(c)
        );
        assert!(sip::rewrite_body(c, set_c).is_err());
        assert!(sip::apply_rport(c, addr("192.0.2.1:1")).is_err());
    }
    // Missing From.
    let msg = String::from_utf8(invite("SIP/2.0/UDP h;branch=z9hG4bKl", "", SDP)).unwrap();
    let no_from = msg.replace("From: <sip:alice@example.com>;tag=a1\r\n", "");
    assert!(matches!(
        SipMessage::parse(no_from.as_bytes()),
        Err(SipError::MissingHeader("From"))
    ));
}
