//! Import/export jobs (`/{hub}/jobs`, nh-rest-api.md §4.7, audit F2) through raw HTTP/1.1 on
//! loopback: export → import into a second hub (registrations and installations), every import
//! type, bad rows in Failed.txt with the rest applied, the hub's quota, the path rule (nothing
//! read or written outside the jobs directory), rights, a hub without `[hub.jobs]`, the
//! running-job and listing limits, progress polling, and a restart during a job.

mod common;
mod rest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{apns_token, eventually};
use rest::{apns_inst, inst_path, job_body, sas, Answer, Env, Setup, HUB, KEY};
use tagcast::nh::notification_xml::{NH_NAMESPACE, XSI_NAMESPACE};
use tagcast::server::Server;

/// Secret of hub `two`'s key `full` (hubs may not share secrets).
const KEY_TWO: &str = "c2Vjb25kLWh1Yi1vZi10aGUtam9icy10ZXN0cy1rZXk";
/// Secret of the key `send` (Send only) some tests add to hub `ops`.
const SEND_KEY: &str = "c2VuZC1vbmx5LWtleS1vZi10aGUtam9icy10ZXN0cw";

/// A server whose hub `ops` has `[hub.jobs]` in a fresh directory, with `jobs_extra` lines in
/// that table and `more` TOML after it (`[hub.limits]`, another hub).
struct Jobs {
    env: Env,
    dir: tempfile::TempDir,
}

fn jobs_table(dir: &Path, extra: &str) -> String {
    format!(
        "[[hub.key]]\nname = \"send\"\nkey = \"{SEND_KEY}\"\nrights = [\"Send\"]\n\
         [hub.jobs]\ndirectory = \"{}\"\n{extra}\n",
        dir.display()
    )
}

async fn start(jobs_extra: &str, more: &str) -> Jobs {
    start_with(jobs_extra, |_| more.to_owned()).await
}

/// [`start`], with TOML after the jobs table made from the jobs directory.
async fn start_with(jobs_extra: &str, more: impl FnOnce(&Path) -> String) -> Jobs {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let hub = format!("{}{}", jobs_table(dir.path(), jobs_extra), more(dir.path()));
    let env = Env::start(Setup {
        hub,
        ..Setup::default()
    })
    .await;
    Jobs { env, dir }
}

/// The `[[hub]]` of a second hub `two` with its own jobs table (same directory).
fn hub_two(dir: &Path) -> String {
    format!(
        "[[hub]]\nname = \"two\"\n[[hub.key]]\nname = \"full\"\nkey = \"{KEY_TWO}\"\n\
         rights = [\"Listen\", \"Send\", \"Manage\"]\n[hub.jobs]\ndirectory = \"{}\"\n",
        dir.display()
    )
}

fn jobs_path(hub: &str, rest: &str) -> String {
    format!("/{hub}/jobs{rest}?api-version=2020-06")
}

/// Every `<tag>…</tag>` text in `xml`, in order.
fn all_of(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|r| r.split_once(close.as_str()).map(|(v, _)| v.to_owned()))
        .collect()
}

fn one_of(xml: &str, tag: &str) -> String {
    let all = all_of(xml, tag);
    assert_eq!(all.len(), 1, "one <{tag}> in {xml}");
    all[0].clone()
}

/// A job as read from its entry.
#[derive(Debug, Clone)]
struct JobView {
    id: String,
    status: String,
    progress: f64,
    failure: Option<String>,
    output: String,
    failed: String,
}

fn job_view(entry: &str) -> JobView {
    let values = all_of(entry, "d3p1:Value");
    let keys = all_of(entry, "d3p1:Key");
    assert_eq!(keys, ["OutputFilePath", "FailedFilePath"], "{entry}");
    JobView {
        id: one_of(entry, "JobId"),
        status: one_of(entry, "Status"),
        progress: one_of(entry, "Progress").parse().unwrap(),
        failure: all_of(entry, "Failure").pop(),
        output: values[0].clone(),
        failed: values[1].clone(),
    }
}

