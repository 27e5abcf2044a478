//! Column-level PII encryption: AES-256-GCM with envelope keys, rotation, blind indexes
//! for equality search, and per-subject keys whose destruction erases a person's data
//! wherever its ciphertext went (crypto-shredding).
//!
//! No function takes a key or a passphrase: the master key comes from a file or a command
//! named by superuser settings, data keys are made in the server and stored wrapped.

mod access;
mod cipher;
mod keys;
mod lookup;
mod mask;
mod protect;
#[cfg(test)]
mod protect_tests;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::{raise, OrRaise, SqlError};
use crate::sql::{self, ServerText};
use cipher::Header;
use keys::{Dek, KeyRef};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::rc::Rc;

#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("no master key is configured for pg_platform's PII encryption")]
    NoMasterKey,
    #[error("both platform.master_key_file and platform.master_key_command are set")]
    TwoMasterKeySources,
    #[error("master key file \"{0}\" cannot be used: {1}")]
    MasterKeyFile(String, String),
    #[error("platform.master_key_command failed: {0}")]
    MasterKeyCommand(String),
    #[error("the master key from {0} is not 32 bytes written as 64 hexadecimal digits")]
    BadMasterKey(String),
    #[error("data key \"{0}\" was wrapped by another master key than the one configured")]
    OtherMasterKey(String),
    #[error("wrapped data key \"{0}\" is corrupted")]
    CorruptKey(String),
    #[error("the operating system gave no random bytes")]
    NoRandomness,
    #[error("invalid key name \"{0}\": use 1 to 63 characters")]
    InvalidName(String),
    #[error("key \"{0}\" already exists")]
    KeyExists(String),
    #[error("key \"{0}\" does not exist")]
    NoSuchKey(String),
    #[error("the ciphertext refers to key id {0} version {1}, which does not exist")]
    UnknownKeyVersion(u32, u32),
    #[error("the ciphertext refers to subject key {0} of key id {1}, which does not exist")]
    UnknownSubjectKey(u64, u32),
    #[error("not a pg_platform ciphertext: {0}")]
    Malformed(&'static str),
    #[error("ciphertext failed authentication: it was altered, or it was encrypted for another context than '{0}'")]
    Tampered(String),
    #[error("the data subject of this value was forgotten (key \"{0}\", subject key {1})")]
    Forgotten(String, u64),
    #[error("subject \"{1}\" of key \"{0}\" was forgotten; nothing can be encrypted for it again")]
    SubjectForgotten(String, String),
    #[error("unknown mask \"{0}\": use email, name, phone, card, redact, or a function taking and returning text")]
    UnknownMask(String),
}

impl SqlError for PiiError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::NoMasterKey => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::TwoMasterKeySources
            | Self::MasterKeyFile(..)
            | Self::MasterKeyCommand(_)
            | Self::BadMasterKey(_)
            | Self::OtherMasterKey(_) => ERRCODE_CONFIG_FILE_ERROR,
            Self::CorruptKey(_) | Self::Tampered(_) => ERRCODE_DATA_CORRUPTED,
            Self::NoRandomness => ERRCODE_SYSTEM_ERROR,
            Self::InvalidName(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::KeyExists(_) => ERRCODE_DUPLICATE_OBJECT,
            Self::NoSuchKey(_) | Self::UnknownKeyVersion(..) | Self::UnknownSubjectKey(..) => {
                ERRCODE_UNDEFINED_OBJECT
            }
            Self::Malformed(_) => ERRCODE_INVALID_BINARY_REPRESENTATION,
            Self::Forgotten(..) => ERRCODE_NO_DATA_FOUND,
            Self::SubjectForgotten(..) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::UnknownMask(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::NoMasterKey => "Set platform.master_key_file (a file of 64 hex digits, mode 0600, owned by the server's OS user) or platform.master_key_command in postgresql.conf, then SELECT pg_reload_conf().".into(),
            Self::TwoMasterKeySources => "Set only one of them.".into(),
            Self::MasterKeyFile(..) => "chown the file to the server's OS user and chmod 600 it.".into(),
            Self::MasterKeyCommand(_) => "The command must print the key as 64 hexadecimal digits and exit 0.".into(),
            Self::BadMasterKey(_) => "Make one with: openssl rand -hex 32".into(),
            Self::OtherMasterKey(_) => "Configure the master key this database's keys were wrapped with; to move them to a new one, set platform.previous_master_key_file (or _command) to the old key and run SELECT platform.rewrap_keys().".into(),
            Self::KeyExists(k) => format!("Use it, or rotate it with SELECT platform.rotate_key('{k}');"),
            Self::NoSuchKey(k) => format!("Create it with SELECT platform.create_key('{k}');"),
            Self::Forgotten(..) => "SET platform.pii_forgotten_read = 'null' to read forgotten values as NULL.".into(),
            Self::SubjectForgotten(..) => "Use another subject identifier if the person comes back.".into(),
            _ => return None,
        })
    }
}

