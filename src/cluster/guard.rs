//! The version and configuration guard (CLUSTER.md, "The engine and its version"): cluster
//! mode runs only on NATS servers ≥ 2.10.23, checked on every configured server at start, and
//! every stream and bucket it creates is read back: a setting the server dropped or changed
//! (2.9.x ignores fields it does not know) refuses the start, naming the setting.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use super::ClusterError;

/// The oldest NATS server cluster mode accepts. 2.9.10's clustered compare-and-set is not
/// atomic (more than one winner in 95 of 100 races, CLUSTER.md); 2.10.20-2.10.22 could lose
/// a stream after a crash.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 10, 23);

/// `major.minor.patch` of a server version string (`2.14.5`, `v2.10.23`, `2.11.0-RC.1`);
/// a pre-release counts as before its release. `None` for anything else.
pub fn parse_version(v: &str) -> Option<((u64, u64, u64), bool)> {
    let v = v.trim().trim_start_matches('v');
    let (core, pre) = match v.split_once(['-', '+']) {
        Some((c, rest)) => (c, v[c.len()..].starts_with('-') && !rest.is_empty()),
        None => (v, false),
    };
    let mut it = core.split('.').map(|n| n.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some((t, pre))
}

/// Refuses a server older than [`MIN_SERVER_VERSION`], naming both versions.
pub fn check_version(server: &str, version: &str) -> Result<(), ClusterError> {
    let (min_maj, min_min, min_patch) = MIN_SERVER_VERSION;
    let Some((v, pre)) = parse_version(version) else {
        return Err(ClusterError::Refused(format!(
            "NATS server {server} reports version {version:?}, which cannot be read; cluster \
             mode needs {min_maj}.{min_min}.{min_patch} or later"
        )));
    };
    if v < MIN_SERVER_VERSION || (v == MIN_SERVER_VERSION && pre) {
        return Err(ClusterError::Refused(format!(
            "NATS server {server} is version {version}; cluster mode needs \
             {min_maj}.{min_min}.{min_patch} or later (older servers' clustered \
             compare-and-set is not atomic; docs/operations.md, \"Cluster mode\")"
        )));
    }
    Ok(())
}

/// The stream settings cluster mode relies on, compared after a create or lookup.
fn stream_differences(want: &stream::Config, got: &stream::Config) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |name: &str, w: String, g: String| {
        if w != g {
            d.push(format!("{name}: wanted {w}, the server has {g}"));
        }
    };
    let mut ws = want.subjects.clone();
    let mut gs = got.subjects.clone();
    ws.sort();
    gs.sort();
    cmp("subjects", format!("{ws:?}"), format!("{gs:?}"));
    cmp(
        "num_replicas",
        want.num_replicas.max(1).to_string(),
        got.num_replicas.max(1).to_string(),
    );
    cmp(
        "storage",
        format!("{:?}", want.storage),
        format!("{:?}", got.storage),
    );
    cmp(
        "retention",
        format!("{:?}", want.retention),
        format!("{:?}", got.retention),
    );
    cmp(
        "discard",
        format!("{:?}", want.discard),
        format!("{:?}", got.discard),
    );
    cmp(
        "max_messages_per_subject",
        want.max_messages_per_subject.to_string(),
        got.max_messages_per_subject.to_string(),
    );
    cmp(
        "allow_direct",
        want.allow_direct.to_string(),
        got.allow_direct.to_string(),
    );
    cmp(
        "allow_rollup",
        want.allow_rollup.to_string(),
        got.allow_rollup.to_string(),
    );
    cmp(
        "deny_delete",
        want.deny_delete.to_string(),
        got.deny_delete.to_string(),
    );
    if !want.duplicate_window.is_zero() {
        cmp(
            "duplicate_window",
            format!("{:?}", want.duplicate_window),
            format!("{:?}", got.duplicate_window),
        );
    }
    for (k, v) in &want.metadata {
        cmp(
            &format!("metadata.{k}"),
            format!("{v:?}"),
            got.metadata
                .get(k)
                .map_or_else(|| "none".to_owned(), |g| format!("{g:?}")),
        );
    }
    d
}

/// Metadata every stream and bucket of cluster mode carries; a server that drops it (2.9.x
/// has no stream metadata) is refused by the read-back even if its version was not checked.
pub fn marker_metadata() -> HashMap<String, String> {
    HashMap::from([("tagcast".to_owned(), "1".to_owned())])
}