impl Jobs {
    /// Submits a job to `hub` with `auth`; returns the answer.
    async fn submit_as(
        &self,
        hub: &str,
        auth: &(&'static str, String),
        ty: &str,
        out: &str,
        input: Option<&str>,
    ) -> Answer {
        self.env
            .call(
                "POST",
                &jobs_path(hub, ""),
                std::slice::from_ref(auth),
                job_body(ty, out, input).as_bytes(),
            )
            .await
    }

    /// Submits a job to hub `ops` with the full key; panics unless 201; checks the answer's
    /// shape and returns the job.
    async fn submit(&self, ty: &str, out: &str, input: Option<&str>) -> JobView {
        self.submit_ok(HUB, &self.env.full, ty, out, input).await
    }

    async fn submit_ok(
        &self,
        hub: &str,
        auth: &(&'static str, String),
        ty: &str,
        out: &str,
        input: Option<&str>,
    ) -> JobView {
        let a = self.submit_as(hub, auth, ty, out, input).await;
        assert_eq!(a.status, 201, "{ty}: {a:?}");
        let job = job_view(&a.body);
        assert_eq!(one_of(&a.body, "Type"), ty);
        let loc = a.header("Location").expect("Location");
        assert_eq!(
            loc,
            format!(
                "http://{}/{hub}/jobs/{}?api-version=2020-06",
                self.env.addr, job.id
            ),
            "an absolute Location naming the job"
        );
        job
    }

    async fn get(&self, hub: &str, auth: &(&'static str, String), id: &str) -> Answer {
        self.env
            .call(
                "GET",
                &jobs_path(hub, &format!("/{id}")),
                std::slice::from_ref(auth),
                b"",
            )
            .await
    }

    /// Polls the job until it ends; returns it and every progress seen on the way.
    async fn wait(
        &self,
        hub: &str,
        auth: &(&'static str, String),
        id: &str,
    ) -> (JobView, Vec<f64>) {
        let mut seen = Vec::new();
        let job = eventually(Duration::from_secs(60), "the job ends", async || {
            let a = self.get(hub, auth, id).await;
            if a.status != 200 {
                return Err(format!("{a:?}"));
            }
            let j = job_view(&a.body);
            seen.push(j.progress);
            match j.status.as_str() {
                "Completed" | "Failed" => Ok(j),
                "Started" | "Running" => Err(format!("{j:?}")),
                other => panic!("status {other:?}: {}", a.body),
            }
        })
        .await;
        (job, seen)
    }

    /// Submits to `ops` and waits; panics unless the job completes.
    async fn run(&self, ty: &str, out: &str, input: Option<&str>) -> JobView {
        let job = self.submit(ty, out, input).await;
        let (done, _) = self.wait(HUB, &self.env.full, &job.id).await;
        assert_eq!(done.status, "Completed", "{done:?}");
        assert_eq!(done.progress, 100.0);
        done
    }

    /// The local file a `file:` URI of a job names.
    fn file(&self, uri: &str) -> PathBuf {
        let rel = uri.strip_prefix("file:///").expect("a file: URI");
        self.dir.path().join(rel)
    }

    fn lines(&self, uri: &str) -> Vec<String> {
        std::fs::read_to_string(self.file(uri))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Writes an import file `name` in the jobs directory; returns its URI.
    fn input(&self, name: &str, rows: &[String]) -> String {
        let mut text = rows.join("\n");
        text.push('\n');
        std::fs::write(self.dir.path().join(name), text).unwrap();
        format!("file:///{name}")
    }

    /// `GET /installations/{id}` of `hub` as JSON, without the fields a write sets.
    async fn installation(
        &self,
        hub: &str,
        auth: &(&'static str, String),
        id: &str,
    ) -> Option<serde_json::Value> {
        let a = self
            .env
            .call(
                "GET",
                &format!("/{hub}/installations/{id}?api-version=2020-06"),
                std::slice::from_ref(auth),
                b"",
            )
            .await;
        if a.status == 404 {
            return None;
        }
        assert_eq!(a.status, 200, "{a:?}");
        let mut v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v.as_object_mut().unwrap().remove("lastUpdate");
        Some(v)
    }
}

/// One registration description per line, as NH's import files hold them.
fn apple_row(id: Option<&str>, i: u64, tags: &str) -> String {
    let rid = id
        .map(|r| format!("<RegistrationId>{r}</RegistrationId>"))
        .unwrap_or_default();
    format!(
        "<AppleRegistrationDescription xmlns=\"{NH_NAMESPACE}\" xmlns:i=\"{XSI_NAMESPACE}\">{rid}\
         <Tags>{tags}</Tags><DeviceToken>{}</DeviceToken></AppleRegistrationDescription>",
        apns_token(i)
    )
}

fn tags_of(v: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    t.sort();
    t
}

fn web_push_inst(id: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut p = [7u8; 65];
    p[0] = 4;
    serde_json::json!({
        "installationId": id,
        "platform": "browser",
        "pushChannel": {"endpoint": "https://push.example.com/sub/1", "p256dh": b64.encode(p), "auth": b64.encode([3u8; 16])},
        "tags": ["web"],
    })
    .to_string()
}

fn template_inst(id: &str, i: u64, user: bool, templates: usize) -> String {
    let mut t = serde_json::Map::new();
    for n in 0..templates {
        t.insert(
            format!("t{n}"),
            serde_json::json!({"body": "{\"aps\":\n{\"alert\":\"$(m)\"}}", "tags": [format!("tt{n}")]}),
        );
    }
    let mut v = serde_json::json!({
        "installationId": id,
        "platform": "apns",
        "pushChannel": apns_token(i),
        "tags": ["a", "b"],
        "templates": t,
    });
    if user {
        v["userId"] = "user-1".into();
    }
    v.to_string()
}

// Export a hub's registrations, import the file into a second hub: the same devices, tags and
// templates, Web Push secrets included; the export file is one description per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_export_then_import_into_a_second_hub() {
    // Hub two shares the jobs directory.
    let j = start_with("", hub_two).await;
    let two = sas(j.env.addr, "full", KEY_TWO);
    j.env.put_apns("plain", 1, &["t1", "t2"]).await;
    let a = j
        .env
        .full("PUT", &inst_path("web"), web_push_inst("web").as_bytes())
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let a = j
        .env
        .full(
            "PUT",
            &inst_path("tpl"),
            template_inst("tpl", 2, false, 1).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");

    let export = j.run("ExportRegistrations", "file:///out", None).await;
    assert!(
        export
            .output
            .starts_with(&format!("file:///out/{HUB}/{}/", export.id)),
        "{export:?}"
    );
    let rows = j.lines(&export.output);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.contains("RegistrationDescription")));
    assert!(j.lines(&export.failed).is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(j.file(&export.output))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "exports carry secrets: owner-only, not {mode:o}"
        );
    }

    // The export's OutputFilePath is a valid ImportFileUri.
    let import = j
        .submit_ok(
            "two",
            &two,
            "ImportCreateRegistrations",
            "file:///out",
            Some(&export.output),
        )
        .await;
    let (done, _) = j.wait("two", &two, &import.id).await;
    assert_eq!(done.status, "Completed", "{done:?}");
    assert!(done.output.starts_with("file:///out/two/"), "{done:?}");
    assert_eq!(j.lines(&done.output).len(), 3);
    assert!(
        j.lines(&done.failed).is_empty(),
        "{:?}",
        j.lines(&done.failed)
    );
    for id in ["plain", "web", "tpl"] {
        let a = j.installation(HUB, &j.env.full, id).await.unwrap();
        let b = j
            .installation("two", &two, id)
            .await
            .unwrap_or_else(|| panic!("{id} was not imported"));
        assert_eq!(a["platform"], b["platform"], "{id}");
        assert_eq!(a["pushChannel"], b["pushChannel"], "{id}: secrets included");
        assert_eq!(tags_of(&a), tags_of(&b), "{id}");
        assert_eq!(
            a["templates"]["t0"]["body"], b["templates"]["t0"]["body"],
            "{id}: a multi-line template body survives its one-line row"
        );
    }
    // Importing the same file again creates nothing: every row exists.
    let again = j
        .submit_ok(
            "two",
            &two,
            "ImportCreateRegistrations",
            "out",
            Some(&export.output),
        )
        .await;
    let (again, _) = j.wait("two", &two, &again.id).await;
    assert_eq!(again.status, "Completed");
    assert!(j.lines(&again.output).is_empty());
    let failed = j.lines(&again.failed);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed.iter().all(|l| l.contains("already exists")),
        "{failed:?}"
    );
    j.env.server.shutdown().await;
}

// ExportInstallations → ImportUpsertInstallations (tagcast's extension) is lossless: user ids
// and several templates, which a registration cannot carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_round_trip_losslessly() {
    let j = start("", "").await;
    j.env.put_apns("p", 1, &["x"]).await;
    for (id, body) in [
        ("multi", template_inst("multi", 2, true, 3)),
        ("web", web_push_inst("web")),
    ] {
        let a = j.env.full("PUT", &inst_path(id), body.as_bytes()).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    let export = j.run("ExportInstallations", "out", None).await;
    let rows = j.lines(&export.output);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let before = [
        j.installation(HUB, &j.env.full, "p").await.unwrap(),
        j.installation(HUB, &j.env.full, "multi").await.unwrap(),
        j.installation(HUB, &j.env.full, "web").await.unwrap(),
    ];
    // Wipe the hub with the same file, then bring it back.
    let del = j
        .run("ImportDeleteInstallations", "out", Some(&export.output))
        .await;
    assert_eq!(j.lines(&del.output).len(), 3);
    for id in ["p", "multi", "web"] {
        assert!(j.installation(HUB, &j.env.full, id).await.is_none(), "{id}");
    }
    let up = j
        .run("ImportUpsertInstallations", "out", Some(&export.output))
        .await;
    assert_eq!(
        j.lines(&up.output),
        rows,
        "Output.txt: the rows applied, as given"
    );
    for (id, b) in ["p", "multi", "web"].iter().zip(&before) {
        let a = j.installation(HUB, &j.env.full, id).await.unwrap();
        assert_eq!(&a, b, "{id}");
    }
    assert_eq!(before[1]["userId"], "user-1");
    assert_eq!(before[1]["templates"].as_object().unwrap().len(), 3);
    j.env.server.shutdown().await;
}

// Each import type does what its name says, row by row; a row it cannot apply is in
// Failed.txt with its line number and the reason, and the others are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_import_type_applies_its_rows() {
    let j = start("", "").await;
    j.env.put_apns("existing", 9, &["old"]).await;
    let full = j.env.full.clone();

    let create = j.input(
        "create.txt",
        &[
            apple_row(Some("r1"), 1, "a"),
            apple_row(None, 2, "fresh"),
            apple_row(Some("existing"), 3, "x"),
        ],
    );
    let job = j
        .run("ImportCreateRegistrations", "out", Some(&create))
        .await;
    let out = j.lines(&job.output);
    assert_eq!(out.len(), 2, "{out:?}");
    let new_id = all_of(&out[1], "RegistrationId").pop().unwrap();
    assert!(new_id.ends_with("-1") && new_id.contains('-'), "{new_id}");
    let failed = j.lines(&job.failed);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("3\talready exists"), "{failed:?}");
    assert!(failed[0].ends_with(&apple_row(Some("existing"), 3, "x")));
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "r1").await.unwrap()),
        ["a"]
    );
    assert_eq!(
        tags_of(&j.installation(HUB, &full, &new_id).await.unwrap()),
        ["fresh"]
    );
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "existing").await.unwrap()),
        ["old"],
        "a create never replaces"
    );

    let update = j.input(
        "update.txt",
        &[
            apple_row(Some("r1"), 1, "b"),
            apple_row(Some("ghost"), 4, "x"),
            apple_row(None, 5, "x"),
        ],
    );
    let job = j
        .run("ImportUpdateRegistrations", "out", Some(&update))
        .await;
    assert_eq!(j.lines(&job.output).len(), 1);
    let failed = j.lines(&job.failed);
    assert!(failed[0].starts_with("2\tnot found"), "{failed:?}");
    assert!(
        failed[1].starts_with("3\t<RegistrationId> is required"),
        "{failed:?}"
    );
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "r1").await.unwrap()),
        ["b"]
    );
    assert!(
        j.installation(HUB, &full, "ghost").await.is_none(),
        "an update never creates"
    );

    let upsert = j.input(
        "upsert.txt",
        &[
            apple_row(Some("ghost"), 4, "g"),
            apple_row(Some("r1"), 1, "c"),
        ],
    );
    let job = j
        .run("ImportUpsertRegistrations", "out", Some(&upsert))
        .await;
    assert_eq!(j.lines(&job.output).len(), 2);
    assert!(j.lines(&job.failed).is_empty());
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "ghost").await.unwrap()),
        ["g"]
    );
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "r1").await.unwrap()),
        ["c"]
    );

    // A delete row needs only the id.
    let delete = j.input(
        "delete.txt",
        &[
            "<AppleRegistrationDescription><RegistrationId>r1</RegistrationId></AppleRegistrationDescription>".to_owned(),
            apple_row(Some("ghost"), 4, "g"),
            apple_row(Some("never"), 6, "g"),
        ],
    );
    let job = j
        .run("ImportDeleteRegistrations", "out", Some(&delete))
        .await;
    assert_eq!(j.lines(&job.output).len(), 2);
    let failed = j.lines(&job.failed);
    assert_eq!(failed.len(), 1);
    assert!(failed[0].starts_with("3\tnot found"), "{failed:?}");
    assert!(j.installation(HUB, &full, "r1").await.is_none());
    assert!(j.installation(HUB, &full, "ghost").await.is_none());

    // The installation types, likewise.
    let rows = |name: &str, rows: &[String]| j.input(name, rows);
    let create = rows(
        "ic.txt",
        &[
            apns_inst("i1", 11, &["a"]),
            apns_inst("existing", 12, &["z"]),
        ],
    );
    let job = j
        .run("ImportCreateInstallations", "out", Some(&create))
        .await;
    assert_eq!(j.lines(&job.output), [apns_inst("i1", 11, &["a"])]);
    assert!(j.lines(&job.failed)[0].starts_with("2\talready exists"));
    let update = rows(
        "iu.txt",
        &[apns_inst("i1", 11, &["b"]), apns_inst("nobody", 13, &["z"])],
    );
    let job = j
        .run("ImportUpdateInstallations", "out", Some(&update))
        .await;
    assert_eq!(j.lines(&job.output).len(), 1);
    assert!(j.lines(&job.failed)[0].starts_with("2\tnot found"));
    assert_eq!(
        tags_of(&j.installation(HUB, &full, "i1").await.unwrap()),
        ["b"]
    );
    assert!(j.installation(HUB, &full, "nobody").await.is_none());
    let delete = rows(
        "id.txt",
        &["{\"installationId\":\"i1\"}".to_owned(), "{}".to_owned()],
    );
    let job = j
        .run("ImportDeleteInstallations", "out", Some(&delete))
        .await;
    assert_eq!(j.lines(&job.output).len(), 1);
    assert!(j.lines(&job.failed)[0].contains("installationId"));
    assert!(j.installation(HUB, &full, "i1").await.is_none());
    j.env.server.shutdown().await;
}

