//! Sealing secrets at rest: ChaCha20-Poly1305 under a 32-byte key that lives in a file of the
//! data directory (`auth.key`), never in the store.
//!
//! SigV4 needs each access key's secret on the server, and the certificate authority needs
//! its private key; both are stored sealed, so a copied database alone leaks neither. The
//! additional authenticated data binds a sealed value to what it is (for example
//! `access-key/MPAK…`), so a sealed secret moved onto another record does not open.
//!
//! Format of a sealed value: `mps1.` + base64url(nonce ‖ ciphertext ‖ tag), no padding.
//! Nonces are 96 random bits from the system CSPRNG; a key seals far fewer than 2^32 values.

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const PREFIX: &str = "mps1.";
/// Length of a seal key in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// A key that seals and opens secrets. Its bytes never appear in `Debug` output.
pub struct SealKey {
    key: LessSafeKey,
    /// SHA-256 of the key bytes, first 8 bytes in hex: names the key without revealing it,
    /// so a store can record which key sealed it and a wrong key file is reported as such.
    fingerprint: String,
    /// HMAC-SHA256(key bytes, "meshplane node token v1"): the node token key, derived once
    /// here so the raw key bytes need not be kept.
    token_key: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open under this key (wrong key file, or the value was altered)")]
    WrongKeyOrTampered,
    #[error("the system random number generator failed")]
    Random,
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> Result<([u8; KEY_LEN], SealKey), SealError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        let key = SealKey::from_bytes(&bytes);
        Ok((bytes, key))
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SealKey {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("32 bytes is the ChaCha20-Poly1305 key length"));
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        SealKey {
            key: LessSafeKey::new(unbound),
            fingerprint: crate::sigv4::hex_lower(&digest.as_ref()[..8]),
            token_key: crate::sigv4::crypto::hmac_sha256(bytes, crate::token::KEY_LABEL),
        }
    }

    /// 16 hex digits naming this key (a prefix of the SHA-256 of its bytes).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key node tokens are signed with (`k_tok` of [`crate::token`]): a separate key
    /// derived from this one, so a token MAC never uses the sealing key itself.
    pub fn token_key(&self) -> crate::token::TokenKey {
        crate::token::TokenKey::from_bytes(self.token_key)
    }

    /// Seals `plaintext`, bound to `context` (which must be given again to open it).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", base64url_encode(&out)))
    }

    /// Opens a value sealed under this key with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let raw = base64url_decode(body).ok_or(SealError::Malformed)?;
        if raw.len() < NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::WrongKeyOrTampered)?;
        Ok(plain.to_vec())
    }
}

/// Fills `out` from the system CSPRNG (access key ids and secrets, token ids).
pub fn random_bytes(out: &mut [u8]) -> Result<(), SealError> {
    SystemRandom::new().fill(out).map_err(|_| SealError::Random)
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 §5).
pub fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(B64URL[idx as usize]));
        }
    }
    out
}

/// Decodes base64url without padding; `None` on any other character or an impossible length.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 1 leftover char (6 bits) is impossible; leftover bits must be zero (canonical form).
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_the_same_context_only() {
        let (_, key) = SealKey::generate().unwrap();
        let sealed = key.seal("access-key/A", b"secret").unwrap();
        assert!(sealed.starts_with("mps1."));
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open("access-key/A", &sealed).unwrap(), b"secret");
        assert_eq!(
            key.open("access-key/B", &sealed),
            Err(SealError::WrongKeyOrTampered)
        );
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, key.seal("access-key/A", b"secret").unwrap());
    }

    #[test]
    fn another_key_or_a_flipped_byte_does_not_open() {
        let (_, a) = SealKey::generate().unwrap();
        let (_, b) = SealKey::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let sealed = a.seal("ca", b"private key").unwrap();
        assert_eq!(b.open("ca", &sealed), Err(SealError::WrongKeyOrTampered));
        let mut raw = base64url_decode(&sealed[5..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("mps1.{}", base64url_encode(&raw));
        assert_eq!(a.open("ca", &tampered), Err(SealError::WrongKeyOrTampered));
        assert_eq!(a.open("ca", "mps1.!!"), Err(SealError::Malformed));
        assert_eq!(a.open("ca", "nope"), Err(SealError::Malformed));
        assert_eq!(a.open("ca", "mps1.AAAA"), Err(SealError::Malformed));
    }

    #[test]
    fn the_same_bytes_give_the_same_key() {
        let (bytes, a) = SealKey::generate().unwrap();
        let b = SealKey::from_bytes(&bytes);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let sealed = a.seal("x", b"y").unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"y");
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..70usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url_encode(&data);
            assert!(!text.contains('='));
            assert_eq!(base64url_decode(&text).unwrap(), data, "len {len}");
        }
        assert_eq!(base64url_encode(b"\xfb\xff"), "-_8");
        assert!(base64url_decode("A").is_none());
        assert!(base64url_decode("AB").is_none(), "non-zero leftover bits");
        assert!(base64url_decode("AA").is_some());
    }
}
