use super::*;

/// Shuttles datagrams between two endpoints until neither has anything to send.
fn run(a: &mut DtlsEndpoint, b: &mut DtlsEndpoint, now: Instant) -> [Vec<DtlsError>; 2] {
    let mut errs = [Vec::new(), Vec::new()];
    for _ in 0..50 {
        let mut moved = false;
        while let Some(d) = a.poll_transmit() {
            moved = true;
            if let Err(e) = b.handle_input(now, &d) {
                errs[1].push(e);
            }
        }
        while let Some(d) = b.poll_transmit() {
            moved = true;
            if let Err(e) = a.handle_input(now, &d) {
                errs[0].push(e);
            }
        }
        if !moved {
            break;
        }
    }
    errs
}

#[test]
fn handshake_in_memory_derives_matching_keys() {
    let (ida, idb) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let now = Instant::now();
    let mut client =
        DtlsEndpoint::new(&ida, DtlsRole::Active, idb.fingerprint.clone(), now).unwrap();
    let mut server =
        DtlsEndpoint::new(&idb, DtlsRole::Passive, ida.fingerprint.clone(), now).unwrap();
    assert!(
        client.poll_timeout().is_some(),
        "ClientHello armed a retransmission timer"
    );
    let errs = run(&mut client, &mut server, now);
    assert!(errs.iter().all(Vec::is_empty), "{errs:?}");
    assert_eq!(client.state(), DtlsState::Connected);
    assert_eq!(server.state(), DtlsState::Connected);
    let (c, s) = (client.keys().unwrap(), server.keys().unwrap());
    assert_eq!(c.suite, SrtpSuite::AeadAes128Gcm);
    assert_eq!(c.local, s.remote);
    assert_eq!(c.remote, s.local);
    assert_ne!(c.local, c.remote);
    assert_eq!(c.local.len(), c.suite.master_len());
    assert_eq!(client.poll_timeout(), None);
    // Keys work end to end through SRTP.
    use crate::srtp::{Direction, SrtpContext};
    let mut tx = SrtpContext::new(c.suite, &c.local, Direction::Outbound).unwrap();
    let mut rx = SrtpContext::new(s.suite, &s.remote, Direction::Inbound).unwrap();
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4, 9, 9, 9];
    tx.protect_rtp(&mut p).unwrap();
    rx.unprotect_rtp(&mut p).unwrap();
    assert_eq!(&p[12..], &[9, 9, 9]);
}

#[test]
fn wrong_fingerprint_is_refused() {
    let (ida, idb, other) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let now = Instant::now();
    // The server expects `other`'s certificate; the client shows its own.
    let mut client =
        DtlsEndpoint::new(&ida, DtlsRole::Active, idb.fingerprint.clone(), now).unwrap();
    let mut server =
        DtlsEndpoint::new(&idb, DtlsRole::Passive, other.fingerprint.clone(), now).unwrap();
    let errs = run(&mut client, &mut server, now);
    assert!(
        matches!(errs[1].first(), Some(DtlsError::Fingerprint)),
        "{errs:?}"
    );
    assert_eq!(server.state(), DtlsState::Failed);
    assert!(server.keys().is_none() && client.keys().is_none());
    assert!(matches!(
        server.handle_input(now, b"x"),
        Err(DtlsError::Failed)
    ));
    // And the other way round: the client refuses the server.
    let mut client =
        DtlsEndpoint::new(&ida, DtlsRole::Active, other.fingerprint.clone(), now).unwrap();
    let mut server =
        DtlsEndpoint::new(&idb, DtlsRole::Passive, ida.fingerprint.clone(), now).unwrap();
    let errs = run(&mut client, &mut server, now);
    assert!(
        matches!(errs[0].first(), Some(DtlsError::Fingerprint)),
        "{errs:?}"
    );
    assert!(client.keys().is_none() && server.keys().is_none());
}

#[test]
fn garbage_records_change_nothing_and_lost_flights_are_retransmitted() {
    let (ida, idb) = (
        DtlsIdentity::generate().unwrap(),
        DtlsIdentity::generate().unwrap(),
    );
    let now = Instant::now();
    let mut server =
        DtlsEndpoint::new(&idb, DtlsRole::Passive, ida.fingerprint.clone(), now).unwrap();
    for junk in [
        &b""[..],
        &[22u8],
        &[23, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1],
        &[20; 300],
    ] {
        let _ = server.handle_input(now, junk);
    }
    let mut client =
        DtlsEndpoint::new(&ida, DtlsRole::Active, idb.fingerprint.clone(), now).unwrap();
    // The first ClientHello is lost; the timer brings it back.
    let hello = client.poll_transmit().unwrap();
    assert!(client.poll_transmit().is_none());
    let due = client.poll_timeout().unwrap();
    client.handle_timeout(now);
    assert!(client.poll_transmit().is_none(), "not due yet");
    std::thread::sleep(due.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
    client.handle_timeout(Instant::now());
    let again = client.poll_transmit().expect("retransmitted");
    assert_eq!(again.len(), hello.len());
    assert_eq!(
        server.state(),
        DtlsState::Handshaking,
        "junk before the ClientHello is ignored"
    );
    server.handle_input(now, &again).unwrap();
    run(&mut client, &mut server, now);
    assert_eq!(client.state(), DtlsState::Connected);
    // Junk after the handshake changes nothing either.
    for junk in [
        &b""[..],
        &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3, 1, 2, 3],
    ] {
        assert!(server.handle_input(now, junk).unwrap().is_none());
    }
    assert_eq!(server.state(), DtlsState::Connected);
}

#[test]
fn identity_persists_across_restarts() {
    let dir = std::env::temp_dir().join(format!("relay-dtls-{}", std::process::id()));
    let path = dir.join("dtls.pem");
    let a = DtlsIdentity::load_or_create(&path).unwrap();
    let b = DtlsIdentity::load_or_create(&path).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(DtlsIdentity::generate().unwrap().fingerprint, a.fingerprint);
    fs::write(&path, b"not pem").unwrap();
    assert!(
        DtlsIdentity::load_or_create(&path).is_err(),
        "a corrupt file is an error, not replaced"
    );
    fs::remove_dir_all(&dir).unwrap();
}
