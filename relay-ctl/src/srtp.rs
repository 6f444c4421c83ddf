//! SRTP and SRTCP (RFC 3711, RFC 7714) through libsrtp2, the reference implementation (Debian
//! `libsrtp2-dev`), behind a thin FFI of the seven calls the relay needs.
//!
//! One [`SrtpContext`] protects or unprotects one direction of one leg (any SSRC): libsrtp keeps
//! the rollover counter and the replay window per SSRC. A packet that fails authentication or
//! replays an index already seen is refused with [`SrtpError::Auth`] / [`SrtpError::Replay`] and
//! the caller drops and counts it; a short packet is refused before libsrtp sees it.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::ptr;
use std::sync::OnceLock;

use relay_core::srtp_sdp::SrtpSuite;
use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    #[error("SRTP authentication failed")]
    Auth,
    #[error("SRTP replay (index already seen or too old)")]
    Replay,
    #[error("packet too short for {0}")]
    Short(&'static str),
    #[error("not an RTP/RTCP packet (version is not 2)")]
    Version,
    #[error("master key and salt must be {want} bytes for this suite, got {got}")]
    KeyLength { want: usize, got: usize },
    #[error("libsrtp2 error {0}")]
    Lib(i32),
}

/// Which way a context works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Protects what the relay sends.
    Outbound,
    /// Unprotects what the relay receives.
    Inbound,
}

// --- libsrtp2 2.5 ABI (srtp2/srtp.h) ---------------------------------------------------------

#[repr(C)]
#[derive(Default)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

#[repr(C)]
struct Ssrc {
    typ: c_int,
    value: c_uint,
}

#[repr(C)]
struct Policy {
    ssrc: Ssrc,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *mut u8,
    keys: *mut c_void,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

type Session = *mut c_void;

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;
const ERR_AUTH_FAIL: c_int = 7;
const ERR_REPLAY_FAIL: c_int = 9;
const ERR_REPLAY_OLD: c_int = 10;
/// SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN: what protect may append.
const MAX_TRAILER: usize = 16 + 128;
/// Replay window in packets (RFC 3711 s.3.3.2 asks for at least 64).
const REPLAY_WINDOW: c_ulong = 1024;

#[link(name = "srtp2")]
unsafe extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut Session, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: Session) -> c_int;
    fn srtp_protect(ctx: Session, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: Session, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_rtcp(ctx: Session, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect_rtcp(ctx: Session, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_crypto_policy_set_from_profile_for_rtp(p: *mut CryptoPolicy, profile: c_int) -> c_int;
    fn srtp_crypto_policy_set_from_profile_for_rtcp(p: *mut CryptoPolicy, profile: c_int) -> c_int;
}

fn profile(suite: SrtpSuite) -> c_int {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => 1,
        SrtpSuite::AesCm128HmacSha1_32 => 2,
        SrtpSuite::AeadAes128Gcm => 7,
    }
}

fn init() -> Result<(), SrtpError> {
    static STATUS: OnceLock<c_int> = OnceLock::new();
    // SAFETY: srtp_init runs once, before any other libsrtp call (OnceLock serialises callers).
    match *STATUS.get_or_init(|| unsafe { srtp_init() }) {
        0 => Ok(()),
        e => Err(SrtpError::Lib(e)),
    }
}

/// One libsrtp session for one direction.
pub struct SrtpContext {
    session: Session,
    suite: SrtpSuite,
    direction: Direction,
}

// SAFETY: a libsrtp session has no thread affinity; `&mut self` on every call serialises access.
unsafe impl Send for SrtpContext {}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// `key_salt` is the master key followed by the master salt (the SDES `inline:` value, or
    /// one side's key and salt as exported by DTLS-SRTP).
    pub fn new(
        suite: SrtpSuite,
        key_salt: &[u8],
        direction: Direction,
    ) -> Result<SrtpContext, SrtpError> {
        if key_salt.len() != suite.master_len() {
            return Err(SrtpError::KeyLength {
                want: suite.master_len(),
                got: key_salt.len(),
            });
        }
        init()?;
        // libsrtp copies the key during srtp_create; the buffer only has to outlive the call.
        let mut key = key_salt.to_vec();
        let mut policy = Policy {
            ssrc: Ssrc {
                typ: match direction {
                    Direction::Outbound => SSRC_ANY_OUTBOUND,
                    Direction::Inbound => SSRC_ANY_INBOUND,
                },
                value: 0,
            },
            rtp: CryptoPolicy::default(),
            rtcp: CryptoPolicy::default(),
            key: key.as_mut_ptr(),
            keys: ptr::null_mut(),
            num_master_keys: 0,
            deprecated_ekt: ptr::null_mut(),
            window_size: REPLAY_WINDOW,
            allow_repeat_tx: 0,
            enc_xtn_hdr: ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: ptr::null_mut(),
        };
        let mut session: Session = ptr::null_mut();
        // SAFETY: the policy is fully initialised and points at live memory for the calls.
        unsafe {
            check(srtp_crypto_policy_set_from_profile_for_rtp(
                &mut policy.rtp,
                profile(suite),
            ))?;
            check(srtp_crypto_policy_set_from_profile_for_rtcp(
                &mut policy.rtcp,
                profile(suite),
            ))?;
            check(srtp_create(&mut session, &policy))?;
        }
        Ok(SrtpContext {
            session,
            suite,
            direction,
        })
    }

    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// RTP -> SRTP in place.
    pub fn protect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        rtp_header_len(pkt)?;
        self.run(pkt, true, srtp_protect)
    }

    /// SRTP -> RTP in place; on error `pkt` is unchanged in length and must be dropped.
    pub fn unprotect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hdr = rtp_header_len(pkt)?;
        if pkt.len() < hdr + self.tag_len() {
            return Err(SrtpError::Short("SRTP"));
        }
        self.run(pkt, false, srtp_unprotect)
    }

    /// RTCP -> SRTCP in place.
    pub fn protect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        rtcp_check(pkt, 8)?;
        self.run(pkt, true, srtp_protect_rtcp)
    }

    /// SRTCP -> RTCP in place.
    pub fn unprotect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        rtcp_check(pkt, 8 + 4 + self.tag_len())?;
        self.run(pkt, false, srtp_unprotect_rtcp)
    }

    fn tag_len(&self) -> usize {
        match self.suite {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => 16,
        }
    }

    fn run(
        &mut self,
        pkt: &mut Vec<u8>,
        grow: bool,
        f: unsafe extern "C" fn(Session, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<(), SrtpError> {
        let want = matches!(
            (grow, self.direction),
            (true, Direction::Outbound) | (false, Direction::Inbound)
        );
        if !want {
            return Err(SrtpError::Lib(-1));
        }
        let n = pkt.len();
        let mut len = c_int::try_from(n).map_err(|_| SrtpError::Short("length"))?;
        if grow {
            pkt.resize(n + MAX_TRAILER, 0);
        }
        // SAFETY: `pkt` holds `len` bytes plus, when protecting, MAX_TRAILER writable bytes,
        // which is all libsrtp writes; the session is live until drop.
        let rc = unsafe { f(self.session, pkt.as_mut_ptr().cast(), &mut len) };
        if rc != 0 {
            pkt.truncate(n);
            return Err(match rc {
                ERR_AUTH_FAIL => SrtpError::Auth,
                ERR_REPLAY_FAIL | ERR_REPLAY_OLD => SrtpError::Replay,
                e => SrtpError::Lib(e),
            });
        }
        pkt.truncate(usize::try_from(len).unwrap_or(0));
        Ok(())
    }
}

impl Drop for SrtpContext {
    fn drop(&mut self) {
        // SAFETY: created by srtp_create and freed once.
        unsafe {
            srtp_dealloc(self.session);
        }
    }
}

fn check(rc: c_int) -> Result<(), SrtpError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SrtpError::Lib(rc))
    }
}

