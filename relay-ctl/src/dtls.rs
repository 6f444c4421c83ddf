//! A sans-IO DTLS-SRTP endpoint (RFC 5763, RFC 5764) over system OpenSSL.
//!
//! The endpoint owns no socket and no clock: datagrams go in with [`DtlsEndpoint::handle_input`],
//! records to send come out of [`DtlsEndpoint::poll_transmit`], and the caller drives
//! retransmission by calling [`DtlsEndpoint::handle_timeout`] at [`DtlsEndpoint::poll_timeout`].
//! (OpenSSL keeps the DTLS retransmission back-off itself, on its own clock; the deadline we report is
//! the one it gives, measured from the `now` passed in.)
//!
//! The relay's identity is one ECDSA P-256 certificate, generated at start-up and kept in a PEM
//! file so a restarted daemon advertises the same `a=fingerprint`. The peer's certificate is
//! accepted only if its fingerprint is the one its SDP announced: a mismatch fails the handshake.

use std::collections::VecDeque;
use std::ffi::{c_int, c_long, c_void};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef as _;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509, X509NameBuilder};
use relay_core::srtp_sdp::{Fingerprint, HashFunc, Setup, SrtpSuite};
use thiserror::Error;

/// `use_srtp` profiles offered, most preferred first (RFC 5764 s.4.1.2, RFC 7714 s.14.2).
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80:SRTP_AES128_CM_SHA1_32";
/// Keeps every flight inside one unfragmented datagram on any path a call uses.
const MTU: u32 = 1200;
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;
/// A certificate regenerated when fewer days than this remain.
const RENEW_DAYS: u32 = 30;

#[derive(Debug, Error)]
pub enum DtlsError {
    #[error("peer certificate does not match the SDP fingerprint")]
    Fingerprint,
    #[error("peer negotiated no SRTP profile (use_srtp)")]
    NoSrtpProfile,
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    #[error("DTLS record ignored (no handshake under way)")]
    Ignored,
    #[error("DTLS endpoint already failed")]
    Failed,
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("certificate file {path}: {err}")]
    Io { path: String, err: io::Error },
}

/// The relay's certificate and key, and the fingerprint it puts in `a=fingerprint`.
pub struct DtlsIdentity {
    cert: X509,
    key: PKey<Private>,
    ctx: SslContext,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DtlsIdentity({})", self.fingerprint)
    }
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (not stored).
    pub fn generate() -> Result<DtlsIdentity, DtlsError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, "xdp-relay")?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(365)?);
        b.set_not_before(&from)?;
        b.set_not_after(&until)?;
        b.sign(&key, MessageDigest::sha256())?;
        DtlsIdentity::from_parts(b.build(), key)
    }

    /// Loads the PEM file at `path` (key and certificate), or generates one and writes it there
    /// (mode 0600) when it is missing or about to expire.
    pub fn load_or_create(path: &Path) -> Result<DtlsIdentity, DtlsError> {
        let io_err = |err| DtlsError::Io {
            path: path.display().to_string(),
            err,
        };
        match fs::read(path) {
            Ok(pem) => {
                let key = PKey::private_key_from_pem(&pem)?;
                let cert = X509::from_pem(&pem)?;
                let renew = Asn1Time::days_from_now(RENEW_DAYS)?;
                if cert.not_after() > renew {
                    return DtlsIdentity::from_parts(cert, key);
                }
                // About to expire: replaced below.
                let _ = fs::remove_file(path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let id = DtlsIdentity::generate()?;
        let mut pem = id.key.private_key_to_pem_pkcs8()?;
        pem.extend(id.cert.to_pem()?);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        // Written aside, then linked into place: of daemons starting together on one path, one
        // wins and the others load its certificate, so all advertise the same fingerprint.
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&pem).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let pem = fs::read(path).map_err(io_err)?;
                return DtlsIdentity::from_parts(
                    X509::from_pem(&pem)?,
                    PKey::private_key_from_pem(&pem)?,
                );
            }
            Err(e) => return Err(io_err(e)),
        }
        Ok(id)
    }

    fn from_parts(cert: X509, key: PKey<Private>) -> Result<DtlsIdentity, DtlsError> {
        let fingerprint = Fingerprint::of_der(HashFunc::Sha256, &cert.to_der()?);
        let mut ctx = SslContext::builder(SslMethod::dtls())?;
        ctx.set_certificate(&cert)?;
        ctx.set_private_key(&key)?;
        ctx.check_private_key()?;
        ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
        ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        ctx.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")?;
        Ok(DtlsIdentity {
            cert,
            key,
            ctx: ctx.build(),
            fingerprint,
        })
    }

    /// The fingerprint under another hash function (to answer a peer that used it).
    pub fn fingerprint_with(&self, hash: HashFunc) -> Fingerprint {
        let der = self.cert.to_der().unwrap_or_default();
        Fingerprint::of_der(hash, &der)
    }
}

