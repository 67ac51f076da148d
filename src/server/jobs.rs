//! Import/export jobs (`/{hub}/jobs`, nh-rest-api.md §4.7) on local files: a hub with
//! `[hub.jobs] directory` exports its registrations (or installations) to a file, or applies an
//! import file to its registry, in the background; `nh::job_xml` is the wire format, the rows
//! are `nh::registration_xml` descriptions or `nh::installation_json` installations.
//!
//! Nothing here touches the network: `ImportFileUri` and `OutputContainerUri` are paths in the
//! jobs directory ([`relative_path`] is the rule; a symbolic link out of it is refused), so a
//! job can never be pointed at a remote URL or a file outside the directory (no SSRF, no
//! traversal). A job's output goes to `<container>/<hub>/<jobId>/Output.txt` and `Failed.txt`,
//! files created new (never overwriting anything) with mode 0600: exports carry Web Push
//! secrets.
//!
//! ```text
//!  POST /jobs --(Manage)--> parse (nh::job_xml) --> paths --> slot (max_running, else 429)
//!     --> spawn_blocking: open the input, create the outputs, record Started (jobs.json)
//!     --> 201 + entry;   job thread: Running --> rows in chunks --> Completed | Failed
//!  GET /jobs, GET /jobs/{id} <-- the records (memory, persisted at submit and at the end)
//! ```
//!
//! Rows are applied through the registry's async writes, [`CHUNK`] at a time on the job's
//! blocking thread, so one group commit covers a chunk and nothing runs on the async workers.
//! The hub's rules hold as for single writes: `max_installations` (a row beyond it fails with
//! `QuotaExceeded`), templates per installation, tags, `apns-topic`. A storage failure
//! (fail-stop registry) fails the whole job, with `Failure` set. A shutdown stops a running job
//! after its current chunk (`Failed`, saying so); a job that was running when the process died
//! is reported `Failed` after the restart. Rows applied before either stay applied.
//!
//! In cluster mode (`[cluster]`) rows go through `devices.rs` to their partitions' owners
//! (the JetStream ack is the durability), an owner that cannot be reached within the route
//! deadline fails the job as a storage failure does (its row "may or may not be applied"),
//! and an export walks the partitions one by one in pages of ids from each owner (progress
//! counts partitions). A job is recorded by the server that accepted it, like its files.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::devices::{Devices, WriteFail};
use super::http::{Fail, Resp};
use super::Hub;
use crate::nh::job_xml::{
    self, JobAction, JobDescription, JobModel, JobRequest, JobStatus, JobType, FAILED_FILE_PATH,
    OUTPUT_FILE_PATH,
};
use crate::nh::registration_xml::{self, Registration, ENTRY_CONTENT_TYPE, FEED_CONTENT_TYPE};
use crate::{Installation, InstallationId, Precondition};

/// Longest row of an import file: one registration or installation, as large as a request
/// body may be (Notification Hubs' 64 KiB, nh-rest-api.md §6.3). A longer row fails alone.
pub(crate) const MAX_ROW_BYTES: usize = 64 * 1024;

/// Rows applied per wait for durability: the registry's group commit makes one fsync of a
/// chunk (docs/operations.md, "Layout on disk"), and a shutdown waits for one chunk at most.
const CHUNK: usize = 256;

/// Rows exported between two progress updates and shutdown checks.
const EXPORT_STEP: u64 = 1024;
/// Ids per listing page of an export in cluster mode (the largest page a listing takes).
const EXPORT_PAGE: usize = 1000;
/// Installations an export in cluster mode reads from their owners at once.
const EXPORT_READS_AT_ONCE: usize = 32;

/// What `Failure` says for a job that was running when the process stopped.
const INTERRUPTED: &str = "the server stopped while this job was running; rows processed \
                           before the stop stay applied (see Output.txt and Failed.txt)";

/// `[hub.jobs]`: import/export jobs on local files (docs/operations.md, "Import/export jobs").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// The directory every `ImportFileUri` and `OutputContainerUri` of the hub's jobs names a
    /// path in (an absolute path; it must exist). Without `[hub.jobs]`, `/jobs` is refused.
    pub directory: PathBuf,
    /// Jobs running at once in the hub (default 1); another submit is refused with 429.
    #[serde(default = "default_max_running")]
    pub max_running: usize,
    /// Largest import file in bytes (default 256 MiB); a larger one is refused with 400.
    #[serde(default = "default_max_input_bytes")]
    pub max_input_bytes: u64,
    /// Most lines an import file may have (default 1,000,000); a job given more fails before
    /// applying any.
    #[serde(default = "default_max_input_lines")]
    pub max_input_lines: u64,
    /// Finished jobs kept in the listing (default 100); older ones are forgotten (their files
    /// stay).
    #[serde(default = "default_max_kept")]
    pub max_kept: usize,
}

fn default_max_running() -> usize {
    1
}

/// 256 MiB: about a million registrations of ~250 bytes (tagcast's choice; Azure documents no
/// limit).
fn default_max_input_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_max_input_lines() -> u64 {
    1_000_000
}

fn default_max_kept() -> usize {
    100
}