/// How reading a forgotten subject's value behaves.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ForgottenRead {
    #[name = c"error"]
    Error,
    #[name = c"null"]
    Null,
}

/// Called from `_PG_init`: read counting and the blind-index planner hook.
pub fn init() {
    access::init();
    lookup::init();
}

/// Runs `f` as the extension's owner (see [`sql::as_extension_owner`]).
fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    sql::as_extension_owner(f)
}

fn check_name(name: &str) {
    if name.is_empty() || name.chars().count() > 63 {
        raise(PiiError::InvalidName(name.to_string()));
    }
}

/// (key id, current version) of a key named `name`, or of key id `id`, cached per
/// backend (both ways) until a rotation anywhere invalidates it.
fn load_current(name: Option<&str>, id: Option<u32>) -> Option<(String, u32, u32)> {
    keys::ensure_invalidation_callback();
    as_owner(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT k.name, k.id, max(v.version) FROM platform.pii_key k
                   JOIN platform.pii_key_version v ON v.key_id = k.id
                  WHERE k.name = $1 OR k.id = $2 GROUP BY k.id, k.name",
                Some(1),
                &[name.into(), id.map(|i| i as i32).into()],
            )?;
            if t.is_empty() {
                return Ok(None);
            }
            let row = t.first();
            Ok::<_, pgrx::spi::SpiError>(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<i32>(2)?.unwrap_or(0) as u32,
                row.get::<i32>(3)?.unwrap_or(0) as u32,
            )))
        })
        .map_err(crate::error::SpiFailure::from)
        .or_raise()
    })
    .inspect(|(name, id, version)| keys::remember_current(name, (*id, *version)))
}

fn current_version(name: &str) -> (u32, u32) {
    if let Some(v) = keys::cached_current(name) {
        return v;
    }
    match load_current(Some(name), None) {
        Some((_, id, version)) => (id, version),
        None => raise(PiiError::NoSuchKey(name.to_string())),
    }
}

fn current_version_by_id(key_id: u32) -> u32 {
    if let Some(v) = keys::cached_current_by_id(key_id) {
        return v;
    }
    match load_current(None, Some(key_id)) {
        Some((_, _, version)) => version,
        None => raise(PiiError::UnknownKeyVersion(key_id, 0)),
    }
}

/// The id of key `name` (locked against concurrent rotation when `lock`).
fn key_id(name: &str, lock: bool) -> i32 {
    let found = if lock {
        sql::modify_returning::<i32>(
            "SELECT id FROM platform.pii_key WHERE name = $1 FOR UPDATE",
            &[name.into()],
        )
    } else {
        sql::read::<i32>(
            "SELECT id FROM platform.pii_key WHERE name = $1",
            &[name.into()],
        )
    };
    match found {
        Some(id) => id,
        None => raise(PiiError::NoSuchKey(name.to_string())),
    }
}

