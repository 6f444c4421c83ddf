//! ICE short-term credentials (RFC 8445 s.5.3), shared by the ICE-lite agent and SDP rewriting.

use rand::Rng as _;

/// ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839 s.5.4): 6 bits per character.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// 8 chars = 48 bits (RFC 8445 requires >= 24 bits of randomness in the ufrag).
pub const UFRAG_LEN: usize = 8;
/// 24 chars = 144 bits (RFC 8445 requires >= 128 bits in the password).
pub const PWD_LEN: usize = 24;

const _: () = assert!(UFRAG_LEN * 6 >= 24 && PWD_LEN * 6 >= 128);

/// A ufrag/pwd pair, local or remote.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub ufrag: String,
    pub pwd: String,
}

impl Credentials {
    pub fn new(ufrag: impl Into<String>, pwd: impl Into<String>) -> Credentials {
        Credentials {
            ufrag: ufrag.into(),
            pwd: pwd.into(),
        }
    }

    /// Fresh local credentials from the OS-seeded CSPRNG (`rand::rng()` is a ChaCha-based CSPRNG).
    pub fn random() -> Credentials {
        Credentials {
            ufrag: random_ice_chars(UFRAG_LEN),
            pwd: random_ice_chars(PWD_LEN),
        }
    }
}

fn random_ice_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ICE_CHARS[rng.random_range(0..ICE_CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_credentials_have_required_entropy_and_alphabet() {
        let a = Credentials::random();
        let b = Credentials::random();
        assert_eq!(a.ufrag.len(), UFRAG_LEN);
        assert_eq!(a.pwd.len(), PWD_LEN);
        assert!(
            a.ufrag
                .bytes()
                .chain(a.pwd.bytes())
                .all(|c| ICE_CHARS.contains(&c))
        );
        assert_ne!(a, b);
    }
}