impl JobsConfig {
    /// What `tagcast check` verifies: an absolute, existing directory outside `data_dir`, and
    /// limits above 0.
    pub(crate) fn check(&self, hub: &str, data_dir: &Path) -> Result<(), String> {
        let at = |m: String| format!("hub {hub:?} [hub.jobs] {m}");
        for (name, v) in [
            ("max_running", self.max_running as u64),
            ("max_input_bytes", self.max_input_bytes),
            ("max_input_lines", self.max_input_lines),
            ("max_kept", self.max_kept as u64),
        ] {
            if v == 0 {
                return Err(at(format!("{name} must be above 0")));
            }
        }
        if !self.directory.is_absolute() {
            return Err(at(format!(
                "directory {:?} must be an absolute path",
                self.directory
            )));
        }
        let dir = std::fs::canonicalize(&self.directory)
            .map_err(|e| at(format!("directory {:?}: {e}", self.directory)))?;
        if !dir.is_dir() {
            return Err(at(format!(
                "directory {:?} is not a directory",
                self.directory
            )));
        }
        let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        if dir.starts_with(&data) || data.starts_with(&dir) {
            return Err(at(format!(
                "directory {:?} overlaps data_dir {:?}: jobs could read or write the hubs' \
                 stores; use a separate directory",
                self.directory, data_dir
            )));
        }
        Ok(())
    }
}

/// The path, relative to the jobs directory, that a job's `uri` names, or why it names none.
///
/// - `file:///a/b` (also `file:/a/b`, `file://localhost/a/b`): the URI's path, percent-decoded,
///   taken relative to the directory (the directory is the root of `file:` URIs);
/// - `a/b`: a relative path, relative to the directory;
/// - refused: any other scheme (`https://…` blob URLs included: nothing is fetched or
///   written remotely), a `file:` URI naming another host or carrying a query or fragment, an
///   absolute path without `file:`, `..` segments, backslashes, NUL and control characters.
///
/// Empty and `.` segments are dropped, so the result may be empty (the directory itself).
pub(crate) fn relative_path(uri: &str) -> Result<PathBuf, String> {
    let uri = uri.trim();
    let path = if let Some(rest) = uri
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("file:"))
        .map(|_| &uri[5..])
    {
        let path = match rest.strip_prefix("//") {
            Some(r) => {
                let (host, path) = r.split_at(r.find('/').unwrap_or(r.len()));
                if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                    return Err(format!(
                        "names host {:?}: file: URIs here name a path in the jobs directory \
                         (file:///path)",
                        crate::pns::shorten(host, 64)
                    ));
                }
                path
            }
            None => rest,
        };
        if path.contains(['?', '#']) {
            return Err("has a query or fragment: a file: URI here is a path only".into());
        }
        crate::nh::sas::percent_decode(path).ok_or("has a bad percent-encoding")?
    } else if let Some(scheme) = scheme_of(uri) {
        return Err(format!(
            "{scheme}: URLs are not supported: tagcast never fetches or writes a remote URL \
             (blob storage included); name a path in the hub's jobs directory instead \
             (file:///path or path)"
        ));
    } else if uri.starts_with('/') {
        return Err(
            "is an absolute path: write file:///path (relative to the jobs directory) or path"
                .into(),
        );
    } else {
        uri.to_string()
    };
    let mut out = PathBuf::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("has a `..` segment: paths stay inside the jobs directory".into()),
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err("has a control character or backslash in its path".into())
            }
            s => out.push(s),
        }
    }
    Ok(out)
}

/// The scheme of `uri` if it starts with one (RFC 3986 §3.1: a letter, then letters, digits,
/// `+ - .`, then `:`).
fn scheme_of(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut b = scheme.bytes();
    (b.next()?.is_ascii_alphabetic() && b.all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c)))
        .then_some(scheme)
}

/// `rel` as a `file:` URI (what `OutputProperties` report, usable as another job's
/// `ImportFileUri`).
fn file_uri(rel: &Path) -> String {
    let mut out = String::from("file://");
    for seg in rel.iter() {
        out.push('/');
        out.push_str(&crate::nh::sas::encode_uri_component(
            &seg.to_string_lossy(),
        ));
    }
    if out.len() == "file://".len() {
        out.push('/');
    }
    out
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// One job, as kept in memory and in `<data_dir>/<hub>/jobs.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    #[serde(rename = "type", with = "wire::job_type")]
    job_type: JobType,
    #[serde(with = "wire::status")]
    status: JobStatus,
    progress: f64,
    output_container_uri: String,
    #[serde(default)]
    import_file_uri: Option<String>,
    #[serde(default)]
    failure: Option<String>,
    output_file: String,
    failed_file: String,
    created_ms: u64,
    updated_ms: u64,
    /// The key that submitted it (for the audit event of its end).
    #[serde(default)]
    key: Option<String>,
    /// Rows applied (imports) or written (exports).
    #[serde(default)]
    applied: u64,
    /// Rows in Failed.txt.
    #[serde(default)]
    failed_rows: u64,
}

impl Record {
    fn description(&self) -> JobDescription {
        JobDescription {
            id: self.id.clone(),
            job_type: self.job_type,
            status: self.status,
            progress: self.progress,
            output_container_uri: self.output_container_uri.clone(),
            import_file_uri: self.import_file_uri.clone(),
            failure: self.failure.clone(),
            output_properties: vec![
                (OUTPUT_FILE_PATH.into(), self.output_file.clone()),
                (FAILED_FILE_PATH.into(), self.failed_file.clone()),
            ],
            created_at: from_millis(self.created_ms),
            updated_at: from_millis(self.updated_ms),
        }
    }
}

/// The wire names of the job enums in `jobs.json`.
mod wire {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub(super) mod job_type {
        use super::*;
        use crate::nh::job_xml::JobType;

        pub(crate) fn serialize<S: Serializer>(t: &JobType, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(t.name())
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JobType, D::Error> {
            let s = String::deserialize(d)?;
            JobType::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown job type {s:?}")))
        }
    }

