//! S3 lakes. A sink whose `lake_url` is `s3://bucket/prefix` runs the local protocol of
//! `files.rs` unchanged in a staging directory of the data directory
//! (`pg_platform/lake/<sink>/`), and uploads what a batch committed there: each data file
//! (create-only), the tables' published schemas, then the manifest, the lake's commit
//! point in the bucket (create-only too). Only then is the slot advanced; a batch that
//! failed between its local manifest and its upload is uploaded again by the next run,
//! under the same names. A data file's staged copy is removed once uploaded, so the
//! staging directory holds manifests and at most one batch's files.
//!
//! Requests are signed here (SigV4, query-string) and sent by a blocking HTTP client:
//! nothing runs beside the backend. Endpoint, region and credentials come from the
//! server's settings and environment, never from SQL; no message names a signed URL.

use super::files::{self, Lake};
use super::LakeError;
use md5::{Digest, Md5};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    HeadObject, PutObject, S3Action, UploadPart,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(600);
/// The object metadata holding the MD-5 of what an upload sent.
const MD5_HEADER: &str = "x-amz-meta-pg-platform-md5";
/// S3 takes at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// The size of one part of a multipart upload of `len` bytes (`platform.lake_s3_part_mb`,
/// larger when the file would need more than [`MAX_PARTS`]); a file up to this size is one
/// PUT.
fn part_bytes(len: u64) -> u64 {
    part_size(len, crate::gucs::LAKE_S3_PART_MB.get())
}

fn part_size(len: u64, mb: i32) -> u64 {
    ((mb.clamp(5, 5120) as u64) << 20).max(len.div_ceil(MAX_PARTS))
}

/// Where a multipart upload in progress of the staged file `path` keeps its upload id, so
/// a retry after a crash aborts the parts it left (they are stored and paid for until then).
fn upload_marker(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".upload");
    PathBuf::from(p)
}

/// The text between `open` and `close` in an S3 XML answer.
fn xml_value<'a>(body: &'a str, open: &str, close: &str) -> Option<&'a str> {
    body.split_once(open)
        .and_then(|(_, r)| r.split_once(close))
        .map(|(v, _)| v)
}

/// An S3 lake: its bucket, key prefix and how to reach it.
pub struct Remote {
    bucket: Bucket,
    prefix: String,
    credentials: Credentials,
    agent: ureq::Agent,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

/// Splits `s3://bucket/prefix` (prefix optional, no trailing slash needed).
pub fn parse(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let prefix = prefix.trim_matches('/');
    let valid_prefix = !prefix.contains("//")
        && !prefix.split('/').any(|p| p == "." || p == "..")
        && !prefix.contains('\0');
    (valid_bucket && valid_prefix).then(|| (bucket.to_string(), prefix.to_string()))
}

/// The staging directory of an S3 sink, in the data directory.
pub fn staging_root(sink: &str) -> PathBuf {
    let data = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    Path::new(&data).join("pg_platform").join("lake").join(sink)
}

/// Removes the staging directory of a sink (what a dropped sink of the same name left).
pub fn remove_staging(sink: &str) -> Result<(), LakeError> {
    let root = staging_root(sink);
    match std::fs::remove_dir_all(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LakeError::io(&root, e)),
    }
}

fn setting(g: &pgrx::GucSetting<Option<std::ffi::CString>>) -> Option<String> {
    g.get()
        .and_then(|c| c.to_str().ok().map(str::to_string))
        .filter(|s| !s.is_empty())
}

/// The credentials: the server's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), else the shared credentials file (`platform.lake_s3_credentials_file`,
/// else `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials` of the server's user),
/// profile `AWS_PROFILE` or `default`.
fn credentials() -> Result<Credentials, LakeError> {
    if let Some(c) = Credentials::from_env() {
        return Ok(c);
    }
    let file = setting(&crate::gucs::LAKE_S3_CREDENTIALS_FILE)
        .or_else(|| std::env::var("AWS_SHARED_CREDENTIALS_FILE").ok())
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/.aws/credentials"))
        })
        .ok_or_else(|| LakeError::S3Credentials("no credentials file is set".into()))?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let text = std::fs::read_to_string(&file)
        .map_err(|e| LakeError::S3Credentials(format!("cannot read {file}: {}", e.kind())))?;
    let (key, secret, token) = profile_keys(&text, &profile);
    match (key, secret) {
        (Some(k), Some(s)) => Ok(match token {
            Some(t) => Credentials::new_with_token(k, s, t),
            None => Credentials::new(k, s),
        }),
        _ => Err(LakeError::S3Credentials(format!(
            "{file} has no aws_access_key_id and aws_secret_access_key in profile [{profile}]"
        ))),
    }
}

/// The keys of `[profile]` in a shared credentials file (INI: `name = value` lines).
fn profile_keys(text: &str, profile: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !inside || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => key = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    (key, secret, token)
}