// Rows that cannot be read or applied go to Failed.txt (line number, reason, the row), blank
// lines are skipped, and every other row is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_land_in_failed_txt_and_the_rest_is_applied() {
    let j = start("", "").await;
    let long = format!(
        "<AppleRegistrationDescription><Tags>{}</Tags></AppleRegistrationDescription>",
        "x".repeat(70 * 1024)
    );
    let mut text = [
        // A byte order mark before the first row, as .NET's StreamWriter writes one.
        format!("\u{FEFF}{}", apple_row(Some("good1"), 1, "a")),
        "<AppleRegistrationDescription><DeviceToken>".to_owned(),
        apple_row(Some("badtoken"), 2, "a").replace(&apns_token(2), "zz"),
        "<GcmRegistrationDescription><RegistrationId>g</RegistrationId><GcmRegistrationId>x</GcmRegistrationId></GcmRegistrationDescription>".to_owned(),
        String::new(),
        long,
        apple_row(Some("badtag"), 3, "a b"),
        apns_inst("json", 4, &[]),
    ]
    .join("\n")
    .into_bytes();
    text.extend_from_slice(b"\n<Apple\xff>\r\n");
    text.extend_from_slice(apple_row(Some("good2"), 5, "b").as_bytes());
    std::fs::write(j.dir.path().join("mixed.txt"), &text).unwrap();

    let job = j
        .run("ImportUpsertRegistrations", "out", Some("mixed.txt"))
        .await;
    let out = j.lines(&job.output);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].contains("good1") && out[1].contains("good2"));
    let failed = j.lines(&job.failed);
    let lines: Vec<&str> = failed
        .iter()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(lines, ["2", "3", "4", "6", "7", "8", "9"], "{failed:#?}");
    for (row, want) in failed.iter().zip([
        "not well-formed",
        "must be hex",
        "FCM legacy",
        "at most 65536",
        "<Tags>",
        "not well-formed",
        "not UTF-8",
    ]) {
        let reason = row.split('\t').nth(1).unwrap();
        assert!(reason.contains(want), "{want:?} not in {row:?}");
    }
    assert!(j.installation(HUB, &j.env.full, "good1").await.is_some());
    assert!(j.installation(HUB, &j.env.full, "good2").await.is_some());
    assert!(j.installation(HUB, &j.env.full, "badtoken").await.is_none());
    j.env.server.shutdown().await;
}

