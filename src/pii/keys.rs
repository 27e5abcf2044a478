//! The key hierarchy: a master key (KEK) read from a file or a command named by superuser
//! settings, and data keys (DEKs) made in the server, stored only wrapped by the KEK.
//!
//! Unwrapped keys live in this backend's memory only, in `Zeroizing` buffers (wiped when
//! dropped). Caches are cleared by relcache invalidations of the key tables, which
//! `rotate_key` and `forget_subject` send to every backend at commit: a forgotten
//! subject's key is gone from every session, not only from the table.

use super::PiiError;
use crate::error::raise;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use zeroize::Zeroizing;

pub type Key = Zeroizing<[u8; 32]>;

/// An unwrapped data key with its AES key schedule, made once per backend (the schedule
/// is wiped on drop too: aes-gcm's `zeroize` feature).
pub struct Dek {
    pub key: Key,
    pub cipher: Aes256Gcm,
}

/// First bytes of SHA-256 over the KEK: stored with each wrapped key, so a wrong master
/// key is reported as such instead of as corrupted data.
pub type Fingerprint = [u8; 8];

struct Kek {
    source: String,
    key: Key,
    fingerprint: Fingerprint,
}

/// A data key as the tables identify it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Version { key_id: u32, version: u32 },
    Subject { key_id: u32, subject_key_id: u64 },
}

#[derive(Default)]
struct Cache {
    kek: Option<Kek>,
    /// key name -> (key id, current version)
    current: HashMap<String, (u32, u32)>,
    /// key id -> current version (the same facts, for ciphertext headers)
    current_by_id: HashMap<u32, u32>,
    /// key id -> subject -> subject key id
    subjects: HashMap<u32, HashMap<String, u64>>,
    deks: HashMap<KeyRef, std::rc::Rc<Dek>>,
    blind: HashMap<u32, Key>,
    callback_registered: bool,
    watched: Vec<pg_sys::Oid>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::fill(&mut out).is_err() {
        raise(PiiError::NoRandomness);
    }
    out
}

fn parse_key_material(raw: &[u8], source: &str) -> Key {
    let text = String::from_utf8_lossy(raw);
    let hex = text.trim();
    let mut key = Zeroizing::new([0u8; 32]);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).unwrap_or("00");
            key[i] = u8::from_str_radix(pair, 16).unwrap_or(0);
        }
        return key;
    }
    if raw.len() == 32 {
        key.copy_from_slice(raw);
        return key;
    }
    raise(PiiError::BadMasterKey(source.to_string()))
}

