//! SDP attributes of SRTP: the m= transport profile, `a=crypto` (SDES, RFC 4568),
//! `a=fingerprint` (RFC 8122) and `a=setup` (RFC 4145, RFC 5763).
//!
//! Parsers take the attribute value (after `a=name:`) and fail with a [`CryptoError`] that names
//! what is wrong; formatting is the exact inverse for everything the relay generates.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("a=crypto: {0}")]
    Crypto(&'static str),
    #[error("a=crypto: key of {got} bytes, {suite} needs {want}")]
    KeyLength {
        suite: &'static str,
        got: usize,
        want: usize,
    },
    #[error("a=fingerprint: {0}")]
    Fingerprint(&'static str),
    #[error("a=setup: unknown role `{0}`")]
    Setup(String),
    #[error("unknown transport profile `{0}`")]
    Profile(String),
}

/// The m= line transport protocols the relay bridges between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Profile {
    RtpAvp,
    RtpAvpf,
    RtpSavp,
    RtpSavpf,
    UdpTlsRtpSavp,
    UdpTlsRtpSavpf,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::RtpAvp,
        Profile::RtpAvpf,
        Profile::RtpSavp,
        Profile::RtpSavpf,
        Profile::UdpTlsRtpSavp,
        Profile::UdpTlsRtpSavpf,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::RtpAvp => "RTP/AVP",
            Profile::RtpAvpf => "RTP/AVPF",
            Profile::RtpSavp => "RTP/SAVP",
            Profile::RtpSavpf => "RTP/SAVPF",
            Profile::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Profile::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
        }
    }

    /// SRTP (SAVP family).
    pub fn is_secure(self) -> bool {
        !matches!(self, Profile::RtpAvp | Profile::RtpAvpf)
    }

    /// RTCP feedback (RFC 4585, the `F` profiles).
    pub fn has_feedback(self) -> bool {
        matches!(
            self,
            Profile::RtpAvpf | Profile::RtpSavpf | Profile::UdpTlsRtpSavpf
        )
    }

    /// Keys come from DTLS (RFC 5764 s.8), not from SDES.
    pub fn is_dtls(self) -> bool {
        matches!(self, Profile::UdpTlsRtpSavp | Profile::UdpTlsRtpSavpf)
    }

    /// The profile with the same feedback setting and the given keying: None = plain RTP,
    /// Some(false) = SRTP keyed by SDES (RTP/SAVP), Some(true) = DTLS-SRTP (UDP/TLS/RTP/SAVP).
    pub fn with_keying(self, keying: Option<bool>) -> Profile {
        match (keying, self.has_feedback()) {
            (None, false) => Profile::RtpAvp,
            (None, true) => Profile::RtpAvpf,
            (Some(false), false) => Profile::RtpSavp,
            (Some(false), true) => Profile::RtpSavpf,
            (Some(true), false) => Profile::UdpTlsRtpSavp,
            (Some(true), true) => Profile::UdpTlsRtpSavpf,
        }
    }
}

impl FromStr for Profile {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Profile, CryptoError> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| CryptoError::Profile(s.to_owned()))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SRTP protection profiles the relay implements, by their SDES and DTLS names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// Preference order of the relay when it offers or chooses.
    pub const ALL: [SrtpSuite; 3] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
        SrtpSuite::AeadAes128Gcm,
    ];

    /// RFC 4568 s.6.2 / RFC 7714 s.14.2 name.
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// RFC 5764 s.4.1.2 / RFC 7714 s.14.2 name (OpenSSL's `use_srtp` profile name).
    pub fn dtls_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
        }
    }

    pub fn from_sdes(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL
            .into_iter()
            .find(|s| s.sdes_name().eq_ignore_ascii_case(name))
    }

    pub fn from_dtls(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL.into_iter().find(|s| s.dtls_name() == name)
    }

    pub fn key_len(self) -> usize {
        16
    }

    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Master key || master salt, as carried in `inline:`.
    pub fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }
}

/// One `inline:` key parameter (RFC 4568 s.6.1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyParam {
    /// Master key || master salt.
    pub key_salt: Vec<u8>,
    /// `2^20` or a decimal count, kept as written.
    pub lifetime: Option<String>,
    /// (MKI value, MKI length in bytes).
    pub mki: Option<(u64, u8)>,
}

