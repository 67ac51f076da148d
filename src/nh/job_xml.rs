//! Import/export jobs in Atom XML (nh-rest-api.md §4.7): the `NotificationHubJob` entry the SDK
//! submits, and the entries and feeds it reads back (`submitNotificationHubJob`,
//! `getNotificationHubJob`, `listNotificationHubJobs`, and the `beginSubmit…` poller).
//!
//! Answers follow §3.3: unprefixed elements in NH's namespace, compact, absent values omitted;
//! the one exception the SDK requires is the literal `d3p1:` prefix of the key/value pairs in
//! `InputProperties`/`OutputProperties` (§4.7). Children are written in the order of the .NET
//! data contract (`JobId`, `Progress`, `Type`, `Status`, `OutputContainerUri`,
//! `ImportFileUri`, `Failure`, `OutputProperties`, `CreatedAt`, `UpdatedAt`); the SDK reads
//! them in any order.
//!
//! Job types: Notification Hubs' five registration types (§4.7), and the same five for
//! installations (`ExportInstallations`, `ImportCreateInstallations`, ...), a tagcast extension
//! (one installation JSON per line) that the JS SDK's type does not list but sends unchanged.

use std::time::SystemTime;

use super::registration_xml::ATOM_NAMESPACE;
use super::xml;

/// The namespace of the `d3p1:` key/value pairs (the .NET `Dictionary<string,string>`
/// serialisation, §4.7).
pub const ARRAYS_NAMESPACE: &str = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";
/// `OutputProperties` key of the file listing what a job did.
pub const OUTPUT_FILE_PATH: &str = "OutputFilePath";
/// `OutputProperties` key of the file listing the rows a job could not apply.
pub const FAILED_FILE_PATH: &str = "FailedFilePath";

/// What a job's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobModel {
    /// Registration descriptions in XML, one per line (NH's types).
    Registrations,
    /// Installations in JSON, one per line (tagcast's extension).
    Installations,
}

/// What a job does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobAction {
    /// Writes every registration (or installation) of the hub to the output file.
    Export,
    /// Creates each row; one that exists already fails.
    Create,
    /// Replaces each row; one that does not exist fails.
    Update,
    /// Creates or replaces each row.
    Upsert,
    /// Deletes each row's id; one that does not exist fails.
    Delete,
}

/// A job's `Type`, e.g. `ImportUpsertRegistrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobType {
    /// What it does.
    pub action: JobAction,
    /// On what.
    pub model: JobModel,
}

impl JobType {
    /// Every type, NH's five first.
    pub const ALL: [JobType; 10] = {
        use JobAction::*;
        use JobModel::*;
        const fn t(action: JobAction, model: JobModel) -> JobType {
            JobType { action, model }
        }
        [
            t(Export, Registrations),
            t(Create, Registrations),
            t(Update, Registrations),
            t(Delete, Registrations),
            t(Upsert, Registrations),
            t(Export, Installations),
            t(Create, Installations),
            t(Update, Installations),
            t(Delete, Installations),
            t(Upsert, Installations),
        ]
    };

    /// The wire name (`ExportRegistrations`, `ImportCreateInstallations`, ...).
    pub fn name(self) -> &'static str {
        use JobAction::*;
        use JobModel::*;
        match (self.action, self.model) {
            (Export, Registrations) => "ExportRegistrations",
            (Create, Registrations) => "ImportCreateRegistrations",
            (Update, Registrations) => "ImportUpdateRegistrations",
            (Upsert, Registrations) => "ImportUpsertRegistrations",
            (Delete, Registrations) => "ImportDeleteRegistrations",
            (Export, Installations) => "ExportInstallations",
            (Create, Installations) => "ImportCreateInstallations",
            (Update, Installations) => "ImportUpdateInstallations",
            (Upsert, Installations) => "ImportUpsertInstallations",
            (Delete, Installations) => "ImportDeleteInstallations",
        }
    }

    /// Reads a wire name (exact case, as the SDKs send it).
    pub fn parse(s: &str) -> Option<JobType> {
        JobType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Whether the job reads an import file.
    pub fn is_import(self) -> bool {
        self.action != JobAction::Export
    }
}