fn setting(g: &pgrx::guc::GucSetting<Option<std::ffi::CString>>) -> Option<String> {
    g.get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

fn load_kek() -> Kek {
    let file = setting(&crate::gucs::MASTER_KEY_FILE);
    let command = setting(&crate::gucs::MASTER_KEY_COMMAND);
    match (file, command) {
        (Some(_), Some(_)) => raise(PiiError::TwoMasterKeySources),
        (None, None) => raise(PiiError::NoMasterKey),
        (file, command) => load_kek_from(file, command),
    }
}

/// The master key being replaced, from `platform.previous_master_key_file` or
/// `platform.previous_master_key_command`; `None` when neither is set.
fn previous_kek() -> Option<Kek> {
    let file = setting(&crate::gucs::PREVIOUS_MASTER_KEY_FILE);
    let command = setting(&crate::gucs::PREVIOUS_MASTER_KEY_COMMAND);
    match (file, command) {
        (None, None) => None,
        (Some(_), Some(_)) => raise(PiiError::TwoMasterKeySources),
        (file, command) => Some(load_kek_from(file, command)),
    }
}

fn load_kek_from(file: Option<String>, command: Option<String>) -> Kek {
    let (source, raw) = match (file, command) {
        (None, None) | (Some(_), Some(_)) => raise(PiiError::NoMasterKey),
        (Some(path), None) => {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => raise(PiiError::MasterKeyFile(path, e.to_string())),
            };
            let me = unsafe { libc_geteuid() };
            if meta.uid() != me {
                raise(PiiError::MasterKeyFile(
                    path,
                    "it is not owned by the database server's operating system user".into(),
                ));
            }
            if meta.mode() & 0o077 != 0 {
                raise(PiiError::MasterKeyFile(
                    path,
                    "it is readable or writable by group or others".into(),
                ));
            }
            let raw = match std::fs::read(&path) {
                Ok(r) => Zeroizing::new(r),
                Err(e) => raise(PiiError::MasterKeyFile(path, e.to_string())),
            };
            (format!("file {path}"), raw)
        }
        (None, Some(cmd)) => {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => (
                    "platform.master_key_command".to_string(),
                    Zeroizing::new(o.stdout),
                ),
                Ok(o) => raise(PiiError::MasterKeyCommand(format!(
                    "it exited with {}",
                    o.status
                ))),
                Err(e) => raise(PiiError::MasterKeyCommand(e.to_string())),
            }
        }
    };
    let key = parse_key_material(&raw, &source);
    let digest = Sha256::new_with_prefix(b"pg_platform master key fingerprint")
        .chain_update(key.as_slice())
        .finalize();
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    Kek {
        source,
        key,
        fingerprint,
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs `f` with the master key (loaded on first use, and again when the settings name
/// another source).
pub fn with_kek<R>(f: impl FnOnce(&Key, &Fingerprint) -> R) -> R {
    let wanted = format!(
        "{:?}/{:?}",
        crate::gucs::MASTER_KEY_FILE.get(),
        crate::gucs::MASTER_KEY_COMMAND.get()
    );
    let stale = CACHE.with_borrow(|c| c.kek.as_ref().is_none_or(|k| k.source != wanted));
    if stale {
        let mut kek = load_kek();
        kek.source = wanted;
        CACHE.with_borrow_mut(|c| {
            c.kek = Some(kek);
            c.deks.clear();
            c.blind.clear();
        });
    }
    CACHE.with_borrow(|c| match &c.kek {
        Some(k) => f(&k.key, &k.fingerprint),
        None => raise(PiiError::NoMasterKey),
    })
}

fn wrap_aad(r: &KeyRef) -> Vec<u8> {
    let mut aad = b"pg_platform data key ".to_vec();
    match r {
        KeyRef::Version { key_id, version } => {
            aad.extend_from_slice(&key_id.to_be_bytes());
            aad.extend_from_slice(&version.to_be_bytes());
        }
        KeyRef::Subject { key_id, .. } => {
            aad.extend_from_slice(&key_id.to_be_bytes());
            aad.extend_from_slice(b"subject");
        }
    }
    aad
}

fn wrap_with(kek: &Key, r: &KeyRef, dek: &Key) -> Vec<u8> {
    let nonce = random_bytes::<12>();
    let cipher = Aes256Gcm::new(kek.as_slice().into());
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: dek.as_slice(),
                aad: &wrap_aad(r),
            },
        )
        .unwrap_or_else(|_| raise(PiiError::NoRandomness));
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out
}

fn unwrap_with(kek: &Key, r: &KeyRef, wrapped: &[u8], name: &str) -> Key {
    if wrapped.len() != 12 + 32 + 16 {
        raise(PiiError::CorruptKey(name.to_string()));
    }
    let cipher = Aes256Gcm::new(kek.as_slice().into());
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&wrapped[..12]),
            Payload {
                msg: &wrapped[12..],
                aad: &wrap_aad(r),
            },
        )
        .unwrap_or_else(|_| raise(PiiError::CorruptKey(name.to_string())));
    let plain = Zeroizing::new(plain);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&plain);
    key
}

/// A fresh data key wrapped by the master key: (wrapped bytes, fingerprint of the KEK).
pub fn new_wrapped(r: &KeyRef) -> (Vec<u8>, Fingerprint) {
    let dek: Key = Zeroizing::new(random_bytes::<32>());
    with_kek(|kek, fp| (wrap_with(kek, r, &dek), *fp))
}

pub fn unwrap_key(r: &KeyRef, wrapped: &[u8], fingerprint: &[u8], name: &str) -> Key {
    with_kek(|kek, fp| {
        if fingerprint != fp.as_slice() {
            raise(PiiError::OtherMasterKey(name.to_string()));
        }
        unwrap_with(kek, r, wrapped, name)
    })
}