impl Remote {
    pub fn new(bucket: &str, prefix: &str) -> Result<Remote, LakeError> {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let region =
            setting(&crate::gucs::LAKE_S3_REGION).unwrap_or_else(|| "us-east-1".to_string());
        let (endpoint, style) = match setting(&crate::gucs::LAKE_S3_ENDPOINT) {
            // An S3-compatible server: path-style requests.
            Some(e) => (e, UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let endpoint = endpoint
            .parse()
            .map_err(|_| LakeError::S3Config(format!("endpoint \"{endpoint}\" is not a URL")))?;
        let bucket = Bucket::new(endpoint, style, bucket.to_string(), region)
            .map_err(|e| LakeError::S3Config(format!("bucket of {url}: {e}")))?;
        let timeout = Duration::from_secs(crate::gucs::LAKE_S3_TIMEOUT.get().max(1) as u64);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build();
        Ok(Remote {
            bucket,
            prefix: prefix.to_string(),
            credentials: credentials()?,
            agent,
            url,
        })
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// `s3://bucket/prefix/rel`, for messages.
    fn name(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// What a failed request means, without its URL (which carries a signature).
    fn failure(&self, what: &str, rel: &str, e: ureq::Error) -> LakeError {
        let object = self.name(rel);
        match e {
            ureq::Error::Status(code, response) => {
                let body = response.into_string().unwrap_or_default();
                let s3_code = xml_value(&body, "<Code>", "</Code>")
                    .unwrap_or_default()
                    .to_string();
                LakeError::S3Status {
                    what: what.into(),
                    object,
                    status: code,
                    code: s3_code,
                }
            }
            ureq::Error::Transport(t) => {
                let timed_out = std::error::Error::source(&t)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|e| {
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                        )
                    });
                // The transport's own text names the URL, with its signature: only its kind.
                let reason = if timed_out {
                    format!(
                        "no answer within platform.lake_s3_timeout ({} s)",
                        crate::gucs::LAKE_S3_TIMEOUT.get()
                    )
                } else {
                    t.kind().to_string()
                };
                LakeError::S3Unreachable {
                    what: what.into(),
                    object,
                    reason,
                }
            }
        }
    }

    /// The MD-5 an upload of ours recorded in the object's metadata (empty for an object
    /// of someone else), or None when the object does not exist.
    fn recorded_md5(&self, rel: &str) -> Result<Option<String>, LakeError> {
        let key = self.key(rel);
        let url = HeadObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
        match self.agent.head(url.as_str()).call() {
            Ok(r) => Ok(Some(r.header(MD5_HEADER).unwrap_or_default().to_string())),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => Err(self.failure("HEAD", rel, e)),
        }
    }

    /// A create-only upload met an object under its name: fine when an upload of the same
    /// bytes made it (a replay of the same plan), a conflict otherwise.
    fn ours_already(&self, rel: &str, md5: &str) -> Result<(), LakeError> {
        match self.recorded_md5(rel)? {
            Some(m) if m == md5 => Ok(()),
            _ => Err(LakeError::S3Exists(self.name(rel))),
        }
    }

    /// Uploads `len` bytes from `body` to `rel`, their MD-5 in the object's metadata.
    /// Create-only: an object already there is accepted only when an upload of the same
    /// bytes made it (a replay of the same plan).
    fn put(
        &self,
        rel: &str,
        body: impl Read,
        len: u64,
        md5: &str,
        create_only: bool,
    ) -> Result<(), LakeError> {
        let key = self.key(rel);
        let mut action = PutObject::new(&self.bucket, Some(&self.credentials), &key);
        action.headers_mut().insert(MD5_HEADER, md5.to_string());
        if create_only {
            action.headers_mut().insert("if-none-match", "*");
        }
        let url = action.sign(SIGNED_FOR);
        let mut request = self
            .agent
            .put(url.as_str())
            .set("Content-Length", &len.to_string())
            .set(MD5_HEADER, md5);
        if create_only {
            request = request.set("If-None-Match", "*");
        }
        match request.send(body) {
            Ok(_) => Ok(()),
            // 412: the object exists (a replay uploading again), 409: a concurrent put.
            Err(ureq::Error::Status(412 | 409, _)) if create_only => self.ours_already(rel, md5),
            Err(e) => Err(self.failure("PUT", rel, e)),
        }
    }

    /// Uploads the file `path` to `rel`: one PUT up to `platform.lake_s3_part_mb`, a
    /// multipart upload above (S3 takes at most 5 GB in one PUT).
    pub fn put_file(&self, rel: &str, path: &Path, create_only: bool) -> Result<(), LakeError> {
        let mut hasher = Md5::new();
        let mut f = std::fs::File::open(path).map_err(|e| LakeError::io(path, e))?;
        std::io::copy(&mut f, &mut hasher).map_err(|e| LakeError::io(path, e))?;
        let md5 = format!("{:x}", hasher.finalize());
        let f = std::fs::File::open(path).map_err(|e| LakeError::io(path, e))?;
        let len = f.metadata().map_err(|e| LakeError::io(path, e))?.len();
        let part = part_bytes(len);
        if len > part {
            return self.put_multipart(rel, path, len, part, &md5, create_only);
        }
        self.put(rel, f, len, &md5, create_only)
    }

    /// Uploads `path` to `rel` in parts of `part` bytes, each streamed from the file.
    /// The upload id is kept next to the staged file while parts go up: an upload an
    /// ERROR or a crash interrupted is aborted by the next try, which starts again.
    /// Create-only as [`Remote::put`]: the completion is conditional (`If-None-Match`).
    fn put_multipart(
        &self,
        rel: &str,
        path: &Path,
        len: u64,
        part: u64,
        md5: &str,
        create_only: bool,
    ) -> Result<(), LakeError> {
        let key = self.key(rel);
        let marker = upload_marker(path);
        if let Ok(id) = std::fs::read_to_string(&marker) {
            self.abort_upload(rel, id.trim())?;
            std::fs::remove_file(&marker).map_err(|e| LakeError::io(&marker, e))?;
        }
        let mut action = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), &key);
        action.headers_mut().insert(MD5_HEADER, md5.to_string());
        let url = action.sign(SIGNED_FOR);
        let body = self
            .agent
            .post(url.as_str())
            .set(MD5_HEADER, md5)
            .call()
            .map_err(|e| self.failure("POST", rel, e))?
            .into_string()
            .map_err(|e| LakeError::io(path, e))?;
        let Some(id) = xml_value(&body, "<UploadId>", "</UploadId>").map(str::to_string) else {
            return Err(self.malformed("POST", rel, &body));
        };
        files::write_atomic(&marker, id.as_bytes())?;
        match self.send_parts(rel, &key, &id, path, len, part, md5, create_only) {
            Ok(()) => {
                std::fs::remove_file(&marker).map_err(|e| LakeError::io(&marker, e))?;
                Ok(())
            }
            Err(e) => {
                // Best effort: a failed abort leaves the marker for the next try.
                if self.abort_upload(rel, &id).is_ok() {
                    let _ = std::fs::remove_file(&marker);
                }
                Err(e)
            }
        }
    }