/// `a=crypto:<tag> <suite> <key-params> [<session-params>]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CryptoAttr {
    pub tag: u32,
    /// As written; [`CryptoAttr::suite`] maps it to a suite the relay implements.
    pub suite_name: String,
    pub keys: Vec<KeyParam>,
    pub session_params: Vec<String>,
}

impl CryptoAttr {
    pub fn new(tag: u32, suite: SrtpSuite, key_salt: Vec<u8>) -> CryptoAttr {
        CryptoAttr {
            tag,
            suite_name: suite.sdes_name().to_owned(),
            keys: vec![KeyParam {
                key_salt,
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        }
    }

    pub fn suite(&self) -> Option<SrtpSuite> {
        SrtpSuite::from_sdes(&self.suite_name)
    }

    /// Parses the value after `a=crypto:`. Key lengths are checked for suites the relay knows;
    /// others are kept with whatever key they carry (so they can pass through).
    pub fn parse(v: &str) -> Result<CryptoAttr, CryptoError> {
        let mut it = v.split_ascii_whitespace();
        let tag = it.next().ok_or(CryptoError::Crypto("empty"))?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::Crypto("tag must be 1 to 9 digits"));
        }
        let tag = tag
            .parse()
            .map_err(|_| CryptoError::Crypto("tag must be 1 to 9 digits"))?;
        let suite_name = it
            .next()
            .ok_or(CryptoError::Crypto("no crypto suite"))?
            .to_owned();
        let params = it.next().ok_or(CryptoError::Crypto("no key parameters"))?;
        let mut keys = Vec::new();
        for p in params.split(';') {
            keys.push(parse_key_param(p)?);
        }
        let attr = CryptoAttr {
            tag,
            suite_name,
            keys,
            session_params: it.map(str::to_owned).collect(),
        };
        if let Some(s) = attr.suite() {
            for k in &attr.keys {
                if k.key_salt.len() != s.master_len() {
                    return Err(CryptoError::KeyLength {
                        suite: s.sdes_name(),
                        got: k.key_salt.len(),
                        want: s.master_len(),
                    });
                }
            }
        }
        Ok(attr)
    }

    /// Session parameters (RFC 4568 s.6.3) that the relay does not implement; an attribute
    /// with any of them cannot be terminated by the relay.
    pub fn unsupported_params(&self) -> bool {
        self.session_params.iter().any(|p| {
            let p = p.to_ascii_uppercase();
            p.starts_with("UNENCRYPTED_")
                || p.starts_with("UNAUTHENTICATED_")
                || p.starts_with("KDR=")
                || p.starts_with("FEC_")
                || p.starts_with("WSH=")
        }) || self.keys.len() != 1
            || self.keys[0].mki.is_some()
    }
}

fn parse_key_param(p: &str) -> Result<KeyParam, CryptoError> {
    let body = p
        .strip_prefix("inline:")
        .ok_or(CryptoError::Crypto("key method must be inline:"))?;
    let mut parts = body.split('|');
    let b64 = parts.next().unwrap_or("");
    let key_salt = B64
        .decode(b64)
        .map_err(|_| CryptoError::Crypto("key is not base64"))?;
    if key_salt.is_empty() {
        return Err(CryptoError::Crypto("empty key"));
    }
    let (mut lifetime, mut mki) = (None, None);
    for part in parts {
        if let Some((v, len)) = part.split_once(':') {
            if mki.is_some() {
                return Err(CryptoError::Crypto("two MKIs"));
            }
            let v: u64 = v
                .parse()
                .map_err(|_| CryptoError::Crypto("bad MKI value"))?;
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| (1..=128).contains(l))
                .ok_or(CryptoError::Crypto("bad MKI length"))?;
            mki = Some((v, len));
        } else {
            let ok = match part.strip_prefix("2^") {
                Some(e) => e.parse::<u8>().is_ok_and(|e| e <= 64),
                None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
            };
            if !ok || lifetime.is_some() || mki.is_some() {
                return Err(CryptoError::Crypto("bad key lifetime"));
            }
            lifetime = Some(part.to_owned());
        }
    }
    Ok(KeyParam {
        key_salt,
        lifetime,
        mki,
    })
}