// `max_installations` holds for imports: rows beyond it fail with QuotaExceeded, replacing an
// existing installation still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_respect_the_installation_quota() {
    let j = start("", "[hub.limits]\nmax_installations = 3\n").await;
    j.env.put_apns("kept", 1, &["old"]).await;
    let rows: Vec<String> = (0..5)
        .map(|i| apple_row(Some(&format!("q{i}")), 10 + i, "q"))
        .chain([apple_row(Some("kept"), 1, "new")])
        .collect();
    let input = j.input("quota.txt", &rows);
    let job = j
        .run("ImportUpsertRegistrations", "out", Some(&input))
        .await;
    assert_eq!(
        j.lines(&job.output).len(),
        3,
        "two new ones and the replacement"
    );
    let failed = j.lines(&job.failed);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed
        .iter()
        .all(|l| l.contains("QuotaExceeded") && l.contains('3')));
    assert_eq!(
        tags_of(&j.installation(HUB, &j.env.full, "kept").await.unwrap()),
        ["new"]
    );
    j.env.server.shutdown().await;
}

// The path rule: remote URLs, `..`, absolute paths, other hosts, NUL and symbolic links out of
// the directory are refused with 400 and nothing is read or written outside it; missing
// inputs and containers are 400 too. No refused job is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_jobs_directory_are_refused() {
    let j = start("max_input_bytes = 1000", "").await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.txt"),
        apple_row(Some("s"), 1, "x"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), j.dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            j.dir.path().join("secret-link.txt"),
        )
        .unwrap();
    }
    std::fs::create_dir(j.dir.path().join("out").join(HUB)).unwrap();
    std::fs::write(j.dir.path().join("big.txt"), "x".repeat(1001)).unwrap();
    std::fs::write(j.dir.path().join("ok.txt"), apple_row(Some("ok"), 2, "x")).unwrap();
    let out_of = outside.path().display().to_string();
    let cases: Vec<(String, Option<String>, &str)> = vec![
        (
            "https://acct.blob.core.windows.net/out?sig=x".into(),
            None,
            "https: URLs are not supported",
        ),
        (
            "out".into(),
            Some("http://169.254.169.254/latest/meta-data".into()),
            "http: URLs",
        ),
        ("file:///../x".into(), None, "`..`"),
        ("out/../..".into(), None, "`..`"),
        (
            "out".into(),
            Some("file:///out/../../secret.txt".into()),
            "`..`",
        ),
        (
            "out".into(),
            Some(format!("{out_of}/secret.txt")),
            "absolute path",
        ),
        // An absolute file: URI is a path in the jobs directory, not on the server.
        (
            "out".into(),
            Some(format!("file://{out_of}/secret.txt")),
            "names no file",
        ),
        ("file://attacker.example/out".into(), None, "names host"),
        (
            "out".into(),
            Some("file:///ok.txt%00.png".into()),
            "control character",
        ),
        ("out".into(), Some("file:///ok.txt?sig=1".into()), "query"),
        ("escape".into(), None, "leads out of the jobs directory"),
        (
            "out".into(),
            Some("escape/secret.txt".into()),
            "leads out of the jobs directory",
        ),
        (
            "out".into(),
            Some("secret-link.txt".into()),
            "leads out of the jobs directory",
        ),
        ("out".into(), Some("missing.txt".into()), "names no file"),
        ("out".into(), Some("out".into()), "not a regular file"),
        ("out".into(), Some("big.txt".into()), "at most 1000"),
        ("missing".into(), None, "create the container first"),
        ("ok.txt".into(), None, "is not a directory"),
        ("out".into(), None, "needs an ImportFileUri"),
    ];
    for (out, input, want) in &cases {
        let ty = if *want == "needs an ImportFileUri" || input.is_some() {
            "ImportUpsertRegistrations"
        } else {
            "ExportRegistrations"
        };
        let a = j
            .submit_as(HUB, &j.env.full, ty, out, input.as_deref())
            .await;
        assert_eq!(a.status, 400, "{out} {input:?}: {a:?}");
        assert!(
            a.detail().contains(want),
            "{want:?} not in {:?}",
            a.detail()
        );
        let jobs_dir = j.dir.path().display().to_string();
        assert!(
            !a.detail().contains(&jobs_dir),
            "no server paths in details: {}",
            a.detail()
        );
    }
    // Nothing was written outside, nothing was imported, no job is listed, and no job
    // directory was left behind.
    let names: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "only secret.txt outside");
    assert!(j.installation(HUB, &j.env.full, "s").await.is_none());
    let list = j.env.full("GET", &jobs_path(HUB, ""), b"").await;
    assert_eq!(list.status, 200);
    assert!(all_of(&list.body, "JobId").is_empty(), "{}", list.body);
    assert_eq!(
        std::fs::read_dir(j.dir.path().join("out").join(HUB))
            .unwrap()
            .count(),
        0,
        "no job directory for a refused job"
    );
    // A symbolic link inside the directory is fine.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(j.dir.path().join("ok.txt"), j.dir.path().join("alias.txt"))
            .unwrap();
        let job = j
            .run("ImportUpsertRegistrations", "out", Some("alias.txt"))
            .await;
        assert_eq!(j.lines(&job.output).len(), 1);
    }
    j.env.server.shutdown().await;
}

