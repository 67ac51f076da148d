//! A partition's fenced chunk log (CLUSTER.md, "Registry log" and "Fencing"): partition p of a
//! hub is the subject `<prefix>.<hub>.reg.<g>.<p>` of stream `<PREFIX>_<hub>_REG_<g>`
//! (g = p mod G). Only the partition's owner appends, one chunk in flight at a time, each with
//! `Nats-Msg-Id = <p>.<epoch>.<n>` (a retried publish is stored once) and
//! `Nats-Expected-Last-Subject-Sequence` = the last sequence it knows on the subject. A new
//! owner's first append is an empty *epoch marker* at the sequence it replayed to; from then
//! on every append of an older owner fails with "wrong last sequence", and that owner steps
//! down. No clock is involved.
//!
//! ```text
//!  owner e=1:  chunk(seq 5) ── chunk(seq 9) ── ...            (expects 5, then 9)
//!  owner e=2:  replay to 9 ── marker(e=2, expects 9) → seq 12
//!  owner e=1:  chunk (expects 9) ──▶ WrongLastSequence ──▶ Fenced: step down
//! ```

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

use super::ClusterError;

/// Header naming the epoch of the owner that wrote a message.
pub const EPOCH_HEADER: &str = "Tc-Epoch";
/// Header naming what a message is: `marker` or `chunk`.
pub const KIND_HEADER: &str = "Tc-Kind";
/// Header carrying the registry's own number of a chunk (`append_numbered`).
pub const NUMBER_HEADER: &str = "Tc-Chunk";

/// One partition's log on its stream.
#[derive(Clone)]
pub struct PartitionLog {
    js: jetstream::Context,
    stream: String,
    subject: String,
    partition: u16,
}

/// An owner's right to append: its epoch, the next chunk number and the last sequence on
/// the subject it knows of (its fence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// The owner's epoch.
    pub epoch: u64,
    /// The next chunk number (part of the message id).
    pub next: u64,
    /// The last sequence on the subject this writer knows of.
    pub last_seq: u64,
}

/// A message of the log as replay reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The message's stream sequence.
    pub seq: u64,
    /// The epoch of the owner that wrote it.
    pub epoch: u64,
    /// `None` for an epoch marker.
    pub chunk: Option<Bytes>,
    /// The number given to [`PartitionLog::append_numbered`], if any.
    pub number: Option<u64>,
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// Someone appended after this writer's fence: a newer owner. Step down.
    Fenced,
    /// Anything else (NATS unreachable, timeout): the chunk may or may not be stored; retry
    /// the same chunk (same message id: stored once) or step down.
    Other(ClusterError),
}

impl PartitionLog {
    /// The log of `partition`: `subject` of `stream`.
    pub fn new(js: jetstream::Context, stream: &str, subject: &str, partition: u16) -> Self {
        PartitionLog {
            js,
            stream: stream.to_owned(),
            subject: subject.to_owned(),
            partition,
        }
    }

    /// The partition's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The sequence of the last message on the subject (0: none).
    pub async fn last_seq(&self) -> Result<u64, ClusterError> {
        super::read::last_on_subject(&self.js, &self.stream, &self.subject).await
    }