impl std::fmt::Display for JobType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job's `Status` (§4.7; the SDK's poller stops at `Completed` or `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Accepted, not running yet.
    Started,
    /// Running.
    Running,
    /// Finished; its output files are complete.
    Completed,
    /// Stopped early; `Failure` says why.
    Failed,
}

impl JobStatus {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Started => "Started",
            JobStatus::Running => "Running",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Started,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|j| j.name() == s)
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

/// A submitted job, as read from `POST /jobs` (fields an answer carries, such as `JobId` or
/// `Status`, are ignored in a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// `Type`.
    pub job_type: JobType,
    /// `OutputContainerUri` as written (the server decides what it may name).
    pub output_container_uri: String,
    /// `ImportFileUri` as written, if given.
    pub import_file_uri: Option<String>,
}

/// Why a job body was refused (answer 400 with the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job: {0}")]
pub struct JobXmlError(String);

fn jerr<T>(m: impl Into<String>) -> Result<T, JobXmlError> {
    Err(JobXmlError(m.into()))
}

/// Parses a `POST /jobs` body: an Atom `<entry>` whose `<content>` holds a
/// `<NotificationHubJob>` (what the SDK sends), or a bare `<NotificationHubJob>`.
pub fn parse_job_request(body: &str) -> Result<JobRequest, JobXmlError> {
    let root = xml::parse(body).map_err(|e| JobXmlError(format!("not well-formed XML: {e}")))?;
    let job = if root.name == "entry" {
        let Some(content) = root.child("content") else {
            return jerr("<entry> has no <content>");
        };
        match content.children.as_slice() {
            [j] => j,
            [] => return jerr("<content> holds no <NotificationHubJob>"),
            _ => return jerr("<content> must hold exactly one <NotificationHubJob>"),
        }
    } else {
        &root
    };
    if job.name != "NotificationHubJob" {
        return jerr(format!(
            "<{}> is not a <NotificationHubJob>",
            job.name.chars().take(80).collect::<String>()
        ));
    }
    let text = |name: &str| {
        job.child(name)
            .map(|e| e.text.trim())
            .filter(|t| !t.is_empty())
    };
    let Some(kind) = text("Type") else {
        return jerr("<Type> is required");
    };
    let Some(job_type) = JobType::parse(kind) else {
        let known: Vec<&str> = JobType::ALL.iter().map(|t| t.name()).collect();
        return jerr(format!(
            "unknown <Type> {:?} (known: {})",
            kind.chars().take(80).collect::<String>(),
            known.join(", ")
        ));
    };
    let Some(output) = text("OutputContainerUri") else {
        return jerr("<OutputContainerUri> is required");
    };
    Ok(JobRequest {
        job_type,
        output_container_uri: output.to_string(),
        import_file_uri: text("ImportFileUri").map(str::to_string),
    })
}

/// A job as answered: what `getNotificationHubJob` and the listing read.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDescription {
    /// `JobId`.
    pub id: String,
    /// `Type`.
    pub job_type: JobType,
    /// `Status`.
    pub status: JobStatus,
    /// `Progress`, 0 to 100.
    pub progress: f64,
    /// `OutputContainerUri`.
    pub output_container_uri: String,
    /// `ImportFileUri`.
    pub import_file_uri: Option<String>,
    /// `Failure`: why a `Failed` job stopped.
    pub failure: Option<String>,
    /// `OutputProperties` (`OutputFilePath`, `FailedFilePath`).
    pub output_properties: Vec<(String, String)>,
    /// `CreatedAt`.
    pub created_at: SystemTime,
    /// `UpdatedAt`.
    pub updated_at: SystemTime,
}

fn job_xml(out: &mut String, j: &JobDescription) {
    out.push_str("<NotificationHubJob xmlns=\"");
    out.push_str(super::notification_xml::NH_NAMESPACE);
    out.push_str("\" xmlns:i=\"");
    out.push_str(super::notification_xml::XSI_NAMESPACE);
    out.push_str("\">");
    xml::leaf(out, "JobId", &j.id);
    let progress = if j.progress.is_finite() {
        j.progress.clamp(0.0, 100.0)
    } else {
        0.0
    };
    xml::leaf(out, "Progress", &format!("{progress:.2}"));
    xml::leaf(out, "Type", j.job_type.name());
    xml::leaf(out, "Status", j.status.name());
    xml::leaf(out, "OutputContainerUri", &j.output_container_uri);
    if let Some(i) = &j.import_file_uri {
        xml::leaf(out, "ImportFileUri", i);
    }
    if let Some(f) = &j.failure {
        xml::leaf(out, "Failure", f);
    }
    if !j.output_properties.is_empty() {
        out.push_str("<OutputProperties xmlns:d3p1=\"");
        out.push_str(ARRAYS_NAMESPACE);
        out.push_str("\">");
        for (k, v) in &j.output_properties {
            out.push_str("<d3p1:KeyValueOfstringstring>");
            xml::leaf(out, "d3p1:Key", k);
            xml::leaf(out, "d3p1:Value", v);
            out.push_str("</d3p1:KeyValueOfstringstring>");
        }
        out.push_str("</OutputProperties>");
    }
    xml::leaf(
        out,
        "CreatedAt",
        &crate::time::rfc3339::format(j.created_at),
    );
    xml::leaf(
        out,
        "UpdatedAt",
        &crate::time::rfc3339::format(j.updated_at),
    );
    out.push_str("</NotificationHubJob>");
}

/// `base_url` is `https://host[:port]/{hub}` (no trailing slash).
fn self_url(base_url: &str, id: &str) -> String {
    format!(
        "{base_url}/jobs/{}?api-version={}",
        super::sas::encode_uri_component(id),
        super::API_VERSION
    )
}