// Jobs need the Manage right (Listen and Send keys get 403 and no body is read), and a hub
// without `[hub.jobs]` answers a clear 403, not 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_and_a_hub_without_jobs() {
    let j = start("", "").await;
    let send = sas(j.env.addr, "send", SEND_KEY);
    let done = j.run("ExportRegistrations", "out", None).await;
    for auth in [&j.env.listen, &send] {
        let a = j
            .submit_as(HUB, auth, "ExportRegistrations", "out", None)
            .await;
        assert_eq!(a.status, 403, "{a:?}");
        assert!(a.detail().contains("Manage"), "{a:?}");
        let a = j.get(HUB, auth, &done.id).await;
        assert_eq!(a.status, 403, "{a:?}");
        let a = j
            .env
            .call("GET", &jobs_path(HUB, ""), std::slice::from_ref(auth), b"")
            .await;
        assert_eq!(a.status, 403, "{a:?}");
    }
    let list = j.env.full("GET", &jobs_path(HUB, ""), b"").await;
    assert_eq!(
        all_of(&list.body, "JobId"),
        [done.id.as_str()],
        "refused jobs are not listed"
    );
    let a = j.get(HUB, &j.env.full, "no-such-job").await;
    assert_eq!(a.status, 404, "{a:?}");
    j.env.server.shutdown().await;

    let env = Env::start(Setup::default()).await;
    for (method, path) in [
        ("POST", jobs_path(HUB, "")),
        ("GET", jobs_path(HUB, "")),
        ("GET", jobs_path(HUB, "/x")),
    ] {
        let body = job_body("ExportRegistrations", "out", None);
        let a = env.full(method, &path, body.as_bytes()).await;
        assert_eq!(a.status, 403, "{method} {path}: {a:?}");
        assert!(
            a.detail().contains("not enabled") && a.detail().contains("[hub.jobs]"),
            "{a:?}"
        );
    }
    env.server.shutdown().await;
}