/// Which side of the handshake the relay takes on a leg (RFC 5763 s.5: `a=setup:active` is
/// the DTLS client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DtlsRole {
    Active,
    Passive,
}

impl DtlsRole {
    /// The relay's role from the `a=setup` it put in its own SDP.
    pub fn from_setup(s: Setup) -> Option<DtlsRole> {
        match s {
            Setup::Active => Some(DtlsRole::Active),
            Setup::Passive | Setup::ActPass => Some(DtlsRole::Passive),
            Setup::HoldConn => None,
        }
    }
}

/// The SRTP keys a handshake exported (RFC 5764 s.4.2), split by direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    /// Master key || salt the relay protects with (what it sends on this leg).
    pub local: Vec<u8>,
    /// Master key || salt the peer protects with (what the relay receives on this leg).
    pub remote: Vec<u8>,
}

impl SrtpKeys {
    /// RFC 5764 s.4.2: client_key | server_key | client_salt | server_salt.
    fn split(suite: SrtpSuite, material: &[u8], client: bool) -> SrtpKeys {
        let (k, s) = (suite.key_len(), suite.salt_len());
        let part = |key_at: usize, salt_at: usize| {
            let mut v = material[key_at..key_at + k].to_vec();
            v.extend_from_slice(&material[salt_at..salt_at + s]);
            v
        };
        let c = part(0, 2 * k);
        let sv = part(k, 2 * k + s);
        let (local, remote) = if client { (c, sv) } else { (sv, c) };
        SrtpKeys {
            suite,
            local,
            remote,
        }
    }
}

/// Datagrams in and out of OpenSSL, one record flight per element.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
        }
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn new_stream(
    ctx: &SslContext,
    role: DtlsRole,
    remote: &Fingerprint,
    mismatch: &Arc<AtomicBool>,
) -> Result<SslStream<Datagrams>, DtlsError> {
    let mut ssl = Ssl::new(ctx)?;
    ssl.set_mtu(MTU)?;
    let (flag, remote) = (mismatch.clone(), remote.clone());
    ssl.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        move |_preverified, store| {
            // Self-signed certificates are the rule (RFC 5763 s.5): only the leaf's
            // fingerprint decides, chain errors do not.
            if store.error_depth() != 0 {
                return true;
            }
            let ok = store
                .current_cert()
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| remote.matches(&der));
            if !ok {
                flag.store(true, Ordering::Relaxed);
            }
            ok
        },
    );
    match role {
        DtlsRole::Active => ssl.set_connect_state(),
        DtlsRole::Passive => ssl.set_accept_state(),
    }
    Ok(SslStream::new(ssl, Datagrams::default())?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    Handshaking,
    Connected,
    Failed,
}