/// The unwrapped data key a ciphertext header names; `None` for a forgotten subject.
fn data_key(r: &KeyRef) -> Option<Rc<Dek>> {
    keys::ensure_invalidation_callback();
    if let Some(k) = keys::cached_dek(r) {
        return Some(k);
    }
    let (sql_text, args): (&str, Vec<pgrx::datum::DatumWithOid>) = match r {
        KeyRef::Version { key_id, version } => (
            "SELECT k.name, v.wrapped, v.master_key_fingerprint FROM platform.pii_key_version v
               JOIN platform.pii_key k ON k.id = v.key_id WHERE v.key_id = $1 AND v.version = $2",
            vec![(*key_id as i32).into(), (*version as i32).into()],
        ),
        KeyRef::Subject {
            key_id,
            subject_key_id,
        } => (
            "SELECT k.name, s.wrapped, s.master_key_fingerprint FROM platform.pii_subject_key s
               JOIN platform.pii_key k ON k.id = s.key_id WHERE s.key_id = $1 AND s.id = $2",
            vec![(*key_id as i32).into(), (*subject_key_id as i64).into()],
        ),
    };
    let found = as_owner(|| {
        Spi::connect(|c| {
            let t = c.select(sql_text, Some(1), &args)?;
            if t.is_empty() {
                return Ok(None);
            }
            let row = t.first();
            Ok::<_, pgrx::spi::SpiError>(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<Vec<u8>>(2)?.unwrap_or_default(),
                row.get::<Vec<u8>>(3)?.unwrap_or_default(),
            )))
        })
        .map_err(crate::error::SpiFailure::from)
        .or_raise()
    });
    match (found, r) {
        (Some((name, wrapped, fp)), _) => {
            let key = keys::unwrap_key(r, &wrapped, &fp, &name);
            Some(keys::remember_dek(r.clone(), key))
        }
        (None, KeyRef::Version { key_id, version }) => {
            raise(PiiError::UnknownKeyVersion(*key_id, *version))
        }
        (
            None,
            KeyRef::Subject {
                key_id,
                subject_key_id,
            },
        ) => {
            let forgotten = as_owner(|| {
                sql::read::<String>(
                    "SELECT key_name FROM platform.forgotten_subjects WHERE subject_key_id = $1",
                    &[(*subject_key_id as i64).into()],
                )
            });
            match forgotten {
                Some(name) => match crate::gucs::PII_FORGOTTEN_READ.get() {
                    ForgottenRead::Null => None,
                    ForgottenRead::Error => raise(PiiError::Forgotten(name, *subject_key_id)),
                },
                None => raise(PiiError::UnknownSubjectKey(*subject_key_id, *key_id)),
            }
        }
    }
}

/// The subject key id of `subject` under key `key_id`, created on first use.
fn subject_key(key_name: &str, key_id: u32, subject: &str) -> u64 {
    if let Some(id) = keys::cached_subject(key_id, subject) {
        return id;
    }
    let id = as_owner(|| {
        if let Some(id) = sql::read::<i64>(
            "SELECT id FROM platform.pii_subject_key WHERE key_id = $1 AND subject = $2",
            &[(key_id as i32).into(), subject.into()],
        ) {
            return id;
        }
        let forgotten = sql::read::<bool>(
            "SELECT true FROM platform.forgotten_subjects WHERE key_name = $1 AND subject = $2 LIMIT 1",
            &[key_name.into(), subject.into()],
        );
        if forgotten.is_some() {
            raise(PiiError::SubjectForgotten(
                key_name.to_string(),
                subject.to_string(),
            ));
        }
        let id =
            sql::read::<i64>("SELECT nextval('platform.pii_subject_key_id_seq')", &[]).unwrap_or(0);
        let (wrapped, fp) = keys::new_wrapped(&KeyRef::Subject {
            key_id,
            subject_key_id: id as u64,
        });
        // A concurrent first encryption for the same subject may win: keep its key.
        sql::modify(
            "INSERT INTO platform.pii_subject_key (id, key_id, subject, wrapped, master_key_fingerprint)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, subject) DO NOTHING",
            &[id.into(), (key_id as i32).into(), subject.into(), wrapped.into(), fp.to_vec().into()],
        );
        sql::read::<i64>(
            "SELECT id FROM platform.pii_subject_key WHERE key_id = $1 AND subject = $2",
            &[(key_id as i32).into(), subject.into()],
        )
        .unwrap_or(id)
    }) as u64;
    keys::remember_subject(key_id, subject, id);
    id
}