    /// The parts of a multipart upload, then its completion.
    #[allow(clippy::too_many_arguments)]
    fn send_parts(
        &self,
        rel: &str,
        key: &str,
        id: &str,
        path: &Path,
        len: u64,
        part: u64,
        md5: &str,
        create_only: bool,
    ) -> Result<(), LakeError> {
        let count = len.div_ceil(part);
        let mut etags = Vec::with_capacity(count as usize);
        for n in 0..count {
            let start = n * part;
            let size = part.min(len - start);
            let mut f = std::fs::File::open(path).map_err(|e| LakeError::io(path, e))?;
            f.seek(SeekFrom::Start(start))
                .map_err(|e| LakeError::io(path, e))?;
            let number = (n + 1) as u16;
            let url = UploadPart::new(&self.bucket, Some(&self.credentials), key, number, id)
                .sign(SIGNED_FOR);
            let response = self
                .agent
                .put(url.as_str())
                .set("Content-Length", &size.to_string())
                .send(f.take(size))
                .map_err(|e| self.failure("PUT", rel, e))?;
            let Some(etag) = response.header("ETag").map(str::to_string) else {
                return Err(self.malformed("PUT", rel, ""));
            };
            etags.push(etag);
            super::sync::fault("after_part");
        }
        let mut action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        if create_only {
            action.headers_mut().insert("if-none-match", "*");
        }
        let url = action.sign(SIGNED_FOR);
        let mut request = self.agent.post(url.as_str());
        if create_only {
            request = request.set("If-None-Match", "*");
        }
        match request.send_string(&action.body()) {
            // S3 may answer 200 and still fail: the body says which.
            Ok(r) => {
                let body = r.into_string().map_err(|e| LakeError::io(path, e))?;
                if body.contains("<Error>") {
                    return Err(self.malformed("POST", rel, &body));
                }
                Ok(())
            }
            Err(ureq::Error::Status(412 | 409, _)) if create_only => {
                let _ = self.abort_upload(rel, id);
                self.ours_already(rel, md5)
            }
            Err(e) => Err(self.failure("POST", rel, e)),
        }
    }