// At most `max_running` jobs run at once (429 with Retry-After beyond), progress is reported
// while a job runs and ends at 100 with Completed, the listing keeps `max_kept` jobs, and an
// import file over `max_input_lines` fails the job before any row is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_progress_and_listing_are_bounded() {
    let j = start("max_running = 1\nmax_kept = 2\nmax_input_lines = 30000", "").await;
    let rows: Vec<String> = (0..30_000u64)
        .map(|i| apple_row(Some(&format!("bulk{i}")), 100 + i, "bulk"))
        .collect();
    let input = j.input("bulk.txt", &rows);
    let first = j
        .submit("ImportUpsertRegistrations", "out", Some(&input))
        .await;
    assert_eq!(first.status, "Started");
    assert_eq!(first.progress, 0.0);
    let a = j
        .submit_as(HUB, &j.env.full, "ExportRegistrations", "out", None)
        .await;
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.header("Retry-After").is_some(), "{a:?}");
    assert!(a.detail().contains("max_running"), "{a:?}");
    let (done, seen) = j.wait(HUB, &j.env.full, &first.id).await;
    assert_eq!(done.status, "Completed", "{done:?}");
    assert_eq!(done.progress, 100.0);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {seen:?}"
    );
    assert!(
        seen.iter().any(|p| *p > 0.0 && *p < 100.0),
        "progress while running: {seen:?}"
    );
    assert_eq!(j.lines(&done.output).len(), 30_000);
    assert!(j
        .installation(HUB, &j.env.full, "bulk29999")
        .await
        .is_some());

    // The slot is free again; the listing keeps the last two jobs.
    let second = j.run("ExportRegistrations", "out", None).await;
    assert_eq!(j.lines(&second.output).len(), 30_000);
    let mut too_many = rows;
    too_many.push(apple_row(Some("one-more"), 1, "x"));
    let input = j.input("too-many.txt", &too_many);
    let third = j
        .submit("ImportUpsertRegistrations", "out", Some(&input))
        .await;
    let (third, _) = j.wait(HUB, &j.env.full, &third.id).await;
    assert_eq!(third.status, "Failed");
    let failure = third.failure.clone().unwrap();
    assert!(
        failure.contains("30001 lines") && failure.contains("max_input_lines"),
        "{failure}"
    );
    assert!(j.lines(&third.output).is_empty(), "nothing applied");
    assert!(j.installation(HUB, &j.env.full, "one-more").await.is_none());
    let list = j.env.full("GET", &jobs_path(HUB, ""), b"").await;
    assert_eq!(list.status, 200);
    assert!(list.header("Content-Type").unwrap().contains("type=feed"));
    assert_eq!(all_of(&list.body, "JobId"), [second.id, third.id]);
    j.env.server.shutdown().await;
}

