use super::*;

const K30: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

#[test]
fn crypto_table() {
    type Case = (
        &'static str,
        Result<(u32, &'static str, usize), CryptoError>,
    );
    let cases: Vec<Case> = vec![
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
            Ok((1, "AES_CM_128_HMAC_SHA1_80", 30)),
        ),
        (
            "2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            Ok((2, "AES_CM_128_HMAC_SHA1_32", 30)),
        ),
        (
            "3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==",
            Ok((3, "AEAD_AES_128_GCM", 28)),
        ),
        // An unknown suite is kept (passthrough), its key unchecked.
        (
            "4 F8_128_HMAC_SHA1_80 inline:AAAA",
            Ok((4, "F8_128_HMAC_SHA1_80", 3)),
        ),
        ("", Err(CryptoError::Crypto("empty"))),
        (
            "x AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            Err(CryptoError::Crypto("tag must be 1 to 9 digits")),
        ),
        (
            "1234567890 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            Err(CryptoError::Crypto("tag must be 1 to 9 digits")),
        ),
        ("1", Err(CryptoError::Crypto("no crypto suite"))),
        (
            "1 AES_CM_128_HMAC_SHA1_80",
            Err(CryptoError::Crypto("no key parameters")),
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 uri:x",
            Err(CryptoError::Crypto("key method must be inline:")),
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
            Err(CryptoError::Crypto("key is not base64")),
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",
            Err(CryptoError::KeyLength {
                suite: "AES_CM_128_HMAC_SHA1_80",
                got: 3,
                want: 30,
            }),
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^99",
            Err(CryptoError::Crypto("bad key lifetime")),
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1:0",
            Err(CryptoError::Crypto("bad MKI length")),
        ),
    ];
    for (input, want) in cases {
        let got = CryptoAttr::parse(input).map(|c| {
            (
                c.tag,
                c.suite_name.as_str().to_owned(),
                c.keys[0].key_salt.len(),
            )
        });
        let want = want.map(|(t, s, l)| (t, s.to_owned(), l));
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn crypto_round_trips_and_flags_what_it_cannot_terminate() {
    for v in [
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K30}|2^20|1:4"),
        format!("7 AES_CM_128_HMAC_SHA1_32 inline:{K30} UNENCRYPTED_SRTCP"),
        format!("9 AES_CM_128_HMAC_SHA1_80 inline:{K30}|1048576"),
    ] {
        let c = CryptoAttr::parse(&v).unwrap();
        assert_eq!(c.to_string(), v);
    }
    let plain = CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K30}")).unwrap();
    assert!(!plain.unsupported_params());
    assert_eq!(plain.suite(), Some(SrtpSuite::AesCm128HmacSha1_80));
    let mki = CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K30}|1:4")).unwrap();
    assert!(mki.unsupported_params());
    let enc = CryptoAttr::parse(&format!(
        "1 AES_CM_128_HMAC_SHA1_80 inline:{K30} UNENCRYPTED_SRTP"
    ))
    .unwrap();
    assert!(enc.unsupported_params());
    let made = CryptoAttr::new(5, SrtpSuite::AeadAes128Gcm, vec![7; 28]);
    assert_eq!(CryptoAttr::parse(&made.to_string()).unwrap(), made);
}

#[test]
fn fingerprint_table() {
    let hex32 = vec!["AB"; 32].join(":");
    let ok = Fingerprint::parse(&format!("sha-256 {hex32}")).unwrap();
    assert_eq!(ok.hash, HashFunc::Sha256);
    assert_eq!(ok.to_string(), format!("sha-256 {hex32}"));
    assert_eq!(
        Fingerprint::parse(&format!("SHA-256 {}", hex32.to_lowercase())).unwrap(),
        ok
    );
    for (v, e) in [
        ("", "empty"),
        ("md5 AB:CD", "unknown hash function"),
        ("sha-256", "no value"),
        ("sha-1 AB:CD", "length does not match the hash"),
        ("sha-1 ABC:D", "bytes must be two hex digits"),
        ("sha-1 ZZ:00", "bytes must be two hex digits"),
        ("sha-1 AB x", "trailing text"),
    ] {
        assert_eq!(
            Fingerprint::parse(v),
            Err(CryptoError::Fingerprint(e)),
            "{v:?}"
        );
    }
    let der = b"not really a certificate";
    let f = Fingerprint::of_der(HashFunc::Sha256, der);
    assert!(f.matches(der));
    assert!(!f.matches(b"another"));
    assert_eq!(Fingerprint::parse(&f.to_string()).unwrap(), f);
}

#[test]
fn setup_and_roles() {
    assert_eq!("actpass".parse(), Ok(Setup::ActPass));
    assert_eq!(" Passive".parse(), Ok(Setup::Passive));
    assert_eq!(
        "server".parse::<Setup>(),
        Err(CryptoError::Setup("server".into()))
    );
    for (offer, prefer, want) in [
        (Setup::ActPass, Setup::Passive, Some(Setup::Passive)),
        (Setup::ActPass, Setup::Active, Some(Setup::Active)),
        (Setup::ActPass, Setup::ActPass, Some(Setup::Active)),
        (Setup::Active, Setup::Active, Some(Setup::Passive)),
        (Setup::Passive, Setup::Passive, Some(Setup::Active)),
        (Setup::HoldConn, Setup::Active, None),
    ] {
        assert_eq!(offer.answer_to(prefer), want);
    }
}

#[test]
fn profiles() {
    for p in Profile::ALL {
        assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
    }
    assert!("RTP/XYZ".parse::<Profile>().is_err());
    assert_eq!("udp/tls/rtp/savpf".parse(), Ok(Profile::UdpTlsRtpSavpf));
    assert!(!Profile::RtpAvpf.is_secure() && Profile::RtpAvpf.has_feedback());
    assert_eq!(Profile::UdpTlsRtpSavpf.with_keying(None), Profile::RtpAvpf);
    assert_eq!(
        Profile::RtpAvp.with_keying(Some(true)),
        Profile::UdpTlsRtpSavp
    );
    assert_eq!(
        Profile::RtpSavpf.with_keying(Some(false)),
        Profile::RtpSavpf
    );
    assert_eq!(
        SrtpSuite::from_dtls("SRTP_AEAD_AES_128_GCM"),
        Some(SrtpSuite::AeadAes128Gcm)
    );
    assert_eq!(SrtpSuite::AeadAes128Gcm.master_len(), 28);
}