    /// Aborts a multipart upload of `rel`, dropping its parts (one already gone is fine).
    fn abort_upload(&self, rel: &str, id: &str) -> Result<(), LakeError> {
        let key = self.key(rel);
        let url = AbortMultipartUpload::new(&self.bucket, Some(&self.credentials), &key, id)
            .sign(SIGNED_FOR);
        match self.agent.delete(url.as_str()).call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(e) => Err(self.failure("DELETE", rel, e)),
        }
    }

    /// An answer S3 sent that says the request failed, or that cannot be read.
    fn malformed(&self, what: &str, rel: &str, body: &str) -> LakeError {
        LakeError::S3Status {
            what: what.into(),
            object: self.name(rel),
            status: 200,
            code: xml_value(body, "<Code>", "</Code>")
                .unwrap_or("an answer without what it should hold")
                .to_string(),
        }
    }

    pub fn put_bytes(&self, rel: &str, bytes: &[u8], create_only: bool) -> Result<(), LakeError> {
        let md5 = format!("{:x}", Md5::digest(bytes));
        self.put(rel, bytes, bytes.len() as u64, &md5, create_only)
    }

    pub fn delete(&self, rel: &str) -> Result<(), LakeError> {
        let key = self.key(rel);
        let url = DeleteObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
        match self.agent.delete(url.as_str()).call() {
            Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
            Err(e) => Err(self.failure("DELETE", rel, e)),
        }
    }

    /// Downloads `rel` into `path` (streamed, fsynced, then renamed into place) unless it
    /// is there already.
    pub fn fetch(&self, rel: &str, path: &Path) -> Result<(), LakeError> {
        if path.exists() {
            return Ok(());
        }
        let key = self.key(rel);
        let url = GetObject::new(&self.bucket, Some(&self.credentials), &key).sign(SIGNED_FOR);
        let response = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.failure("GET", rel, e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LakeError::io(dir, e))?;
        }
        let tmp = path.with_extension("download");
        let mut f = std::fs::File::create(&tmp).map_err(|e| LakeError::io(&tmp, e))?;
        std::io::copy(&mut response.into_reader(), &mut f)
            .and_then(|_| f.sync_all())
            .map_err(|e| LakeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| LakeError::io(path, e))
    }

    /// Checks the bucket takes and removes an object (at sink creation).
    pub fn probe(&self, sink: &str) -> Result<(), LakeError> {
        let rel = format!("_pg_platform/{sink}/.probe");
        self.put_bytes(&rel, b"ok", false)?;
        self.delete(&rel)
    }

    /// Uploads what a committed batch (or archive) staged in `lake`: its data files, the
    /// tables' `_schema.json` files, then its manifest `manifest_rel`; each staged data file
    /// is removed once uploaded. A file no longer staged was uploaded by an earlier try.
    pub fn upload(
        &self,
        lake: &Lake,
        files: &[String],
        tables: &[(String, String)],
        manifest_rel: &str,
    ) -> Result<(), LakeError> {
        for f in files {
            let local = lake.root.join(f);
            if !local.exists() {
                continue;
            }
            self.put_file(f, &local, true)?;
            std::fs::remove_file(&local).map_err(|e| LakeError::io(&local, e))?;
        }
        for (schema, table) in tables {
            let rel = format!("{schema}/{table}/_schema.json");
            let local = lake.root.join(&rel);
            if local.exists() {
                self.put_file(&rel, &local, false)?;
            }
        }
        self.put_file(manifest_rel, &lake.root.join(manifest_rel), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_clean_prefix() {
        assert_eq!(
            parse("s3://lake-bucket/raw/payments/"),
            Some(("lake-bucket".into(), "raw/payments".into()))
        );
        assert_eq!(parse("s3://lake.b1"), Some(("lake.b1".into(), "".into())));
        for bad in [
            "s3://",
            "s3://UPPER/x",
            "s3://ab/x",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
            "file:///x",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_are_the_setting_s_size_unless_a_file_needs_more_than_ten_thousand() {
        assert_eq!(part_size(1, 64), 64 << 20);
        assert_eq!(part_size(1, 1), 5 << 20, "S3's smallest part");
        let huge = 10_000 * (64u64 << 20) + 1;
        assert_eq!(part_size(huge, 64), (64 << 20) + 1);
        assert!(huge.div_ceil(part_size(huge, 64)) <= MAX_PARTS);
    }

    #[test]
    fn a_shared_credentials_file_is_read_by_profile() {
        let text = "# keys\n[default]\naws_access_key_id = AK1\naws_secret_access_key=SK1\n\n[ops]\naws_access_key_id = AK2\naws_secret_access_key = SK2\naws_session_token = T2\n";
        assert_eq!(
            profile_keys(text, "default"),
            (Some("AK1".into()), Some("SK1".into()), None)
        );
        assert_eq!(
            profile_keys(text, "ops"),
            (Some("AK2".into()), Some("SK2".into()), Some("T2".into()))
        );
        assert_eq!(profile_keys(text, "none"), (None, None, None));
    }
}