// A shutdown stops a running job after its current chunk; after the restart the job is listed
// Failed, saying so, and the finished jobs are still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_by_a_restart_is_reported_failed() {
    let j = start("", "").await;
    let done = j.run("ExportInstallations", "out", None).await;
    let rows: Vec<String> = (0..60_000u64)
        .map(|i| apple_row(Some(&format!("s{i}")), 100 + i, "s"))
        .collect();
    let input = j.input("slow.txt", &rows);
    let running = j
        .submit("ImportUpsertRegistrations", "out", Some(&input))
        .await;
    eventually(Duration::from_secs(30), "the job runs", async || {
        let a = j.get(HUB, &j.env.full, &running.id).await;
        job_view(&a.body).progress > 0.0
    })
    .await;
    let Jobs { env, dir } = j;
    let Env { bed, server, .. } = env;
    server.shutdown().await;

    let server = Server::start(rest::config(
        bed.dir.path(),
        None,
        "",
        &jobs_table(dir.path(), ""),
    ))
    .await
    .unwrap();
    let full = sas(server.local_addr(), "full", KEY);
    let list = rest::call(
        server.local_addr(),
        "GET",
        &jobs_path(HUB, ""),
        &[full],
        b"",
    )
    .await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(all_of(&list.body, "JobId"), [done.id, running.id.clone()]);
    assert_eq!(all_of(&list.body, "Status"), ["Completed", "Failed"]);
    let failure = all_of(&list.body, "Failure").pop().unwrap();
    assert!(failure.contains("shut down"), "{failure}");
    // What it did before the stop is in its output, and applied.
    let applied = std::fs::read_to_string(
        dir.path()
            .join(format!("out/{HUB}/{}/Output.txt", running.id)),
    )
    .unwrap()
    .lines()
    .count();
    assert!(applied > 0 && applied < 60_000, "{applied}");
    server.shutdown().await;
}