fn entry_into(out: &mut String, j: &JobDescription, base_url: &str, in_feed: bool) {
    out.push_str("<entry");
    if !in_feed {
        out.push_str(" xmlns=\"");
        out.push_str(ATOM_NAMESPACE);
        out.push('"');
    }
    out.push('>');
    let url = self_url(base_url, &j.id);
    xml::leaf(out, "id", &url);
    out.push_str("<title type=\"text\">");
    xml::escape_into(out, &j.id);
    out.push_str("</title>");
    xml::leaf(
        out,
        "published",
        &crate::time::rfc3339::format(j.created_at),
    );
    xml::leaf(out, "updated", &crate::time::rfc3339::format(j.updated_at));
    out.push_str("<link rel=\"self\" href=\"");
    xml::escape_into(out, &url);
    out.push_str("\"/><content type=\"application/xml\">");
    job_xml(out, j);
    out.push_str("</content></entry>");
}

/// One job as an Atom entry (answer of submit and get). `base_url`: `https://host[:port]/{hub}`.
pub fn job_entry_xml(j: &JobDescription, base_url: &str) -> String {
    let mut out = String::with_capacity(1024);
    entry_into(&mut out, j, base_url, false);
    out
}

/// Jobs as an Atom feed (answer of the listing).
pub fn job_feed_xml(jobs: &[JobDescription], base_url: &str, updated: SystemTime) -> String {
    let mut out = String::with_capacity(256 + 1024 * jobs.len());
    out.push_str("<feed xmlns=\"");
    out.push_str(ATOM_NAMESPACE);
    out.push_str("\"><title type=\"text\">Jobs</title>");
    let url = format!("{base_url}/jobs?api-version={}", super::API_VERSION);
    xml::leaf(&mut out, "id", &url);
    xml::leaf(&mut out, "updated", &crate::time::rfc3339::format(updated));
    out.push_str("<link rel=\"self\" href=\"");
    xml::escape_into(&mut out, &url);
    out.push_str("\"/>");
    for j in jobs {
        entry_into(&mut out, j, base_url, true);
    }
    out.push_str("</feed>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// What the JS SDK 2.1 sends (nh-rest-api.md §4.7 [TEST]).
    const SDK_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><entry xmlns=\"http://www.w3.org/2005/Atom\"><updated>2024-01-01T00:00:00.000Z</updated><content type=\"application/xml\">\
<NotificationHubJob xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
<Type>ImportUpsertRegistrations</Type><OutputContainerUri><![CDATA[https://c/out?sig=a&b=c]]></OutputContainerUri><ImportFileUri><![CDATA[https://c/in.txt?sig=x]]></ImportFileUri>\
</NotificationHubJob></content></entry>";

    #[test]
    fn the_sdk_body_reads() {
        let r = parse_job_request(SDK_BODY).unwrap();
        assert_eq!(r.job_type.name(), "ImportUpsertRegistrations");
        assert_eq!(r.job_type.action, JobAction::Upsert);
        assert_eq!(r.output_container_uri, "https://c/out?sig=a&b=c");
        assert_eq!(r.import_file_uri.as_deref(), Some("https://c/in.txt?sig=x"));
        let bare = "<NotificationHubJob><Type>ExportInstallations</Type><OutputContainerUri>file:///x</OutputContainerUri></NotificationHubJob>";
        let r = parse_job_request(bare).unwrap();
        assert_eq!(r.job_type.model, JobModel::Installations);
        assert!(!r.job_type.is_import());
        assert_eq!(r.import_file_uri, None);
    }

    #[test]
    fn refusals_name_the_problem() {
        for (body, want) in [
            ("<entry>", "not well-formed"),
            ("<entry/>", "no <content>"),
            ("<entry><content/></entry>", "holds no"),
            ("<entry><content><a/><b/></content></entry>", "exactly one"),
            ("<Job/>", "is not a <NotificationHubJob>"),
            ("<NotificationHubJob/>", "<Type> is required"),
            (
                "<NotificationHubJob><Type>ExportEverything</Type></NotificationHubJob>",
                "unknown <Type> \"ExportEverything\" (known: ExportRegistrations,",
            ),
            (
                "<NotificationHubJob><Type>ExportRegistrations</Type></NotificationHubJob>",
                "<OutputContainerUri> is required",
            ),
        ] {
            let e = parse_job_request(body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn names_round_trip() {
        for t in JobType::ALL {
            assert_eq!(JobType::parse(t.name()), Some(t));
        }
        assert_eq!(JobType::parse("exportregistrations"), None);
        for s in ["Started", "Running", "Completed", "Failed"] {
            assert_eq!(JobStatus::parse(s).unwrap().name(), s);
        }
    }

    fn job() -> JobDescription {
        JobDescription {
            id: "j1".into(),
            job_type: JobType::parse("ExportRegistrations").unwrap(),
            status: JobStatus::Failed,
            progress: 12.5,
            output_container_uri: "file:///out".into(),
            import_file_uri: None,
            failure: Some("disk <full>".into()),
            output_properties: vec![
                (
                    OUTPUT_FILE_PATH.into(),
                    "file:///out/h/j1/Output.txt".into(),
                ),
                (
                    FAILED_FILE_PATH.into(),
                    "file:///out/h/j1/Failed.txt".into(),
                ),
            ],
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            updated_at: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        }
    }

    #[test]
    fn entry_byte_exact() {
        assert_eq!(
            job_entry_xml(&job(), "https://localhost:8443/h"),
            "<entry xmlns=\"http://www.w3.org/2005/Atom\"><id>https://localhost:8443/h/jobs/j1?api-version=2020-06</id>\
<title type=\"text\">j1</title><published>2023-11-14T22:13:20Z</published><updated>2023-11-14T22:13:21Z</updated>\
<link rel=\"self\" href=\"https://localhost:8443/h/jobs/j1?api-version=2020-06\"/><content type=\"application/xml\">\
<NotificationHubJob xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\">\
<JobId>j1</JobId><Progress>12.50</Progress><Type>ExportRegistrations</Type><Status>Failed</Status>\
<OutputContainerUri>file:///out</OutputContainerUri><Failure>disk &lt;full&gt;</Failure>\
<OutputProperties xmlns:d3p1=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\">\
<d3p1:KeyValueOfstringstring><d3p1:Key>OutputFilePath</d3p1:Key><d3p1:Value>file:///out/h/j1/Output.txt</d3p1:Value></d3p1:KeyValueOfstringstring>\
<d3p1:KeyValueOfstringstring><d3p1:Key>FailedFilePath</d3p1:Key><d3p1:Value>file:///out/h/j1/Failed.txt</d3p1:Value></d3p1:KeyValueOfstringstring>\
</OutputProperties><CreatedAt>2023-11-14T22:13:20Z</CreatedAt><UpdatedAt>2023-11-14T22:13:21Z</UpdatedAt>\
</NotificationHubJob></content></entry>"
        );
    }

    #[test]
    fn feeds_hold_entries_that_read_back() {
        let mut other = job();
        other.id = "j2".into();
        other.status = JobStatus::Running;
        other.progress = f64::NAN;
        other.failure = None;
        let feed = job_feed_xml(&[job(), other], "https://h/x", UNIX_EPOCH);
        let root = xml::parse(&feed).unwrap();
        let entries: Vec<_> = root.children_named("entry").collect();
        assert_eq!(entries.len(), 2);
        let j2 = &entries[1].child("content").unwrap().children[0];
        assert_eq!(j2.child("JobId").unwrap().text, "j2");
        assert_eq!(j2.child("Progress").unwrap().text, "0.00");
        assert!(j2.child("Failure").is_none());
        // A job entry is a valid request body too (answer-only fields are ignored).
        let back = parse_job_request(&job_entry_xml(&job(), "https://h/x")).unwrap();
        assert_eq!(back.job_type, job().job_type);
        assert_eq!(back.output_container_uri, "file:///out");
        assert_eq!(
            xml::parse(&job_feed_xml(&[], "https://h/x", UNIX_EPOCH))
                .unwrap()
                .children_named("entry")
                .count(),
            0
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse_job_request(&s);
        }
    }
}