    pub(super) mod status {
        use super::*;
        use crate::nh::job_xml::JobStatus;

        pub(crate) fn serialize<S: Serializer>(t: &JobStatus, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(t.name())
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<JobStatus, D::Error> {
            let s = String::deserialize(d)?;
            JobStatus::parse(&s).ok_or_else(|| D::Error::custom(format!("unknown status {s:?}")))
        }
    }
}

/// A hub's jobs: its configuration, the records, the running slots.
pub(crate) struct Jobs {
    cfg: JobsConfig,
    /// The jobs directory, symbolic links resolved: every path a job uses is inside it.
    root: PathBuf,
    /// `<data_dir>/<hub>/jobs.json`.
    store: PathBuf,
    records: Mutex<Vec<Record>>,
    /// Orders the writes of `store` (taken before the snapshot, so a later state is never
    /// overwritten by an earlier one).
    persisting: Mutex<()>,
    /// Admission: a slot per running job, given back just before its end is published (so
    /// a client that sees `Completed` can submit the next job at once).
    running: Arc<Semaphore>,
    /// The jobs' threads, until they have ended and saved their end (shutdown waits for them).
    threads: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl Jobs {
    /// Reads the records a previous run left in `hub_dir` (a job that was not finished is
    /// `Failed` now, see [`INTERRUPTED`]).
    pub(crate) fn open(cfg: &JobsConfig, hub_dir: &Path) -> Result<Jobs, String> {
        let root = std::fs::canonicalize(&cfg.directory)
            .map_err(|e| format!("[hub.jobs] directory {:?}: {e}", cfg.directory))?;
        let store = hub_dir.join("jobs.json");
        let mut records: Vec<Record> = match std::fs::read(&store) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                format!(
                    "{}: {e} (move the file away to start with an empty job list)",
                    store.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", store.display())),
        };
        let now = millis(SystemTime::now());
        let mut interrupted = 0;
        for r in records.iter_mut().filter(|r| !r.status.is_final()) {
            r.status = JobStatus::Failed;
            r.failure = Some(INTERRUPTED.into());
            r.updated_ms = now;
            interrupted += 1;
        }
        let jobs = Jobs {
            cfg: cfg.clone(),
            root,
            store,
            records: Mutex::new(records),
            persisting: Mutex::new(()),
            running: Arc::new(Semaphore::new(cfg.max_running)),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        };
        if interrupted > 0 {
            tracing::warn!(
                jobs = interrupted,
                "jobs that were running when the server stopped are reported Failed"
            );
            jobs.persist()
                .map_err(|e| format!("{}: {e}", jobs.store.display()))?;
        }
        Ok(jobs)
    }

    /// Writes the records to `jobs.json` (a new file renamed over the old one, both synced).
    fn persist(&self) -> std::io::Result<()> {
        let _order = self.persisting.lock();
        let text = serde_json::to_vec(&*self.records.lock()).map_err(std::io::Error::other)?;
        let tmp = self.store.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.store)?;
        if let Some(dir) = self.store.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.records.lock().iter_mut().find(|r| r.id == id) {
            f(r);
            r.updated_ms = millis(SystemTime::now());
        }
    }

    /// Stops running jobs after their current chunk and waits for them, at most `grace`.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock());
        if tokio::time::timeout(grace, futures_util::future::join_all(threads))
            .await
            .is_err()
        {
            tracing::warn!(
                "a job did not stop within the shutdown grace; it is reported Failed at the \
                 next start"
            );
        }
    }

    /// The input file `rel` names, opened, and its length.
    fn open_input(&self, uri: &str, rel: &Path) -> Result<(File, u64), String> {
        let what = |m: String| format!("ImportFileUri {:?} {m}", crate::pns::shorten(uri, 200));
        if rel.as_os_str().is_empty() {
            return Err(what("names the jobs directory, not a file".into()));
        }
        let path = std::fs::canonicalize(self.root.join(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => what("names no file in the jobs directory".into()),
            _ => what(format!("cannot be read: {e}")),
        })?;
        if !path.starts_with(&self.root) {
            return Err(what(
                "leads out of the jobs directory (a symbolic link)".into(),
            ));
        }
        let f = File::open(&path).map_err(|e| what(format!("cannot be read: {e}")))?;
        let meta = f
            .metadata()
            .map_err(|e| what(format!("cannot be read: {e}")))?;
        if !meta.is_file() {
            return Err(what("is not a regular file".into()));
        }
        if meta.len() > self.cfg.max_input_bytes {
            return Err(what(format!(
                "is {} bytes; at most {} are accepted ([hub.jobs] max_input_bytes)",
                meta.len(),
                self.cfg.max_input_bytes
            )));
        }
        Ok((f, meta.len()))
    }