fn seal(plain: &[u8], key_name: &str, subject: Option<&str>, context: &str) -> Vec<u8> {
    let (key_id, version) = current_version(key_name);
    let r = match subject {
        None => KeyRef::Version { key_id, version },
        Some(s) => KeyRef::Subject {
            key_id,
            subject_key_id: subject_key(key_name, key_id, s),
        },
    };
    let Some(key) = data_key(&r) else {
        raise(PiiError::SubjectForgotten(
            key_name.to_string(),
            subject.unwrap_or_default().to_string(),
        ))
    };
    cipher::seal(&key, &Header::from(&r), plain, context)
}

fn open(ciphertext: &[u8], context: &str) -> Option<Vec<u8>> {
    let header = cipher::Header::parse(ciphertext).unwrap_or_else(|e| raise(e));
    let key = data_key(&header.key_ref())?;
    Some(cipher::open(&key, &header, ciphertext, context).unwrap_or_else(|e| raise(e)))
}

/// Creates a named data key (version 1), made with the server's CSPRNG and stored only
/// wrapped by the master key. Returns the version.
#[pg_extern]
fn create_key(name: crate::sql::UnconvertedText) -> i32 {
    let name = name.as_str();
    check_name(name);
    as_owner(|| {
        let exists = sql::read::<bool>(
            "SELECT true FROM platform.pii_key WHERE name = $1",
            &[name.into()],
        );
        if exists.is_some() {
            raise(PiiError::KeyExists(name.to_string()));
        }
        let id =
            sql::read::<i32>("SELECT nextval('platform.pii_key_id_seq')::int4", &[]).unwrap_or(0);
        let (wrapped, fp) = keys::new_wrapped(&KeyRef::Version {
            key_id: id as u32,
            version: 1,
        });
        sql::modify(
            "INSERT INTO platform.pii_key (id, name) VALUES ($1, $2)",
            &[id.into(), name.into()],
        );
        sql::modify(
            "INSERT INTO platform.pii_key_version (key_id, version, wrapped, master_key_fingerprint) VALUES ($1, 1, $2, $3)",
            &[id.into(), wrapped.into(), fp.to_vec().into()],
        );
    });
    1
}

/// Adds a new version of a key: new writes use it, ciphertexts of older versions still
/// decrypt. Every session sees the new version from the commit on. Returns the version.
#[pg_extern]
fn rotate_key(name: crate::sql::UnconvertedText) -> i32 {
    let name = name.as_str();
    let version = as_owner(|| {
        // Locked: concurrent rotations of one key take turns.
        let id = key_id(name, true);
        let version = sql::read::<i32>(
            "SELECT max(version) + 1 FROM platform.pii_key_version WHERE key_id = $1",
            &[id.into()],
        )
        .unwrap_or(1);
        let (wrapped, fp) = keys::new_wrapped(&KeyRef::Version {
            key_id: id as u32,
            version: version as u32,
        });
        sql::modify(
            "INSERT INTO platform.pii_key_version (key_id, version, wrapped, master_key_fingerprint) VALUES ($1, $2, $3, $4)",
            &[id.into(), version.into(), wrapped.into(), fp.to_vec().into()],
        );
        version
    });
    keys::invalidate_everywhere("platform.pii_key_version");
    version
}

/// Encrypts `value` under the current version of key `key_name`. `context` (for example
/// `'payments.customer.email'`, or with the row's key) is authenticated with the value: a
/// ciphertext copied to another column or row does not decrypt there.
#[pg_extern(name = "encrypt")]
fn encrypt_text(
    value: ServerText,
    key_name: crate::sql::UnconvertedText,
    context: ServerText,
) -> Vec<u8> {
    let key_name = key_name.as_str();
    // Text is sealed as UTF-8 whatever the database's encoding: a ciphertext decrypts to
    // the same characters in any database, and a LATIN1 database's 'Zoë' is not refused.
    seal(value.as_str().as_bytes(), key_name, None, context.as_str())
}

/// `encrypt` for bytea values.
#[pg_extern(name = "encrypt")]
fn encrypt_bytes(
    value: &[u8],
    key_name: crate::sql::UnconvertedText,
    context: ServerText,
) -> Vec<u8> {
    let key_name = key_name.as_str();
    seal(value, key_name, None, context.as_str())
}

