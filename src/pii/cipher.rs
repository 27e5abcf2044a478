//! The ciphertext format (version 1), documented in the README:
//!
//! ```text
//! 0       1 byte   0xA1: format marker (0xA) and version (1)
//! 1       1 byte   0 = a key version, 1 = a subject key
//! 2..6    u32 BE   key id
//! 6..10   u32 BE   key version                (kind 0)
//! 6..14   u64 BE   subject key id             (kind 1)
//! then    12 bytes random nonce
//! then    the AES-256-GCM ciphertext (as long as the plaintext) and its 16-byte tag
//! ```
//!
//! The associated data is the header followed by the caller's context, so changing any
//! header byte, or decrypting in another context, fails authentication.

use super::keys::{Dek, Key, KeyRef};
use super::PiiError;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

const MARKER_V1: u8 = 0xA1;
const NONCE: usize = 12;
const TAG: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    bytes: Vec<u8>,
    key: KeyRef,
}

impl From<&KeyRef> for Header {
    fn from(r: &KeyRef) -> Header {
        let mut bytes = vec![MARKER_V1];
        match r {
            KeyRef::Version { key_id, version } => {
                bytes.push(0);
                bytes.extend_from_slice(&key_id.to_be_bytes());
                bytes.extend_from_slice(&version.to_be_bytes());
            }
            KeyRef::Subject {
                key_id,
                subject_key_id,
            } => {
                bytes.push(1);
                bytes.extend_from_slice(&key_id.to_be_bytes());
                bytes.extend_from_slice(&subject_key_id.to_be_bytes());
            }
        }
        Header {
            bytes,
            key: r.clone(),
        }
    }
}

impl Header {
    pub fn parse(c: &[u8]) -> Result<Header, PiiError> {
        if c.first() != Some(&MARKER_V1) {
            return Err(PiiError::Malformed("unknown format marker"));
        }
        let be32 = |at: usize| {
            c.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
        };
        let key = match c.get(1) {
            Some(0) => KeyRef::Version {
                key_id: be32(2).ok_or(PiiError::Malformed("truncated header"))?,
                version: be32(6).ok_or(PiiError::Malformed("truncated header"))?,
            },
            Some(1) => KeyRef::Subject {
                key_id: be32(2).ok_or(PiiError::Malformed("truncated header"))?,
                subject_key_id: c
                    .get(6..14)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or(PiiError::Malformed("truncated header"))?,
            },
            _ => return Err(PiiError::Malformed("unknown key kind")),
        };
        let header = Header::from(&key);
        if c.len() < header.bytes.len() + NONCE + TAG {
            return Err(PiiError::Malformed("shorter than header, nonce and tag"));
        }
        Ok(header)
    }

    pub fn key_ref(&self) -> KeyRef {
        self.key.clone()
    }
}

fn aad(header: &Header, context: &str) -> Vec<u8> {
    let mut aad = header.bytes.clone();
    aad.extend_from_slice(context.as_bytes());
    aad
}

pub fn seal(dek: &Dek, header: &Header, plain: &[u8], context: &str) -> Vec<u8> {
    let nonce = super::keys::random_bytes::<NONCE>();
    let sealed = match dek.cipher.encrypt(
        Nonce::from_slice(&nonce),
        Payload {
            msg: plain,
            aad: &aad(header, context),
        },
    ) {
        Ok(s) => s,
        Err(_) => crate::error::raise(PiiError::NoRandomness),
    };
    let mut out = Vec::with_capacity(header.bytes.len() + NONCE + sealed.len());
    out.extend_from_slice(&header.bytes);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

pub fn open(dek: &Dek, header: &Header, c: &[u8], context: &str) -> Result<Vec<u8>, PiiError> {
    let at = header.bytes.len();
    dek.cipher
        .decrypt(
            Nonce::from_slice(&c[at..at + NONCE]),
            Payload {
                msg: &c[at + NONCE..],
                aad: &aad(header, context),
            },
        )
        .map_err(|_| PiiError::Tampered(context.to_string()))
}

/// A key derived from `key` for one purpose (HMAC-SHA256 of the purpose label).
pub fn derive(key: &Key, purpose: &[u8]) -> Key {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac(key, purpose));
    out
}

pub fn mac(key: &Key, message: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()) {
        Ok(mut m) => {
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}