    /// Creates `<container>/<hub>/<id>/` with `Output.txt` and `Failed.txt` (new files).
    /// Returns them and their `file:` URIs.
    fn create_outputs(
        &self,
        uri: &str,
        rel: &Path,
        hub: &str,
        id: &str,
    ) -> Result<([File; 2], [String; 2]), String> {
        let what =
            |m: String| format!("OutputContainerUri {:?} {m}", crate::pns::shorten(uri, 200));
        let container = std::fs::canonicalize(self.root.join(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                what("names no directory in the jobs directory (create the container first)".into())
            }
            _ => what(format!("cannot be used: {e}")),
        })?;
        if !container.starts_with(&self.root) {
            return Err(what(
                "leads out of the jobs directory (a symbolic link)".into(),
            ));
        }
        if !container.is_dir() {
            return Err(what("is not a directory".into()));
        }
        let hub_dir = container.join(hub);
        match std::fs::symlink_metadata(&hub_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(what(format!(
                    "holds {hub:?}, which is not a directory (symbolic links are not followed)"
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match new_dir().create(&hub_dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(what(format!("cannot be written: {e}"))),
                }
            }
            Err(e) => return Err(what(format!("cannot be used: {e}"))),
        }
        let job_dir = hub_dir.join(id);
        new_dir()
            .create(&job_dir)
            .map_err(|e| what(format!("cannot be written: {e}")))?;
        let mut files = Vec::with_capacity(2);
        let mut uris = Vec::with_capacity(2);
        for name in ["Output.txt", "Failed.txt"] {
            files.push(new_file(&job_dir.join(name)).map_err(|e| what(format!("{name}: {e}")))?);
            uris.push(file_uri(&rel.join(hub).join(id).join(name)));
        }
        let [out, failed]: [File; 2] = files
            .try_into()
            .map_err(|_| what("internal: two files".into()))?;
        let [out_uri, failed_uri]: [String; 2] = uris
            .try_into()
            .map_err(|_| what("internal: two files".into()))?;
        Ok(([out, failed], [out_uri, failed_uri]))
    }
}

/// A directory only the server's user can enter.
fn new_dir() -> std::fs::DirBuilder {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b
}

/// A file that did not exist (a link or file there is an error, never followed or
/// overwritten), readable by the server's user only: exports carry Web Push secrets.
fn new_file(p: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(p)
}

fn not_configured(hub: &Hub) -> Fail {
    Fail::new(
        StatusCode::FORBIDDEN,
        format!(
            "import/export jobs are not enabled for hub {}: the server's configuration has no \
             [hub.jobs] directory (docs/operations.md, \"Import/export jobs\")",
            hub.name
        ),
    )
}

/// `/{hub}/jobs…`; the caller checked the Manage right.
pub(crate) async fn route(
    hub: &Arc<Hub>,
    origin: &str,
    method: &Method,
    op: &[&str],
    key: Option<&str>,
    body: Bytes,
) -> Result<Resp, Fail> {
    let Some(jobs) = hub.jobs.clone() else {
        return Err(not_configured(hub));
    };
    let base_url = format!("{origin}/{}", hub.name);
    match (method, op) {
        (&Method::POST, ["jobs"]) => submit(hub, jobs, &base_url, key, &body).await,
        (&Method::GET, ["jobs"]) => {
            let list: Vec<JobDescription> = jobs
                .records
                .lock()
                .iter()
                .map(Record::description)
                .collect();
            Ok(super::http::response(
                StatusCode::OK,
                Some(FEED_CONTENT_TYPE),
                job_xml::job_feed_xml(&list, &base_url, SystemTime::now()),
            ))
        }
        (&Method::GET, ["jobs", id]) => {
            let job = jobs
                .records
                .lock()
                .iter()
                .find(|r| r.id == *id)
                .map(Record::description)
                .ok_or_else(|| {
                    Fail::not_found(format!("no job {:?}", crate::pns::shorten(id, 64)))
                })?;
            Ok(super::http::response(
                StatusCode::OK,
                Some(ENTRY_CONTENT_TYPE),
                job_xml::job_entry_xml(&job, &base_url),
            ))
        }
        _ => Err(Fail::not_found(format!(
            "no operation {method} /{}",
            op.join("/")
        ))),
    }
}

async fn submit(
    hub: &Arc<Hub>,
    jobs: Arc<Jobs>,
    base_url: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<Resp, Fail> {
    let text = std::str::from_utf8(body).map_err(|_| Fail::bad("the body is not UTF-8"))?;
    let req = job_xml::parse_job_request(text).map_err(|e| Fail::bad(e.to_string()))?;
    let out_rel = relative_path(&req.output_container_uri).map_err(|m| {
        Fail::bad(format!(
            "OutputContainerUri {:?} {m}",
            crate::pns::shorten(&req.output_container_uri, 200)
        ))
    })?;
    let in_rel = match (&req.import_file_uri, req.job_type.is_import()) {
        (Some(u), true) => Some(relative_path(u).map_err(|m| {
            Fail::bad(format!(
                "ImportFileUri {:?} {m}",
                crate::pns::shorten(u, 200)
            ))
        })?),
        (None, true) => {
            return Err(Fail::bad(format!(
                "a {} job needs an ImportFileUri",
                req.job_type
            )))
        }
        // NH ignores an import file on an export; so does this server (it is echoed only).
        (_, false) => None,
    };
    if jobs.stopping.load(Ordering::SeqCst) {
        return Err(Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let slot = jobs.running.clone().try_acquire_owned().map_err(|_| {
        Fail::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "hub {} has {} job(s) running ([hub.jobs] max_running); submit again when one \
                 has finished",
                hub.name, jobs.cfg.max_running
            ),
        )
        .retry_after(5)
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    let prepared = {
        let (hub, jobs, id, key) = (
            hub.clone(),
            jobs.clone(),
            id.clone(),
            key.map(str::to_owned),
        );
        tokio::task::spawn_blocking(move || prepare(&hub, &jobs, id, key, req, &out_rel, in_rel))
            .await
            .map_err(Fail::internal)??
    };
    let (record, files) = prepared;
    let entry = job_xml::job_entry_xml(&record.description(), base_url);
    let run = Run {
        jobs: jobs.clone(),
        hub: hub.clone(),
        id: id.clone(),
        job_type: record.job_type,
        files,
        rt: tokio::runtime::Handle::current(),
        slot,
    };
    let thread = tokio::task::spawn_blocking(move || run.run());
    {
        let mut threads = jobs.threads.lock();
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }
    let mut r = super::http::response(StatusCode::CREATED, Some(ENTRY_CONTENT_TYPE), entry);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{base_url}/jobs/{id}?api-version={}",
        crate::nh::API_VERSION
    )) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(r)
}

/// The files a job reads and writes, opened at submit.
struct Files {
    input: Option<(File, u64)>,
    output: File,
    failed: File,
}

/// Opens the input, creates the outputs and records the job (persisted before the answer).
fn prepare(
    hub: &Hub,
    jobs: &Jobs,
    id: String,
    key: Option<String>,
    req: JobRequest,
    out_rel: &Path,
    in_rel: Option<PathBuf>,
) -> Result<(Record, Files), Fail> {
    let input = match (&in_rel, &req.import_file_uri) {
        (Some(rel), Some(uri)) => Some(jobs.open_input(uri, rel).map_err(Fail::bad)?),
        _ => None,
    };
    let ([output, failed], [output_file, failed_file]) = jobs
        .create_outputs(&req.output_container_uri, out_rel, &hub.name, &id)
        .map_err(Fail::bad)?;
    let now = millis(SystemTime::now());
    let record = Record {
        id,
        job_type: req.job_type,
        status: JobStatus::Started,
        progress: 0.0,
        output_container_uri: req.output_container_uri,
        import_file_uri: req.import_file_uri,
        failure: None,
        output_file,
        failed_file,
        created_ms: now,
        updated_ms: now,
        key,
        applied: 0,
        failed_rows: 0,
    };
    {
        let mut records = jobs.records.lock();
        // Bounded: the oldest finished jobs go first (running ones are at most max_running).
        while records.len() >= jobs.cfg.max_kept {
            let Some(i) = records.iter().position(|r| r.status.is_final()) else {
                break;
            };
            records.remove(i);
        }
        records.push(record.clone());
    }
    if let Err(e) = jobs.persist() {
        jobs.records.lock().retain(|r| r.id != record.id);
        return Err(Fail::internal(format!(
            "writing {}: {e}",
            jobs.store.display()
        )));
    }
    Ok((
        record,
        Files {
            input,
            output,
            failed,
        },
    ))
}

/// A submitted job, run on a blocking thread.
struct Run {
    jobs: Arc<Jobs>,
    hub: Arc<Hub>,
    id: String,
    job_type: JobType,
    files: Files,
    /// Drives the registry's async writes from the blocking thread.
    rt: tokio::runtime::Handle,
    /// Held until the job's work is done.
    slot: OwnedSemaphorePermit,
}

/// What a job did.
#[derive(Default)]
struct Counts {
    applied: u64,
    failed: u64,
}

/// One row of an import file, read.
struct Row {
    line: u64,
    /// As given (invalid UTF-8 replaced), for Failed.txt and delete's Output.txt.
    text: String,
    /// What to do, and the line Output.txt gets once it is done; or why it cannot be done.
    parsed: Result<(Op, String), String>,
}

enum Op {
    Write(Box<Installation>, Precondition),
    Delete(InstallationId),
}

impl Run {
    fn run(self) {
        let Run {
            jobs,
            hub,
            id,
            job_type,
            files,
            rt,
            slot,
        } = self;
        jobs.update(&id, |r| r.status = JobStatus::Running);
        let mut counts = Counts::default();
        let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut job = Job {
                jobs: &jobs,
                hub: &hub,
                id: &id,
                job_type,
                rt: &rt,
                output: BufWriter::new(files.output),
                failed: BufWriter::new(files.failed),
                counts: &mut counts,
            };
            let r = match files.input {
                None => job.export(),
                Some((f, len)) => job.import(f, len),
            };
            r.and_then(|()| job.finish())
        }));
        let result = work.unwrap_or_else(|_| {
            Err(
                "the job stopped on an internal error (logged); rows processed before it stay \
                 applied"
                    .into(),
            )
        });
        drop(slot);
        let (status, failure) = match &result {
            Ok(()) => (JobStatus::Completed, None),
            Err(f) => (JobStatus::Failed, Some(f.clone())),
        };
        let mut key = None;
        jobs.update(&id, |r| {
            r.status = status;
            if status == JobStatus::Completed {
                r.progress = 100.0;
            }
            r.failure = failure.clone();
            r.applied = counts.applied;
            r.failed_rows = counts.failed;
            key = r.key.clone();
        });
        if let Err(e) = jobs.persist() {
            tracing::error!(hub = %hub.name, job = %id, error = %e, "the job list could not be saved");
        }
        tracing::info!(
            target: "tagcast::audit",
            hub = %hub.name,
            key = key.as_deref().unwrap_or("-"),
            action = if status == JobStatus::Completed { "job.completed" } else { "job.failed" },
            object = %id,
            job_type = job_type.name(),
            rows_applied = counts.applied,
            rows_failed = counts.failed,
            failure = failure.as_deref().unwrap_or("-"),
            "change"
        );
    }
}