/// Encrypts `value` under the data key of one data subject (for example a customer id)
/// within key `key_name`: `platform.forget_subject` destroys that key, and with it every
/// copy of the subject's values.
#[pg_extern(name = "encrypt_for_subject")]
fn encrypt_for_subject_text(
    value: ServerText,
    key_name: crate::sql::UnconvertedText,
    subject: crate::sql::UnconvertedText,
    context: ServerText,
) -> Vec<u8> {
    let key_name = key_name.as_str();
    let subject = subject.as_str();
    seal(
        value.as_str().as_bytes(),
        key_name,
        Some(subject),
        context.as_str(),
    )
}

/// `encrypt_for_subject` for bytea values.
#[pg_extern(name = "encrypt_for_subject")]
fn encrypt_for_subject_bytes(
    value: &[u8],
    key_name: crate::sql::UnconvertedText,
    subject: crate::sql::UnconvertedText,
    context: ServerText,
) -> Vec<u8> {
    let key_name = key_name.as_str();
    let subject = subject.as_str();
    seal(value, key_name, Some(subject), context.as_str())
}

/// Decrypts a value encrypted as text, checking `context`. A forgotten subject's value is
/// an ERROR with SQLSTATE P0002, or NULL with `platform.pii_forgotten_read = 'null'`.
#[pg_extern(stable)]
fn decrypt(ciphertext: &[u8], context: ServerText) -> Option<ServerText> {
    let plain = open(ciphertext, context.as_str())?;
    match String::from_utf8(plain) {
        Ok(s) => Some(ServerText(s)),
        Err(_) => raise(PiiError::Malformed(
            "the decrypted value is not text; use platform.decrypt_bytea",
        )),
    }
}

/// Decrypts a value encrypted as bytea.
#[pg_extern(stable)]
fn decrypt_bytea(ciphertext: &[u8], context: ServerText) -> Option<Vec<u8>> {
    open(ciphertext, context.as_str())
}

/// A keyed HMAC-SHA256 of `value` for equality search with an ordinary index: equal
/// values give equal results under the same key, and nothing about the value can be
/// learned without the key. Stable across key rotations.
#[pg_extern(stable)]
fn blind_index(value: ServerText, key_name: crate::sql::UnconvertedText) -> Vec<u8> {
    let key_name = key_name.as_str();
    blind_index_of(value.as_str(), key_name)
}

/// [`blind_index`] of UTF-8 text (the same in a database of any encoding).
fn blind_index_of(value: &str, key_name: &str) -> Vec<u8> {
    let (key_id, _) = current_version(key_name);
    let index_key = match keys::cached_blind(key_id) {
        Some(k) => k,
        None => {
            let Some(first) = data_key(&KeyRef::Version { key_id, version: 1 }) else {
                raise(PiiError::NoSuchKey(key_name.to_string()))
            };
            let k = cipher::derive(&first.key, b"pg_platform blind index v1");
            keys::remember_blind(key_id, k.clone());
            k
        }
    };
    cipher::mac(&index_key, value.as_bytes())
}