/// Creates `want` (or finds it) and checks the server kept every setting; a stream that
/// exists with other settings is refused, not changed.
pub async fn ensure_stream(
    js: &jetstream::Context,
    want: stream::Config,
) -> Result<stream::Stream, ClusterError> {
    let name = want.name.clone();
    let mut s = retry_meta(|| js.get_or_create_stream(want.clone()), &name).await?;
    let info = s
        .info()
        .await
        .map_err(|e| ClusterError::Nats(format!("stream {name}: {e}")))?;
    let diff = stream_differences(&want, &info.config);
    if !diff.is_empty() {
        return Err(ClusterError::Refused(format!(
            "stream {name} does not have the settings cluster mode needs: {}",
            diff.join("; ")
        )));
    }
    Ok(s)
}

/// Creates the bucket `want` (or finds it) and checks its stream's settings the same way.
pub async fn ensure_kv(
    js: &jetstream::Context,
    want: kv::Config,
) -> Result<kv::Store, ClusterError> {
    let bucket = want.bucket.clone();
    let store = match js.get_key_value(&bucket).await {
        Ok(s) => s,
        Err(_) => retry_meta(|| js.create_key_value(want.clone()), &bucket).await?,
    };
    let stream_name = format!("KV_{bucket}");
    // Retried: a bucket another node has just created can be missing from a server's view
    // for a moment (nodes started at once raced here: "stream not found").
    let got = retry_meta(
        || async {
            let mut s = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            s.info()
                .await
                .map(|i| i.config.clone())
                .map_err(|e| e.to_string())
        },
        &format!("bucket {bucket}"),
    )
    .await?;
    let mut d = Vec::new();
    if got.num_replicas.max(1) != want.num_replicas.max(1) {
        d.push(format!(
            "replicas: wanted {}, the server has {}",
            want.num_replicas.max(1),
            got.num_replicas.max(1)
        ));
    }
    if got.max_messages_per_subject != want.history.max(1) {
        d.push(format!(
            "history: wanted {}, the server has {}",
            want.history.max(1),
            got.max_messages_per_subject
        ));
    }
    if !d.is_empty() {
        return Err(ClusterError::Refused(format!(
            "bucket {bucket} does not have the settings cluster mode needs: {}",
            d.join("; ")
        )));
    }
    Ok(store)
}

/// Retries an operation that needs JetStream's meta leader or a stream's leader while a
/// cluster elects one (a fresh or restarted NATS cluster answers "JetStream not available"
/// for a few seconds; a stream whose leader was lost answers nothing until the election
/// ends). Each of the first five attempts is bounded by 2 s, the later ones by 5 s (a
/// loaded server that answers slowly still gets through): a request sent while there is no
/// leader gets no answer, and waiting out the client's 5 s for each made an open after a
/// NATS server loss take 10 or 20 s where the election took a few.
pub(crate) async fn retry_meta<T, E: std::fmt::Display, F>(
    mut f: impl FnMut() -> F,
    what: &str,
) -> Result<T, ClusterError>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let within = Duration::from_secs(if n < 5 { 2 } else { 5 });
        let attempt = match tokio::time::timeout(within, f()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {within:?}")),
        };
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(what, error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(ClusterError::Nats(format!("{what}: {e}"))),
        }
    }
    unreachable!("the attempts above end in a return")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_and_compare() {
        assert_eq!(parse_version("2.14.5"), Some(((2, 14, 5), false)));
        assert_eq!(parse_version("v2.10.23"), Some(((2, 10, 23), false)));
        assert_eq!(parse_version("2.11.0-RC.1"), Some(((2, 11, 0), true)));
        assert_eq!(parse_version("2.10"), None);
        assert_eq!(parse_version("2.10.x"), None);
        assert_eq!(parse_version("2.10.23.1"), None);
        assert!(check_version("s", "2.10.23").is_ok());
        assert!(check_version("s", "2.14.5").is_ok());
        assert!(check_version("s", "3.0.0").is_ok());
        for old in ["2.9.10", "2.10.22", "2.10.23-beta", "1.99.99", "junk"] {
            let e = check_version("s", old).unwrap_err().to_string();
            assert!(e.contains("2.10.23") && e.contains(old), "{e}");
        }
    }

    #[test]
    fn a_dropped_setting_is_named() {
        let want = stream::Config {
            name: "x".into(),
            subjects: vec!["a.>".into()],
            num_replicas: 3,
            allow_direct: true,
            metadata: marker_metadata(),
            ..Default::default()
        };
        assert!(stream_differences(&want, &want.clone()).is_empty());
        let mut got = want.clone();
        got.metadata.clear();
        got.num_replicas = 1;
        let d = stream_differences(&want, &got).join("; ");
        assert!(
            d.contains("metadata.tagcast") && d.contains("num_replicas"),
            "{d}"
        );
    }
}