/// Fixed header + CSRCs + extension; errors on a packet too short to hold them.
fn rtp_header_len(p: &[u8]) -> Result<usize, SrtpError> {
    if p.len() < 12 {
        return Err(SrtpError::Short("RTP header"));
    }
    if p[0] >> 6 != 2 {
        return Err(SrtpError::Version);
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p
            .get(n + 2..n + 4)
            .ok_or(SrtpError::Short("RTP extension"))?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if p.len() < n {
        return Err(SrtpError::Short("RTP header"));
    }
    Ok(n)
}

fn rtcp_check(p: &[u8], min: usize) -> Result<(), SrtpError> {
    if p.len() < min {
        return Err(SrtpError::Short("RTCP"));
    }
    if p[0] >> 6 != 2 {
        return Err(SrtpError::Version);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // libsrtp's srtp_validate() reference packets (default policy AES_CM_128_HMAC_SHA1_80,
    // SSRC 0xcafebabe, SEQ 0x1234, ROC 0); the key/salt of RFC 3711 appendix B.
    const KEY: [u8; 30] = [
        0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41,
        0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
    ];
    const RTP: [u8; 28] = [
        0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];
    const SRTP: [u8; 38] = [
        0x80, 0x0f, 0x12, 0x34, 0xde, 0xca, 0xfb, 0xad, 0xca, 0xfe, 0xba, 0xbe, 0x4e, 0x55, 0xdc,
        0x4c, 0xe7, 0x99, 0x78, 0xd8, 0x8c, 0xa4, 0xd2, 0x15, 0x94, 0x9d, 0x24, 0x02, 0xb7, 0x8d,
        0x6a, 0xcc, 0x99, 0xea, 0x17, 0x9b, 0x8d, 0xbb,
    ];
    const RTCP: [u8; 24] = [
        0x81, 0xc8, 0x00, 0x0b, 0xca, 0xfe, 0xba, 0xbe, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];
    const SRTCP: [u8; 38] = [
        0x81, 0xc8, 0x00, 0x0b, 0xca, 0xfe, 0xba, 0xbe, 0x71, 0x28, 0x03, 0x5b, 0xe4, 0x87, 0xb9,
        0xbd, 0xbe, 0xf8, 0x90, 0x41, 0xf9, 0x77, 0xa5, 0xa8, 0x80, 0x00, 0x00, 0x01, 0x99, 0x3e,
        0x08, 0xcd, 0x54, 0xd6, 0xc1, 0x23, 0x07, 0x98,
    ];
    const S80: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

    fn pair(suite: SrtpSuite, key: &[u8]) -> (SrtpContext, SrtpContext) {
        (
            SrtpContext::new(suite, key, Direction::Outbound).unwrap(),
            SrtpContext::new(suite, key, Direction::Inbound).unwrap(),
        )
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 160, 0x11, 0x22, 0x33, 0x44]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn reference_vectors_rtp_and_rtcp() {
        let (mut tx, mut rx) = pair(S80, &KEY);
        let mut p = RTP.to_vec();
        tx.protect_rtp(&mut p).unwrap();
        assert_eq!(p, SRTP);
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, RTP);
        let mut c = RTCP.to_vec();
        tx.protect_rtcp(&mut c).unwrap();
        assert_eq!(c, SRTCP);
        rx.unprotect_rtcp(&mut c).unwrap();
        assert_eq!(c, RTCP);
    }

    #[test]
    fn round_trip_every_suite() {
        for suite in SrtpSuite::ALL {
            let key: Vec<u8> = (0..suite.master_len() as u8).collect();
            let (mut tx, mut rx) = pair(suite, &key);
            for seq in 0..50u16 {
                let plain = rtp(seq, &[seq as u8; 160]);
                let mut p = plain.clone();
                tx.protect_rtp(&mut p).unwrap();
                assert_ne!(p[12..172], plain[12..], "{suite:?} encrypts");
                rx.unprotect_rtp(&mut p).unwrap();
                assert_eq!(p, plain);
            }
            let mut c = RTCP.to_vec();
            tx.protect_rtcp(&mut c).unwrap();
            rx.unprotect_rtcp(&mut c).unwrap();
            assert_eq!(c, RTCP);
        }
    }

    #[test]
    fn tamper_replay_wrong_key_and_short_are_refused() {
        for suite in SrtpSuite::ALL {
            let key: Vec<u8> = (0..suite.master_len() as u8).collect();
            let (mut tx, mut rx) = pair(suite, &key);
            let mut first = rtp(1, &[1; 40]);
            tx.protect_rtp(&mut first).unwrap();
            let mut ok = first.clone();
            rx.unprotect_rtp(&mut ok).unwrap();
            // Replay of an index already accepted.
            let mut again = first.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut again),
                Err(SrtpError::Replay),
                "{suite:?}"
            );
            assert_eq!(again, first, "a refused packet is left as it was");
            // One flipped bit in the payload or the tag.
            for at in [20, first.len() - 1] {
                let mut p = rtp(2 + at as u16, &[1; 40]);
                tx.protect_rtp(&mut p).unwrap();
                p[at] ^= 0x01;
                assert_eq!(
                    rx.unprotect_rtp(&mut p),
                    Err(SrtpError::Auth),
                    "{suite:?} @{at}"
                );
            }
            // Another key.
            let (_, mut other) = pair(suite, &vec![9; suite.master_len()]);
            let mut p = rtp(100, &[1; 40]);
            tx.protect_rtp(&mut p).unwrap();
            assert_eq!(other.unprotect_rtp(&mut p), Err(SrtpError::Auth));
            // SRTCP tamper and replay.
            let mut c = RTCP.to_vec();
            tx.protect_rtcp(&mut c).unwrap();
            let mut bad = c.clone();
            bad[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&mut bad), Err(SrtpError::Auth));
            let mut good = c.clone();
            rx.unprotect_rtcp(&mut good).unwrap();
            assert_eq!(rx.unprotect_rtcp(&mut c), Err(SrtpError::Replay));
        }
        let (mut tx, mut rx) = pair(S80, &KEY);
        for short in [vec![], vec![0x80; 5], vec![0x80; 11], vec![0x80; 12]] {
            let mut p = short.clone();
            assert!(rx.unprotect_rtp(&mut p).is_err());
            assert!(rx.unprotect_rtcp(&mut p).is_err());
            assert_eq!(p, short);
        }
        let mut ext_short = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 9];
        assert_eq!(
            tx.protect_rtp(&mut ext_short),
            Err(SrtpError::Short("RTP header"))
        );
        assert_eq!(tx.protect_rtp(&mut vec![0x40; 20]), Err(SrtpError::Version));
        assert!(matches!(
            SrtpContext::new(S80, &[0; 16], Direction::Inbound),
            Err(SrtpError::KeyLength { want: 30, got: 16 })
        ));
        // A context is one-way.
        assert!(rx.protect_rtp(&mut rtp(1, &[0; 4])).is_err());
    }
}