/// A data key wrapped by the previous master key (fingerprint `fingerprint`), wrapped again
/// by the current one; `None` when it already is. The data key itself does not change, so
/// no ciphertext needs re-encrypting.
pub fn rewrap(
    r: &KeyRef,
    wrapped: &[u8],
    fingerprint: &[u8],
    name: &str,
) -> Option<(Vec<u8>, Fingerprint)> {
    let current = with_kek(|_, fp| *fp);
    if fingerprint == current.as_slice() {
        return None;
    }
    let previous = previous_kek();
    let Some(previous) = previous.filter(|p| p.fingerprint.as_slice() == fingerprint) else {
        raise(PiiError::OtherMasterKey(name.to_string()))
    };
    let dek = unwrap_with(&previous.key, r, wrapped, name);
    Some(with_kek(|kek, fp| (wrap_with(kek, r, &dek), *fp)))
}

pub fn cached_dek(r: &KeyRef) -> Option<std::rc::Rc<Dek>> {
    CACHE.with_borrow(|c| c.deks.get(r).cloned())
}

pub fn remember_dek(r: KeyRef, key: Key) -> std::rc::Rc<Dek> {
    let cipher = Aes256Gcm::new(key.as_slice().into());
    let dek = std::rc::Rc::new(Dek { key, cipher });
    CACHE.with_borrow_mut(|c| {
        c.deks.insert(r, dek.clone());
    });
    dek
}

pub fn cached_current(name: &str) -> Option<(u32, u32)> {
    CACHE.with_borrow(|c| c.current.get(name).copied())
}

pub fn remember_current(name: &str, v: (u32, u32)) {
    CACHE.with_borrow_mut(|c| {
        c.current.insert(name.to_string(), v);
        c.current_by_id.insert(v.0, v.1);
    });
}

pub fn cached_current_by_id(key_id: u32) -> Option<u32> {
    CACHE.with_borrow(|c| c.current_by_id.get(&key_id).copied())
}

pub fn cached_subject(key_id: u32, subject: &str) -> Option<u64> {
    CACHE.with_borrow(|c| {
        c.subjects
            .get(&key_id)
            .and_then(|m| m.get(subject))
            .copied()
    })
}

pub fn remember_subject(key_id: u32, subject: &str, id: u64) {
    CACHE.with_borrow_mut(|c| {
        c.subjects
            .entry(key_id)
            .or_default()
            .insert(subject.to_string(), id);
    });
}

pub fn cached_blind(key_id: u32) -> Option<Key> {
    CACHE.with_borrow(|c| c.blind.get(&key_id).cloned())
}

pub fn remember_blind(key_id: u32, k: Key) {
    CACHE.with_borrow_mut(|c| {
        c.blind.insert(key_id, k);
    });
}

/// Forgets every cached key of this backend (keys, versions, subjects).
pub fn clear() {
    CACHE.with_borrow_mut(|c| {
        c.current.clear();
        c.current_by_id.clear();
        c.subjects.clear();
        c.deks.clear();
        c.blind.clear();
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // A full reset reports InvalidOid. The caches refill from the tables on next use.
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if relid == pg_sys::InvalidOid || c.watched.contains(&relid) {
                c.current.clear();
                c.current_by_id.clear();
                c.current_by_id.clear();
                c.subjects.clear();
                c.deks.clear();
                c.blind.clear();
            }
        }
    });
}

/// Registers the invalidation callback once per backend, watching the key tables.
pub fn ensure_invalidation_callback() {
    let registered = CACHE.with_borrow(|c| c.callback_registered);
    if !registered {
        let watched: Vec<pg_sys::Oid> = ["platform.pii_key_version", "platform.pii_subject_key"]
            .iter()
            .filter_map(|t| {
                crate::sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[(*t).into()])
            })
            .collect();
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(0),
            )
        };
        CACHE.with_borrow_mut(|c| {
            c.callback_registered = true;
            c.watched = watched;
        });
    }
}

/// Tells every backend (at commit) that a key table changed: their caches drop it.
pub fn invalidate_everywhere(table: &str) {
    if let Some(oid) =
        crate::sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[table.into()])
    {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(oid) };
    }
    clear();
}