/// A running job's state on its thread.
struct Job<'a> {
    jobs: &'a Jobs,
    hub: &'a Hub,
    id: &'a str,
    job_type: JobType,
    rt: &'a tokio::runtime::Handle,
    output: BufWriter<File>,
    failed: BufWriter<File>,
    counts: &'a mut Counts,
}

impl Job<'_> {
    fn progress(&self, p: f64) {
        // 100 only once the output files are complete.
        self.jobs
            .update(self.id, |r| r.progress = p.clamp(0.0, 99.99));
    }

    fn stopped(&self) -> bool {
        self.jobs.stopping.load(Ordering::SeqCst)
    }

    /// One line of Output.txt for `inst`.
    fn export_line(&self, inst: &Installation) -> String {
        match self.job_type.model {
            JobModel::Registrations => {
                let mut r = Registration::from_installation(inst);
                r.etag = None;
                registration_xml::description_line(&r)
            }
            JobModel::Installations => crate::nh::installation_json::installation_to_json(inst),
        }
    }

    fn export(&mut self) -> Result<(), String> {
        if self.hub.cluster().is_some() {
            return self.export_cluster();
        }
        let registry = self
            .hub
            .registry("import/export jobs")
            .map_err(|f| f.detail().to_owned())?;
        let total = registry.count().max(1) as f64;
        let mut err: Option<String> = None;
        let mut n = 0u64;
        let mut lines = Vec::new();
        // The scan cannot be left early: once an error is set, the rest is skipped cheaply.
        registry.for_each(|inst| {
            if err.is_some() {
                return;
            }
            if n % EXPORT_STEP == 0 && n > 0 {
                if self.stopped() {
                    err = Some(format!(
                        "the server shut down during the export, after {n} rows; Output.txt is \
                         incomplete"
                    ));
                    return;
                }
                // 100 only once the output files are complete.
                self.progress(n as f64 * 100.0 / total);
            }
            lines.push(self.export_line(&inst));
            if lines.len() >= CHUNK {
                match self.write_lines(&mut lines) {
                    Ok(()) => {}
                    Err(e) => err = Some(e),
                }
            }
            n += 1;
        });
        if err.is_none() {
            if let Err(e) = self.write_lines(&mut lines) {
                err = Some(e);
            }
        }
        self.counts.applied = n;
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// An export in cluster mode: partition by partition, pages of ids from the partition's
    /// owner, each page's installations read from it a few at a time. The number of
    /// installations is not known beforehand: progress counts partitions done.
    fn export_cluster(&mut self) -> Result<(), String> {
        let Some(c) = self.hub.cluster() else {
            return Err("internal: a cluster export of a hub without a cluster".into());
        };
        let devices = Devices::of(self.hub);
        let parts = c.partitions();
        for p in 0..parts {
            let mut after: Option<String> = None;
            loop {
                if self.stopped() {
                    return Err(format!(
                        "the server shut down during the export, after {} rows; Output.txt \
                         is incomplete",
                        self.counts.applied
                    ));
                }
                let (ids, more) = self
                    .rt
                    .block_on(c.list_partition(p, after.as_deref(), EXPORT_PAGE))
                    .map_err(|f| format!("listing partition {p} failed: {}", f.detail()))?;
                after = ids.last().cloned();
                let ids: Vec<InstallationId> = ids
                    .into_iter()
                    .filter_map(|id| InstallationId::new(id).ok())
                    .collect();
                let mut lines = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(EXPORT_READS_AT_ONCE) {
                    let reads = self.rt.block_on(futures_util::future::join_all(
                        chunk.iter().map(|id| devices.get_versioned(id)),
                    ));
                    for r in reads {
                        // One deleted since it was listed is left out.
                        let found = r.map_err(|f| {
                            format!("reading an installation failed: {}", f.detail())
                        })?;
                        if let Some((inst, _)) = found {
                            lines.push(self.export_line(&inst));
                        }
                    }
                }
                self.counts.applied += lines.len() as u64;
                self.write_lines(&mut lines)?;
                if !more || after.is_none() {
                    break;
                }
            }
            self.progress(f64::from(p + 1) * 100.0 / f64::from(parts));
        }
        Ok(())
    }

    /// Writes and clears `lines` (Output.txt).
    fn write_lines(&mut self, lines: &mut Vec<String>) -> Result<(), String> {
        for line in lines.drain(..) {
            writeln!(self.output, "{line}")
                .map_err(|e| format!("writing Output.txt failed: {e}"))?;
        }
        Ok(())
    }

    fn import(&mut self, mut f: File, len: u64) -> Result<(), String> {
        let io = |e: std::io::Error| format!("reading the import file failed: {e}");
        let lines = count_lines(&mut f).map_err(io)?;
        if lines > self.jobs.cfg.max_input_lines {
            return Err(format!(
                "the import file has {lines} lines; at most {} are accepted ([hub.jobs] \
                 max_input_lines); nothing was applied",
                self.jobs.cfg.max_input_lines
            ));
        }
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut buf = Vec::new();
        let mut rows = Vec::with_capacity(CHUNK);
        let (mut line, mut read) = (0u64, 0u64);
        loop {
            let next = read_row(&mut reader, &mut buf, MAX_ROW_BYTES).map_err(io)?;
            let eof = next.is_none();
            if let Some((consumed, too_long)) = next {
                line += 1;
                read += consumed as u64;
                if line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    // A UTF-8 byte order mark (.NET's StreamWriter writes one by default).
                    buf.drain(..3);
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                let parsed = if too_long {
                    Err(format!(
                        "the row is {consumed} bytes; at most {MAX_ROW_BYTES} are accepted"
                    ))
                } else if text.trim().is_empty() {
                    continue;
                } else if std::str::from_utf8(&buf).is_err() {
                    Err("the row is not UTF-8".into())
                } else {
                    self.parse_row(text.trim())
                };
                rows.push(Row {
                    line,
                    text: if too_long { String::new() } else { text },
                    parsed,
                });
            }
            if rows.len() >= CHUNK || (eof && !rows.is_empty()) {
                self.apply(std::mem::take(&mut rows))?;
                if self.stopped() && !eof {
                    return Err(format!(
                        "the server shut down during the import; rows up to line {line} were \
                         processed (see Output.txt and Failed.txt), the rest were not"
                    ));
                }
                self.progress(read as f64 * 100.0 / len.max(1) as f64);
            }
            if eof {
                return Ok(());
            }
        }
    }

    /// What a row asks for, checked as the matching single request would be.
    fn parse_row(&self, text: &str) -> Result<(Op, String), String> {
        let action = self.job_type.action;
        let pre = match action {
            JobAction::Create => Precondition::Absent,
            JobAction::Update => Precondition::Exists,
            _ => Precondition::Any,
        };
        let id = |s: &str| InstallationId::new(s).map_err(|e| e.to_string());
        match self.job_type.model {
            JobModel::Registrations => {
                if action == JobAction::Delete {
                    let rid =
                        registration_xml::registration_id_of(text).map_err(|e| e.to_string())?;
                    return Ok((Op::Delete(id(&rid)?), text.to_string()));
                }
                let mut reg =
                    registration_xml::parse_registration(text).map_err(|e| e.to_string())?;
                let rid = match (&reg.registration_id, action) {
                    (Some(r), _) => r.clone(),
                    (None, JobAction::Update) => {
                        return Err("<RegistrationId> is required to update a registration".into())
                    }
                    // A new registration, as POST /registrations makes.
                    (None, _) => super::registrations::new_registration_id(),
                };
                let inst = reg.to_installation(id(&rid)?);
                super::http::check_template_topics(self.hub, &inst)
                    .map_err(|f| f.detail().to_string())?;
                reg.registration_id = Some(rid);
                reg.etag = None;
                Ok((
                    Op::Write(Box::new(inst), pre),
                    registration_xml::description_line(&reg),
                ))
            }
            JobModel::Installations => {
                if action == JobAction::Delete {
                    let v: serde_json::Value = serde_json::from_str(text)
                        .map_err(|e| format!("installation: not JSON: {e}"))?;
                    let iid = v
                        .get("installationId")
                        .and_then(|v| v.as_str())
                        .ok_or("installation: installationId (a string) is required")?;
                    return Ok((Op::Delete(id(iid)?), text.to_string()));
                }
                let inst = crate::nh::installation_json::parse_installation(text.as_bytes(), None)
                    .map_err(|e| e.to_string())?;
                super::http::check_template_topics(self.hub, &inst)
                    .map_err(|f| f.detail().to_string())?;
                Ok((Op::Write(Box::new(inst), pre), text.to_string()))
            }
        }
    }

    /// Applies a chunk with one wait for durability and writes its rows' results in order. A
    /// storage failure ends the job.
    fn apply(&mut self, rows: Vec<Row>) -> Result<(), String> {
        let devices = Devices::of(self.hub);
        let devices = &devices;
        let writes = rows.iter().map(|row| async move {
            match &row.parsed {
                Ok((Op::Write(inst, pre), _)) => Some(
                    devices
                        .upsert_if(Installation::clone(inst), *pre)
                        .await
                        .map(|_| ()),
                ),
                Ok((Op::Delete(id), _)) => Some(
                    devices
                        .delete_if(id, Precondition::Exists)
                        .await
                        .map(|_| ()),
                ),
                Err(_) => None,
            }
        });
        let results = self.rt.block_on(futures_util::future::join_all(writes));
        let mut fatal = None;
        let w = |e: std::io::Error| format!("writing the job's output files failed: {e}");
        for (row, result) in rows.iter().zip(results) {
            let why = match (&row.parsed, result) {
                (Ok((_, out)), Some(Ok(()))) => {
                    writeln!(self.output, "{out}").map_err(w)?;
                    self.counts.applied += 1;
                    continue;
                }
                (Err(why), _) => why.clone(),
                (Ok(_), Some(Err(WriteFail::Precondition(None)))) => {
                    "not found: no registration or installation has this id".into()
                }
                (Ok(_), Some(Err(WriteFail::Precondition(Some(_))))) => {
                    "already exists: a registration or installation has this id".into()
                }
                // The hub's storage failed (single node): not applied. No partition owner
                // answered (cluster): unknown. Either way the job stops here.
                (Ok(_), Some(Err(WriteFail::Unavailable(f)))) => {
                    fatal.get_or_insert_with(|| {
                        format!(
                            "{}; rows before line {} were processed (see Output.txt and \
                             Failed.txt), the rest were not",
                            f.detail(),
                            row.line
                        )
                    });
                    if self.hub.cluster().is_some() {
                        format!(
                            "not acknowledged (may or may not be applied): {}",
                            f.detail()
                        )
                    } else {
                        format!("not applied: {}", f.detail())
                    }
                }
                (Ok(_), Some(Err(WriteFail::Other(f)))) => f.detail().to_owned(),
                (Ok(_), None) => "internal: no result".into(),
            };
            let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
            writeln!(self.failed, "{}\t{}\t{}", row.line, clean(&why), row.text).map_err(w)?;
            self.counts.failed += 1;
        }
        match fatal {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Makes both output files durable.
    fn finish(&mut self) -> Result<(), String> {
        for (name, w) in [
            ("Output.txt", &mut self.output),
            ("Failed.txt", &mut self.failed),
        ] {
            w.flush()
                .and_then(|()| w.get_ref().sync_all())
                .map_err(|e| format!("writing {name} failed: {e}"))?;
        }
        Ok(())
    }
}

/// Lines in `f` (a last line without a newline counts).
fn count_lines(f: &mut File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(lines + u64::from(last != b'\n'));
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
}

/// Reads the next row into `buf` without its line end (`\n` or `\r\n`). Returns the bytes it
/// took from `r` and whether the row was longer than `max` (then `buf` is empty and the rest
/// of the row was skipped, never held); `None` at the end.
fn read_row(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<(usize, bool)>> {
    buf.clear();
    let (mut consumed, mut too_long) = (0usize, false);
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok((consumed > 0).then_some((consumed, too_long)));
        }
        let end = avail.iter().position(|&b| b == b'\n');
        let part = &avail[..end.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let n = end.map_or(avail.len(), |i| i + 1);
        r.consume(n);
        consumed += n;
        if end.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some((consumed, too_long)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_rule() {
        for (uri, want) in [
            ("file:///exports/run1", "exports/run1"),
            ("file:/exports/run1/", "exports/run1"),
            ("FILE://localhost/a/./b", "a/b"),
            ("file:///a%20b/c%2Ed", "a b/c.d"),
            ("in/regs.txt", "in/regs.txt"),
            ("file:///", ""),
            ("./x//y", "x/y"),
        ] {
            assert_eq!(relative_path(uri).unwrap(), Path::new(want), "{uri}");
        }
        for (uri, want) in [
            (
                "https://acct.blob.core.windows.net/c/in.txt?sig=x",
                "https: URLs are not supported",
            ),
            (
                "http://169.254.169.254/latest",
                "http: URLs are not supported",
            ),
            ("ftp://x/y", "ftp: URLs"),
            ("C:\\x", "C: URLs"),
            ("file://evil.example/x", "names host \"evil.example\""),
            ("file:///x?sig=1", "query or fragment"),
            ("file:///a/../../etc/passwd", "`..`"),
            ("a/../b", "`..`"),
            ("file:///a%2F..%2F..%2Fetc", "`..`"),
            ("/etc/passwd", "absolute path"),
            ("file:///a%00b", "control character"),
            ("a\\..\\b", "backslash"),
            ("file:///%zz", "percent-encoding"),
        ] {
            let e = relative_path(uri).unwrap_err();
            assert!(e.contains(want), "{uri}: {e}");
        }
        assert_eq!(file_uri(Path::new("a b/c")), "file:///a%20b/c");
        assert_eq!(file_uri(Path::new("")), "file:///");
        assert_eq!(
            relative_path(&file_uri(Path::new("x y/%/z"))).unwrap(),
            Path::new("x y/%/z")
        );
    }

    #[test]
    fn rows_are_bounded_and_lines_counted() {
        let data = b"one\r\ntwo\n\nthree-is-long\nfour";
        let mut r = std::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some((n, long)) = read_row(&mut r, &mut buf, 8).unwrap() {
            got.push((String::from_utf8(buf.clone()).unwrap(), n, long));
        }
        assert_eq!(
            got,
            [
                ("one".to_string(), 5, false),
                ("two".to_string(), 4, false),
                (String::new(), 1, false),
                (String::new(), 14, true),
                ("four".to_string(), 4, false),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        for (text, n) in [("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("\n\n", 2)] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(
                count_lines(&mut File::open(&p).unwrap()).unwrap(),
                n,
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_configuration_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let cfg = |d: &Path| JobsConfig {
            directory: d.to_path_buf(),
            max_running: 1,
            max_input_bytes: 1,
            max_input_lines: 1,
            max_kept: 1,
        };
        cfg(&jobs).check("h", &data).unwrap();
        for (c, want) in [
            (cfg(Path::new("rel")), "absolute"),
            (cfg(&dir.path().join("none")), "none"),
            (cfg(&data.join("x")), "data"),
            (cfg(dir.path()), "overlaps data_dir"),
            (
                JobsConfig {
                    max_running: 0,
                    ..cfg(&jobs)
                },
                "max_running must be above 0",
            ),
        ] {
            let e = c.check("h", &data).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        std::fs::create_dir_all(data.join("x")).unwrap();
        let e = cfg(&data.join("x")).check("h", &data).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn records_survive_and_unfinished_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JobsConfig {
            directory: dir.path().to_path_buf(),
            max_running: 1,
            max_input_bytes: 10,
            max_input_lines: 10,
            max_kept: 10,
        };
        let hub_dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(&cfg, hub_dir.path()).unwrap();
        let rec = |id: &str, status| Record {
            id: id.into(),
            job_type: JobType::parse("ImportUpsertInstallations").unwrap(),
            status,
            progress: 50.0,
            output_container_uri: "file:///".into(),
            import_file_uri: Some("in.txt".into()),
            failure: None,
            output_file: "file:///h/a/Output.txt".into(),
            failed_file: "file:///h/a/Failed.txt".into(),
            created_ms: 1,
            updated_ms: 2,
            key: Some("k".into()),
            applied: 3,
            failed_rows: 1,
        };
        jobs.records.lock().push(rec("a", JobStatus::Running));
        jobs.records.lock().push(rec("b", JobStatus::Completed));
        jobs.persist().unwrap();
        let again = Jobs::open(&cfg, hub_dir.path()).unwrap();
        let r = again.records.lock().clone();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].status, JobStatus::Failed);
        assert_eq!(r[0].failure.as_deref(), Some(INTERRUPTED));
        assert_eq!(r[1].status, JobStatus::Completed);
        assert_eq!(r[1].applied, 3);
        assert_eq!(
            r[1].description().job_type.name(),
            "ImportUpsertInstallations"
        );
        std::fs::write(hub_dir.path().join("jobs.json"), "{").unwrap();
        let e = Jobs::open(&cfg, hub_dir.path()).err().unwrap();
        assert!(e.contains("move the file away"), "{e}");
    }
}
