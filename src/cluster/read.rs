//! Reading a stream (or one subject of it) in order, between two sequences, with an ordered
//! consumer: the one read loop of replay (`plog`), `NOTIFY` and `OUT` (`notify`).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt as _;

use super::ClusterError;

/// How long a read waits for the next message before it starts a new consumer from there
/// (the consumer's server lost, or its stream electing a leader).
const STALL_AFTER: Duration = Duration::from_secs(3);
/// How long a read goes on without a message before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// The sequence of the last message on `subject` of `stream` (0: none).
pub(crate) async fn last_on_subject(
    js: &jetstream::Context,
    stream_name: &str,
    subject: &str,
) -> Result<u64, ClusterError> {
    super::guard::retry_meta(
        || async {
            let s = js
                .get_stream_no_info(stream_name)
                .await
                .map_err(|e| e.to_string())?;
            match s.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Ok(m.sequence),
                Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                    Ok(0)
                }
                Err(e) => Err(e.to_string()),
            }
        },
        &format!("last message of {subject}"),
    )
    .await
}

/// Calls `f(sequence, message)` for every message of `stream_name` (on `filter`, if given)
/// from sequence `from` to `upto` inclusive, in order. Nothing when `upto` is 0 or below
/// `from`.
pub(crate) async fn read_range(
    js: &jetstream::Context,
    stream_name: &str,
    filter: Option<&str>,
    from: u64,
    upto: u64,
    mut f: impl FnMut(u64, &jetstream::Message) -> Result<(), ClusterError>,
) -> Result<(), ClusterError> {
    if upto == 0 || from > upto {
        return Ok(());
    }
    let what = filter.unwrap_or(stream_name);
    let err = |e: &dyn std::fmt::Display| ClusterError::Nats(format!("reading {what}: {e}"));
    // An ordered consumer notices a lost server only after two missed 15 s heartbeats: a
    // read that stalls starts a new one from the next sequence instead.
    let mut next = from;
    let mut progress = tokio::time::Instant::now();
    loop {
        let mut msgs = consume(js, stream_name, filter, next).await?;
        let stalled = loop {
            let m = match tokio::time::timeout(STALL_AFTER, msgs.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => break e.to_string(),
                Ok(None) => break "the consumer ended".to_owned(),
                Err(_) => break format!("no message within {STALL_AFTER:?}"),
            };
            let seq = m.info().map_err(|e| err(&e))?.stream_sequence;
            if seq < next {
                continue;
            }
            f(seq, &m)?;
            if seq >= upto {
                return Ok(());
            }
            next = seq + 1;
            progress = tokio::time::Instant::now();
        };
        if progress.elapsed() >= GIVE_UP_AFTER {
            return Err(err(&format!(
                "nothing at sequence {next} (of {upto}) within {GIVE_UP_AFTER:?}: {stalled}"
            )));
        }
        tracing::debug!(what, next, upto, why = %stalled, "read stalled: a new consumer from there");
    }
}

/// An ordered consumer of `stream_name` (on `filter`, if given) from sequence `from`: every
/// message from there on, in order, waiting for new ones at the end.
pub(crate) async fn consume(
    js: &jetstream::Context,
    stream_name: &str,
    filter: Option<&str>,
    from: u64,
) -> Result<jetstream::consumer::pull::Ordered, ClusterError> {
    let what = filter.unwrap_or(stream_name);
    // Creating the consumer needs the stream's leader: right after a NATS server restarted,
    // or while a leader is elected, that can time out; retried as the guard retries.
    super::guard::retry_meta(
        || async {
            let s = js
                .get_stream_no_info(stream_name)
                .await
                .map_err(|e| e.to_string())?;
            let consumer = s
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: filter.unwrap_or_default().to_owned(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from.max(1),
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        },
        &format!("reading {what}"),
    )
    .await
}

/// The settings of every log-like stream of cluster mode: file storage, `replicas`, no
/// per-subject limit, direct gets, no deletes, a two-minute duplicate window (message ids),
/// and the marker metadata the guard reads back.
pub(crate) fn log_stream(name: String, subjects: Vec<String>, replicas: usize) -> stream::Config {
    stream::Config {
        name,
        subjects,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: -1,
        allow_direct: true,
        deny_delete: true,
        duplicate_window: Duration::from_secs(120),
        metadata: super::guard::marker_metadata(),
        ..Default::default()
    }
}