    /// The sequence and `Nats-Msg-Id` of the last message on the subject (`None`: none; an
    /// empty id: a message without one).
    async fn last_message_id(&self) -> Result<Option<(u64, String)>, ClusterError> {
        let what = format!("last message of {}", self.subject);
        self.on_stream(&what, |s| async move {
            match s.get_last_raw_message_by_subject(&self.subject).await {
                Ok(m) => {
                    let id = m.headers.get(async_nats::header::NATS_MESSAGE_ID);
                    Ok(Some((
                        m.sequence,
                        id.map(|v| v.as_str().to_owned()).unwrap_or_default(),
                    )))
                }
                Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                    Ok(None)
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Opens `epoch` with a marker appended right after `replayed_to` (the last sequence the
    /// new owner applied). Fails with [`AppendError::Fenced`] when the log moved on since
    /// (replay the rest, then try again) or when a newer owner got there first.
    pub async fn open_epoch(&self, epoch: u64, replayed_to: u64) -> Result<Writer, AppendError> {
        let mut w = Writer {
            epoch,
            next: 0,
            last_seq: replayed_to,
        };
        self.publish(&mut w, None, None).await?;
        Ok(w)
    }

    /// Appends `chunk` behind the writer's fence; returns its sequence. On success the chunk
    /// is stored on a majority of the stream's replicas (the JetStream ack).
    pub async fn append(&self, w: &mut Writer, chunk: Bytes) -> Result<u64, AppendError> {
        self.publish(w, Some(chunk), None).await
    }

    /// [`PartitionLog::append`] with the appender's own number for the chunk, which replay
    /// returns ([`LogEntry::number`]).
    pub async fn append_numbered(
        &self,
        w: &mut Writer,
        chunk: Bytes,
        number: u64,
    ) -> Result<u64, AppendError> {
        self.publish(w, Some(chunk), Some(number)).await
    }

    async fn publish(
        &self,
        w: &mut Writer,
        chunk: Option<Bytes>,
        number: Option<u64>,
    ) -> Result<u64, AppendError> {
        let mut headers = HeaderMap::new();
        if let Some(n) = number {
            headers.insert(NUMBER_HEADER, n.to_string().as_str());
        }
        headers.insert(EPOCH_HEADER, w.epoch.to_string().as_str());
        headers.insert(
            KIND_HEADER,
            if chunk.is_some() { "chunk" } else { "marker" },
        );
        let msg_id = format!("{}.{}.{}", self.partition, w.epoch, w.next);
        let publish = jetstream::message::PublishMessage::build()
            .payload(chunk.unwrap_or_default())
            .headers(headers)
            .message_id(msg_id.clone())
            .expected_last_subject_sequence(w.last_seq);
        let started = std::time::Instant::now();
        let ack = self
            .js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| AppendError::Other(ClusterError::Nats(format!("publish: {e}"))))?;
        let ack = ack.await;
        if ack.is_ok() {
            metrics::histogram!(
                crate::dispatch::metrics::CLUSTER_CHUNK_SECONDS,
                "stream" => self.stream.clone()
            )
            .record(started.elapsed().as_secs_f64());
        }
        match ack {
            Ok(a) if a.duplicate => {
                // Stored before (a retry after a lost ack): the stored copy's sequence.
                w.next += 1;
                w.last_seq = a.sequence;
                Ok(a.sequence)
            }
            Ok(a) => {
                w.next += 1;
                w.last_seq = a.sequence;
                Ok(a.sequence)
            }
            Err(e)
                if matches!(e.kind(), PublishErrorKind::WrongLastSequence)
                    || super::is_wrong_last_sequence(&e) =>
            {
                // Only a message after the fence that is not this one is a fence.
                match self.last_message_id().await {
                    Ok(last) => match after_wrong_last(last, &msg_id, w.last_seq) {
                        AfterWrongLast::Stored(seq) => {
                            w.next += 1;
                            w.last_seq = seq;
                            Ok(seq)
                        }
                        AfterWrongLast::InProcess => {
                            Err(AppendError::Other(ClusterError::Nats(format!(
                                "append to {}: {e} while the subject is still at {} (a copy in process?)",
                                self.subject, w.last_seq
                            ))))
                        }
                        AfterWrongLast::Fenced => Err(AppendError::Fenced),
                    },
                    Err(e) => Err(AppendError::Other(e)),
                }
            }
            Err(e) => Err(AppendError::Other(ClusterError::Nats(format!(
                "append to {}: {e}",
                self.subject
            )))),
        }
    }

    /// An ordered consumer of the subject from sequence `from` on (a standby's follow).
    pub(crate) async fn consume_from(
        &self,
        from: u64,
    ) -> Result<jetstream::consumer::pull::Ordered, ClusterError> {
        super::read::consume(&self.js, &self.stream, Some(&self.subject), from).await
    }

    /// Runs `f` on the log's stream, retried while JetStream elects a leader (as the guard
    /// retries); `what` names it in the error.
    async fn on_stream<T, Fut>(
        &self,
        what: &str,
        f: impl Fn(stream::Stream<()>) -> Fut,
    ) -> Result<T, ClusterError>
    where
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        super::guard::retry_meta(
            || async {
                let s = self
                    .js
                    .get_stream_no_info(&self.stream)
                    .await
                    .map_err(|e| e.to_string())?;
                f(s).await
            },
            what,
        )
        .await
    }

    /// The sequence of the first message on the subject (0: none): what a purge left.
    pub async fn first_seq(&self) -> Result<u64, ClusterError> {
        let what = format!("first message of {}", self.subject);
        self.on_stream(&what, |s| async move {
            match s.get_first_raw_message_by_subject(&self.subject, 1).await {
                Ok(m) => Ok(m.sequence),
                Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => Ok(0),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// The payload of the message at stream sequence `seq` (a chunk this log appended or
    /// replayed), read from the stream's leader; `None` if it is gone (purged).
    pub async fn read_at(&self, seq: u64) -> Result<Option<Bytes>, ClusterError> {
        let what = format!("reading {} at {seq}", self.subject);
        self.on_stream(&what, |s| async move {
            match s.get_raw_message(seq).await {
                Ok(m) if m.subject.as_str() == self.subject => Ok(Some(m.payload)),
                Ok(m) => Err(format!(
                    "sequence {seq} is on {}, not {}",
                    m.subject, self.subject
                )),
                Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => {
                    Ok(None)
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// How many messages the subject holds now (chunks and epoch markers): what a takeover
    /// replays.
    pub async fn messages(&self) -> Result<u64, ClusterError> {
        use futures_util::StreamExt as _;
        let what = format!("counting {}", self.subject);
        self.on_stream(&what, |s| async move {
            let mut subjects = s
                .info_with_subjects(&self.subject)
                .await
                .map_err(|e| e.to_string())?;
            let mut n = 0;
            while let Some(entry) = subjects.next().await {
                let (subject, count) = entry.map_err(|e| e.to_string())?;
                if subject == self.subject {
                    n += count as u64;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Purges the subject's messages below stream sequence `seq` (the rest of the stream and
    /// everything from `seq` on stay). Repeating it is harmless.
    pub async fn purge_below(&self, seq: u64) -> Result<(), ClusterError> {
        let what = format!("purging {} below {seq}", self.subject);
        self.on_stream(&what, |s| async move {
            s.purge()
                .filter(self.subject.clone())
                .sequence(seq)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Reads the subject from sequence `from` (inclusive) up to the last sequence it had when
    /// the call started, in order, with an ordered consumer.
    pub async fn replay(&self, from: u64) -> Result<Vec<LogEntry>, ClusterError> {
        let upto = self.last_seq().await?;
        let mut out = Vec::new();
        super::read::read_range(
            &self.js,
            &self.stream,
            Some(&self.subject),
            from,
            upto,
            |seq, m| {
                out.push(entry_of(seq, m));
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }
}

/// What a "wrong last sequence" answer to an append means, from the subject's last message
/// (its sequence and `Nats-Msg-Id`) read after it.
#[derive(Debug, PartialEq, Eq)]
enum AfterWrongLast {
    /// The last message is this append (`msg_id`): a retry whose first copy landed (its ack
    /// was lost). Stored once, at that sequence.
    Stored(u64),
    /// Nothing after the fence yet: the server refused because a publish expecting a
    /// sequence on the subject is being replicated (a copy of this one). Unknown outcome.
    InProcess,
    /// Someone else's message after the fence: a newer owner.
    Fenced,
}

fn after_wrong_last(last: Option<(u64, String)>, msg_id: &str, fence: u64) -> AfterWrongLast {
    match last {
        Some((seq, id)) if id == msg_id => AfterWrongLast::Stored(seq),
        Some((seq, _)) if seq == fence => AfterWrongLast::InProcess,
        None if fence == 0 => AfterWrongLast::InProcess,
        _ => AfterWrongLast::Fenced,
    }
}

/// The log entry of message `m` at stream sequence `seq`.
pub(crate) fn entry_of(seq: u64, m: &jetstream::Message) -> LogEntry {
    let headers = m.headers.as_ref();
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    LogEntry {
        seq,
        epoch: header(EPOCH_HEADER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        chunk: (header(KIND_HEADER) != Some("marker")).then(|| m.payload.clone()),
        number: header(NUMBER_HEADER).and_then(|v| v.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::{after_wrong_last, AfterWrongLast::*};

    #[test]
    fn only_another_message_after_the_fence_is_a_fence() {
        let id = |s: &str| s.to_owned();
        // The retry's own first copy, right after the fence or later: stored.
        assert_eq!(
            after_wrong_last(Some((10, id("3.1.4"))), "3.1.4", 9),
            Stored(10)
        );
        // The subject still at the fence (or empty with fence 0): in process, not a fence.
        assert_eq!(
            after_wrong_last(Some((9, id("3.1.3"))), "3.1.4", 9),
            InProcess
        );
        assert_eq!(after_wrong_last(None, "3.1.0", 0), InProcess);
        // A newer owner's marker or chunk after the fence; or the subject purged under a
        // writer that expects a message: fenced.
        assert_eq!(
            after_wrong_last(Some((12, id("3.2.0"))), "3.1.4", 9),
            Fenced
        );
        assert_eq!(
            after_wrong_last(Some((12, id("3.1.9"))), "3.1.4", 9),
            Fenced
        );
        assert_eq!(
            after_wrong_last(Some((12, String::new())), "3.1.4", 9),
            Fenced
        );
        assert_eq!(after_wrong_last(None, "3.1.4", 9), Fenced);
    }
}