/// One DTLS association on one leg.
pub struct DtlsEndpoint {
    stream: SslStream<Datagrams>,
    ctx: SslContext,
    remote: Fingerprint,
    /// A passive endpoint has answered something: failures from then on are the peer's.
    heard: bool,
    role: DtlsRole,
    state: DtlsState,
    mismatch: Arc<AtomicBool>,
    keys: Option<SrtpKeys>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DtlsEndpoint {
    /// An endpoint that will accept only a peer certificate matching `remote`. An active one
    /// has its ClientHello ready in [`DtlsEndpoint::poll_transmit`].
    pub fn new(
        identity: &DtlsIdentity,
        role: DtlsRole,
        remote: Fingerprint,
        now: Instant,
    ) -> Result<DtlsEndpoint, DtlsError> {
        let mismatch = Arc::new(AtomicBool::new(false));
        let stream = new_stream(&identity.ctx, role, &remote, &mismatch)?;
        let mut ep = DtlsEndpoint {
            stream,
            ctx: identity.ctx.clone(),
            remote,
            heard: false,
            role,
            state: DtlsState::Handshaking,
            mismatch,
            keys: None,
            deadline: None,
        };
        if role == DtlsRole::Active {
            ep.drive(now)?;
        }
        Ok(ep)
    }

    pub fn role(&self) -> DtlsRole {
        self.role
    }

    pub fn state(&self) -> DtlsState {
        self.state
    }

    pub fn keys(&self) -> Option<&SrtpKeys> {
        self.keys.as_ref()
    }

    /// One received DTLS datagram. Returns the keys once, when the handshake completes.
    /// Records that fail to decode are dropped by OpenSSL; a handshake failure (wrong
    /// fingerprint, no common SRTP profile, fatal alert) moves the endpoint to `Failed`.
    pub fn handle_input(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Option<SrtpKeys>, DtlsError> {
        if self.state == DtlsState::Failed {
            return Err(DtlsError::Failed);
        }
        self.stream.get_mut().incoming.push_back(datagram.to_vec());
        let was = self.state;
        self.drive(now)?;
        Ok(
            if was != DtlsState::Connected && self.state == DtlsState::Connected {
                self.keys.clone()
            } else {
                None
            },
        )
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().outgoing.pop_front()
    }

    /// When [`DtlsEndpoint::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Retransmits the last flight if OpenSSL's timer has run out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != DtlsState::Handshaking {
            self.deadline = None;
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            // SAFETY: a valid SSL owned by this stream; the control takes no pointer.
            unsafe {
                openssl_sys::SSL_ctrl(
                    self.stream.ssl().as_ptr(),
                    DTLS_CTRL_HANDLE_TIMEOUT,
                    0,
                    std::ptr::null_mut(),
                );
            }
            self.update_deadline(now);
        }
    }

    fn update_deadline(&mut self, now: Instant) {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one struct timeval.
        let armed = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast::<c_void>(),
            )
        } as c_long;
        self.deadline = (armed > 0 && self.state == DtlsState::Handshaking).then(|| {
            now + Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        });
    }

    fn drive(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.state == DtlsState::Connected {
            // Late records (a retransmitted Finished, an alert): let OpenSSL consume them.
            let mut buf = [0u8; 2048];
            loop {
                match self.stream.ssl_read(&mut buf) {
                    Ok(_) => continue,
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => break,
                    Err(_) => break,
                }
            }
            return Ok(());
        }
        match self.stream.do_handshake() {
            Ok(()) => {
                self.finish()?;
                self.deadline = None;
                Ok(())
            }
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                self.heard |= !self.stream.get_ref().outgoing.is_empty();
                self.update_deadline(now);
                Ok(())
            }
            Err(_)
                if self.role == DtlsRole::Passive
                    && !self.heard
                    && !self.mismatch.load(Ordering::Relaxed) =>
            {
                // Junk before any ClientHello (a stray or spoofed record) must not kill the
                // leg: start over as if nothing had arrived.
                self.stream = new_stream(&self.ctx, self.role, &self.remote, &self.mismatch)?;
                Err(DtlsError::Ignored)
            }
            Err(e) => {
                self.state = DtlsState::Failed;
                self.deadline = None;
                if self.mismatch.load(Ordering::Relaxed) {
                    Err(DtlsError::Fingerprint)
                } else {
                    Err(DtlsError::Handshake(e.to_string()))
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), DtlsError> {
        let ssl = self.stream.ssl();
        let suite = ssl
            .selected_srtp_profile()
            .and_then(|p| SrtpSuite::from_dtls(p.name()));
        let Some(suite) = suite else {
            self.state = DtlsState::Failed;
            return Err(DtlsError::NoSrtpProfile);
        };
        let mut material = vec![0u8; 2 * suite.master_len()];
        ssl.export_keying_material(&mut material, "EXTRACTOR-dtls_srtp", None)?;
        self.keys = Some(SrtpKeys::split(
            suite,
            &material,
            self.role == DtlsRole::Active,
        ));
        self.state = DtlsState::Connected;
        Ok(())
    }
}

#[cfg(test)]
#[path = "dtls_tests.rs"]
mod tests;