impl fmt::Display for CryptoAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite_name)?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "inline:{}", B64.encode(&k.key_salt))?;
            if let Some(l) = &k.lifetime {
                write!(f, "|{l}")?;
            }
            if let Some((v, len)) = k.mki {
                write!(f, "|{v}:{len}")?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// Hash functions of `a=fingerprint` (RFC 8122 s.5, the ones in use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum HashFunc {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashFunc {
    pub fn as_str(self) -> &'static str {
        match self {
            HashFunc::Sha1 => "sha-1",
            HashFunc::Sha224 => "sha-224",
            HashFunc::Sha256 => "sha-256",
            HashFunc::Sha384 => "sha-384",
            HashFunc::Sha512 => "sha-512",
        }
    }

    fn parse(s: &str) -> Option<HashFunc> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sha-1" => HashFunc::Sha1,
            "sha-224" => HashFunc::Sha224,
            "sha-256" => HashFunc::Sha256,
            "sha-384" => HashFunc::Sha384,
            "sha-512" => HashFunc::Sha512,
            _ => return None,
        })
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashFunc::Sha1 => Sha1::digest(data).to_vec(),
            HashFunc::Sha224 => Sha224::digest(data).to_vec(),
            HashFunc::Sha256 => Sha256::digest(data).to_vec(),
            HashFunc::Sha384 => Sha384::digest(data).to_vec(),
            HashFunc::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn len(self) -> usize {
        match self {
            HashFunc::Sha1 => 20,
            HashFunc::Sha224 => 28,
            HashFunc::Sha256 => 32,
            HashFunc::Sha384 => 48,
            HashFunc::Sha512 => 64,
        }
    }
}

/// `a=fingerprint:<hash-func> <XX:XX:...>` (RFC 8122 s.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub hash: HashFunc,
    pub bytes: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(hash: HashFunc, der: &[u8]) -> Fingerprint {
        Fingerprint {
            hash,
            bytes: hash.digest(der),
        }
    }

    /// Whether `der` is the certificate this fingerprint names.
    pub fn matches(&self, der: &[u8]) -> bool {
        self.hash.digest(der) == self.bytes
    }

    pub fn parse(v: &str) -> Result<Fingerprint, CryptoError> {
        let mut it = v.split_ascii_whitespace();
        let h = it
            .next()
            .ok_or(CryptoError::Fingerprint("empty"))?
            .to_owned();
        let hash = HashFunc::parse(&h).ok_or(CryptoError::Fingerprint("unknown hash function"))?;
        let hex = it.next().ok_or(CryptoError::Fingerprint("no value"))?;
        if it.next().is_some() {
            return Err(CryptoError::Fingerprint("trailing text"));
        }
        let mut bytes = Vec::with_capacity(hash.len());
        for pair in hex.split(':') {
            if pair.len() != 2 {
                return Err(CryptoError::Fingerprint("bytes must be two hex digits"));
            }
            bytes.push(
                u8::from_str_radix(pair, 16)
                    .map_err(|_| CryptoError::Fingerprint("bytes must be two hex digits"))?,
            );
        }
        if bytes.len() != hash.len() {
            return Err(CryptoError::Fingerprint("length does not match the hash"));
        }
        Ok(Fingerprint { hash, bytes })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hash.as_str())?;
        for (i, b) in self.bytes.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ":" })?;
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// `a=setup` (RFC 4145 s.4): who opens the DTLS association (RFC 5763 s.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }

    /// The role an answerer takes to a peer that signalled `self`, `prefer` when free to choose
    /// (RFC 5763 s.5: the answerer to an `actpass` offer picks; `holdconn` means none yet).
    pub fn answer_to(self, prefer: Setup) -> Option<Setup> {
        match self {
            Setup::Active => Some(Setup::Passive),
            Setup::Passive => Some(Setup::Active),
            Setup::ActPass => Some(match prefer {
                Setup::Passive => Setup::Passive,
                _ => Setup::Active,
            }),
            Setup::HoldConn => None,
        }
    }
}

impl FromStr for Setup {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Setup, CryptoError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "active" => Setup::Active,
            "passive" => Setup::Passive,
            "actpass" => Setup::ActPass,
            "holdconn" => Setup::HoldConn,
            _ => return Err(CryptoError::Setup(s.trim().to_owned())),
        })
    }
}

#[cfg(test)]
#[path = "srtp_sdp_tests.rs"]
mod tests;