/// Rotates the master key: every data key wrapped by the previous master key (named by
/// `platform.previous_master_key_file` or `platform.previous_master_key_command`) is
/// unwrapped with it and wrapped again by the configured one, all in this transaction.
/// The data keys themselves do not change, so no ciphertext is re-encrypted. Returns how
/// many keys were rewrapped (0 when all already are).
#[pg_extern]
fn rewrap_keys() -> i64 {
    type Wrapped = (String, KeyRef, Vec<u8>, Vec<u8>);
    let count = as_owner(|| {
        let rows: Vec<Wrapped> = Spi::connect_mut(|c| {
            let mut out = Vec::new();
            let versions = c.update(
                "SELECT k.name, v.key_id, v.version, v.wrapped, v.master_key_fingerprint
                   FROM platform.pii_key_version v JOIN platform.pii_key k ON k.id = v.key_id FOR UPDATE OF v",
                None,
                &[],
            )?;
            for r in versions {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    KeyRef::Version {
                        key_id: r.get::<i32>(2)?.unwrap_or(0) as u32,
                        version: r.get::<i32>(3)?.unwrap_or(0) as u32,
                    },
                    r.get::<Vec<u8>>(4)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(5)?.unwrap_or_default(),
                ));
            }
            let subjects = c.update(
                "SELECT k.name, s.key_id, s.id, s.wrapped, s.master_key_fingerprint
                   FROM platform.pii_subject_key s JOIN platform.pii_key k ON k.id = s.key_id FOR UPDATE OF s",
                None,
                &[],
            )?;
            for r in subjects {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    KeyRef::Subject {
                        key_id: r.get::<i32>(2)?.unwrap_or(0) as u32,
                        subject_key_id: r.get::<i64>(3)?.unwrap_or(0) as u64,
                    },
                    r.get::<Vec<u8>>(4)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(5)?.unwrap_or_default(),
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .map_err(crate::error::SpiFailure::from)
        .or_raise();
        let mut count = 0i64;
        for (name, r, wrapped, fingerprint) in rows {
            let Some((new, fp)) = keys::rewrap(&r, &wrapped, &fingerprint, &name) else {
                continue;
            };
            match r {
                KeyRef::Version { key_id, version } => sql::modify(
                    "UPDATE platform.pii_key_version SET wrapped = $1, master_key_fingerprint = $2
                      WHERE key_id = $3 AND version = $4",
                    &[new.into(), fp.to_vec().into(), (key_id as i32).into(), (version as i32).into()],
                ),
                KeyRef::Subject { subject_key_id, .. } => sql::modify(
                    "UPDATE platform.pii_subject_key SET wrapped = $1, master_key_fingerprint = $2 WHERE id = $3",
                    &[new.into(), fp.to_vec().into(), (subject_key_id as i64).into()],
                ),
            };
            count += 1;
        }
        count
    });
    keys::invalidate_everywhere("platform.pii_key_version");
    keys::invalidate_everywhere("platform.pii_subject_key");
    count
}

/// Destroys the data key of one subject under key `key_name` (crypto-shredding): every
/// value encrypted for that subject, in this database, its replicas, dumps, audit images
/// and lake files, can no longer be decrypted. Recorded in `platform.forgotten_subjects`
/// (who asked and when, no data). Returns whether a key existed.
#[pg_extern]
fn forget_subject(
    key_name: crate::sql::UnconvertedText,
    subject: crate::sql::UnconvertedText,
) -> bool {
    let key_name = key_name.as_str();
    let subject = subject.as_str();
    let destroyed = as_owner(|| {
        let key_id = key_id(key_name, false);
        let id = sql::modify_returning::<i64>(
            "DELETE FROM platform.pii_subject_key WHERE key_id = $1 AND subject = $2 RETURNING id",
            &[key_id.into(), subject.into()],
        );
        // A subject that never had a key is recorded too (so nothing is encrypted for it
        // later), under a negative id no ciphertext can name.
        sql::modify(
            "INSERT INTO platform.forgotten_subjects (subject_key_id, key_name, subject, forgotten_by)
             VALUES (coalesce($1, -nextval('platform.pii_subject_key_id_seq')), $2, $3, session_user)",
            &[id.into(), key_name.into(), subject.into()],
        );
        id.is_some()
    });
    keys::invalidate_everywhere("platform.pii_subject_key");
    destroyed
}

/// Whether the current role may see plaintext: it has the privileges of
/// `platform_pii_reader` (directly or through membership with INHERIT).
fn is_pii_reader() -> bool {
    thread_local! {
        static READER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
    }
    let role = READER.get().unwrap_or_else(|| {
        let oid = unsafe { pg_sys::get_role_oid(c"platform_pii_reader".as_ptr(), true) };
        READER.set(Some(oid));
        oid
    });
    role != pg_sys::InvalidOid && unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// What the current role may see of a protected value: the plaintext for members of
/// `platform_pii_reader`, otherwise the value under `mask`: `email` (`a****@example.com`),
/// `name` (`A** L*******`), `phone` (all digits but the last two starred), `card` (all
/// but the last four), `redact` (`[redacted]`, the default), or the name of a function
/// taking and returning text. For views over encrypted columns; every role that may read
/// the table may call it. A forgotten subject reads as `decrypt` does.
#[pg_extern(stable)]
fn reveal(
    ciphertext: &[u8],
    context: ServerText,
    mask: default!(crate::sql::UnconvertedText, "'redact'"),
) -> Option<ServerText> {
    let mask = mask.as_str();
    let custom = (!mask::BUILT_IN.contains(&mask)).then(|| mask_function(mask));
    let plain = open(ciphertext, context.as_str()).map(zeroize::Zeroizing::new)?;
    present(&plain, mask, custom.as_deref(), is_pii_reader())
}

/// A decrypted value as the current role may see it: the text itself for a reader, else
/// the built-in mask, or user function `custom` (resolved by [`mask_function`]).
fn present(plain: &[u8], mask: &str, custom: Option<&str>, reader: bool) -> Option<ServerText> {
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(plain).into_owned());
    if reader {
        return Some(ServerText(text.to_string()));
    }
    match custom {
        None => mask::apply(mask, &text).map(ServerText),
        // The user's function takes and gives text in the database's encoding.
        Some(f) => sql::read::<ServerText>(
            &format!("SELECT {f}($1)"),
            &[ServerText(text.to_string()).into()],
        ),
    }
}

/// The qualified name of user mask function `mask(text)`, looked up once per backend (a
/// view calls `reveal` for every row).
fn mask_function(mask: &str) -> String {
    thread_local! {
        static FUNCTIONS: std::cell::RefCell<std::collections::HashMap<String, String>> = Default::default();
    }
    if let Some(f) = FUNCTIONS.with_borrow(|m| m.get(mask).cloned()) {
        return f;
    }
    let Some(f) = sql::read::<String>(
        "SELECT to_regprocedure($1 || '(text)')::regproc::text",
        &[mask.into()],
    ) else {
        raise(PiiError::UnknownMask(mask.to_string()))
    };
    FUNCTIONS.with_borrow_mut(|m| m.insert(mask.to_string(), f.clone()));
    f
}

/// Whether a ciphertext is under the current version of its key (subject keys have one
/// version: always current). Reads the header only; never decrypts.
#[pg_extern(stable)]
fn is_current_version(ciphertext: &[u8]) -> bool {
    let header = cipher::Header::parse(ciphertext).unwrap_or_else(|e| raise(e));
    match header.key_ref() {
        KeyRef::Subject { .. } => true,
        KeyRef::Version { key_id, version } => current_version_by_id(key_id) == version,
    }
}

/// Decrypts a ciphertext and encrypts it again under the current version of the same key,
/// in the same context (used by `platform.reencrypt`; the plaintext never leaves the
/// function). A forgotten subject's value stays as it is.
#[pg_extern]
fn reencrypt_value(ciphertext: &[u8], context: ServerText) -> Vec<u8> {
    let context = context.as_str();
    let header = cipher::Header::parse(ciphertext).unwrap_or_else(|e| raise(e));
    let KeyRef::Version { key_id, .. } = header.key_ref() else {
        return ciphertext.to_vec();
    };
    let Some(plain) = open(ciphertext, context).map(zeroize::Zeroizing::new) else {
        return ciphertext.to_vec();
    };
    let version = current_version_by_id(key_id);
    let r = KeyRef::Version { key_id, version };
    let Some(dek) = data_key(&r) else {
        raise(PiiError::UnknownKeyVersion(key_id, version))
    };
    cipher::seal(&dek, &Header::from(&r), &plain, context)
}

pgrx::extension_sql!(
    r#"
CREATE SEQUENCE platform.pii_key_id_seq AS integer;
CREATE SEQUENCE platform.pii_subject_key_id_seq AS bigint;
CREATE TABLE platform.pii_key (
    id          integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT session_user
);
CREATE TABLE platform.pii_key_version (
    key_id                 integer NOT NULL REFERENCES platform.pii_key (id),
    version                integer NOT NULL,
    wrapped                bytea NOT NULL,
    master_key_fingerprint bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    created_by             text NOT NULL DEFAULT session_user,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE platform.pii_subject_key (
    id                     bigint PRIMARY KEY,
    key_id                 integer NOT NULL REFERENCES platform.pii_key (id),
    subject                text NOT NULL,
    wrapped                bytea NOT NULL,
    master_key_fingerprint bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (key_id, subject)
);
CREATE TABLE platform.forgotten_subjects (
    subject_key_id bigint PRIMARY KEY,
    key_name       text NOT NULL,
    subject        text NOT NULL,
    forgotten_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_by   text NOT NULL
);
COMMENT ON TABLE platform.pii_key IS 'Named data keys of pg_platform''s PII encryption (no key material).';
COMMENT ON TABLE platform.pii_key_version IS 'Data key versions, wrapped (AES-256-GCM) by the master key. Readable by the extension owner only.';
COMMENT ON TABLE platform.pii_subject_key IS 'Per-subject data keys, wrapped by the master key; forget_subject deletes them.';
COMMENT ON TABLE platform.forgotten_subjects IS 'Subjects whose key was destroyed: who asked and when, no data.';
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_subject_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_key_version', '');
SELECT pg_catalog.pg_extension_config_dump('platform.pii_subject_key', '');
SELECT pg_catalog.pg_extension_config_dump('platform.forgotten_subjects', '');
GRANT SELECT ON platform.forgotten_subjects TO platform_admin, platform_auditor;

CREATE VIEW platform.keys AS
SELECT k.name,
       max(v.version) AS current_version,
       count(*) AS versions,
       k.created_at,
       k.created_by,
       max(v.created_at) AS rotated_at,
       (SELECT count(*) FROM platform.pii_subject_key s WHERE s.key_id = k.id) AS subject_keys,
       (SELECT count(*) FROM platform.forgotten_subjects f WHERE f.key_name = k.name) AS forgotten_subjects
  FROM platform.pii_key k JOIN platform.pii_key_version v ON v.key_id = k.id
 GROUP BY k.id, k.name, k.created_at, k.created_by;
COMMENT ON VIEW platform.keys IS 'pg_platform data keys: names, versions, when created and rotated, subject keys; never key material.';
GRANT SELECT ON platform.keys TO platform_admin, platform_developer, platform_auditor, platform_pii_reader;

-- Moves a column's ciphertexts to the current version of their key, batch_size rows per
-- transaction (a procedure, so each batch commits: no long locks, and an interrupted run
-- resumes where it stopped, since the remaining work is read from the data itself).
-- No SET clause (a procedure with one cannot COMMIT): catalog names are qualified instead.
CREATE PROCEDURE platform.reencrypt(tbl regclass, col name, context text, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $proc$
DECLARE
    n bigint;
    total bigint := 0;
    row_context text := '$1';
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'invalid batch_size %: must be at least 1', batch_size USING ERRCODE = '22023';
    END IF;
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = tbl) = 'p' THEN
        RAISE EXCEPTION 'platform.reencrypt works on one table at a time; % is partitioned', tbl
            USING ERRCODE = '0A000', HINT = 'Call it for each partition.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attname = col AND attnum > 0
                      AND NOT attisdropped AND atttypid IN ('pg_catalog.bytea'::pg_catalog.regtype,
                                                           pg_catalog.to_regtype('platform.ciphertext'))) THEN
        RAISE EXCEPTION 'table % has no bytea column "%"', tbl, col USING ERRCODE = '42703';
    END IF;
    IF context IS NULL THEN
        -- A column protected by platform.protect_column: each row has its own context.
        row_context := platform.protected_row_context(tbl, col);
        IF row_context IS NULL THEN
            RAISE EXCEPTION 'context is needed: %.% is not a column protected by platform.protect_column', tbl, col
                USING ERRCODE = '22004';
        END IF;
    END IF;
    LOOP
        EXECUTE pg_catalog.format('UPDATE %s AS t SET %I = platform.reencrypt_value(t.%I, %s)
                         WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM %s WHERE %I IS NOT NULL
                                                      AND NOT platform.is_current_version(%I)
                                                    LIMIT $2 FOR UPDATE SKIP LOCKED))',
                       tbl, col, col, row_context, tbl, col, col)
            USING context, batch_size;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
    RAISE NOTICE 'platform.reencrypt: % values of %.% moved to the current key version', total, tbl, col;
END
$proc$;
REVOKE EXECUTE ON PROCEDURE platform.reencrypt(regclass, name, text, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE platform.reencrypt(regclass, name, text, integer) TO platform_admin;
"#,
    name = "pii_keys",
);
