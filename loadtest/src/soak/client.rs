//! The soak's API client: a few HTTP/2 connections shared by every traffic task, reconnected
//! when one fails, and the tally of every answer by operation and status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use parking_lot::Mutex;
use tagcast::nh::sas::token;

use crate::mock::testkit::{H2Client, TestResponse};

/// Every request is answered within this or counted as a transport error (the server's own
/// `request_timeout_secs` default is 60 s; no soak request waits on anything slow).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An operation's name in the tally and the statuses it may answer with.
pub(crate) struct Check {
    pub(crate) op: &'static str,
    pub(crate) ok: &'static [u16],
}

/// The expected answers of every operation the soak makes. A 429 is in none of them: the
/// soak's configuration sets the rate limit and the sends-in-flight cap out of the way.
pub(crate) mod checks {
    use super::Check;
    /// PUT of a tracked installation.
    pub(crate) const PUT: Check = Check {
        op: "installation.put",
        ok: &[200],
    };
    /// PATCH of a tracked installation (404: it was deleted, as the model knows).
    pub(crate) const PATCH: Check = Check {
        op: "installation.patch",
        ok: &[200, 404],
    };
    /// DELETE of a tracked installation (deleting an absent one is no error).
    pub(crate) const DELETE: Check = Check {
        op: "installation.delete",
        ok: &[200, 204],
    };
    /// GET of a tracked installation.
    pub(crate) const GET: Check = Check {
        op: "installation.get",
        ok: &[200, 404],
    };
    /// The racing set: PUT, PATCH (404 after a racing DELETE, 409 when it kept changing),
    /// DELETE, GET.
    pub(crate) const RACE_PUT: Check = Check {
        op: "race.put",
        ok: &[200],
    };
    pub(crate) const RACE_PATCH: Check = Check {
        op: "race.patch",
        ok: &[200, 404, 409],
    };
    pub(crate) const RACE_DELETE: Check = Check {
        op: "race.delete",
        ok: &[200, 204],
    };
    pub(crate) const RACE_GET: Check = Check {
        op: "race.get",
        ok: &[200, 404],
    };
    /// Sends to tags and broadcasts to the small hub.
    pub(crate) const SEND: Check = Check {
        op: "send",
        ok: &[201],
    };
    pub(crate) const BROADCAST: Check = Check {
        op: "broadcast",
        ok: &[201],
    };
    /// Schedules and their cancellation (404: it fired first).
    pub(crate) const SCHEDULE: Check = Check {
        op: "schedule",
        ok: &[201],
    };
    pub(crate) const CANCEL: Check = Check {
        op: "schedule.cancel",
        ok: &[200, 404],
    };
    /// A send's outcome during the traffic.
    pub(crate) const OUTCOME: Check = Check {
        op: "outcome",
        ok: &[200],
    };
    /// A page of the registration listing.
    pub(crate) const LIST: Check = Check {
        op: "registrations.list",
        ok: &[200],
    };
    /// Reads after the restart (404 is judged by the verification, not here).
    pub(crate) const VERIFY_GET: Check = Check {
        op: "verify.installation",
        ok: &[200, 404],
    };
    pub(crate) const VERIFY_OUTCOME: Check = Check {
        op: "verify.outcome",
        ok: &[200, 404],
    };
}

/// The hubs of the soak's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hub {
    /// Every operation but the broadcasts.
    Soak,
    /// A hub of a few devices, for broadcasts (bounded pushes).
    Tiny,
}

/// Answers by operation and status, transport errors, and answers not in the operation's
/// expected set.
#[derive(Default)]
pub(crate) struct Tally {
    statuses: Mutex<BTreeMap<&'static str, BTreeMap<u16, u64>>>,
    transport: Mutex<BTreeMap<&'static str, u64>>,
    unexpected: Mutex<Vec<String>>,
    answered: AtomicU64,
    server_errors: AtomicU64,
}

/// How many unexpected answers are kept verbatim for the report.
const KEEP_UNEXPECTED: usize = 20;

impl Tally {
    fn answer(&self, op: &'static str, r: &TestResponse, expected: &[u16]) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        *self
            .statuses
            .lock()
            .entry(op)
            .or_default()
            .entry(r.status)
            .or_default() += 1;
        if r.status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !expected.contains(&r.status) {
            let mut u = self.unexpected.lock();
            if u.len() < KEEP_UNEXPECTED {
                let body = String::from_utf8_lossy(&r.body);
                u.push(format!(
                    "{op}: {} {}",
                    r.status,
                    crate::soak::clip(&body, 300)
                ));
            }
        }
    }

    fn transport_error(&self, op: &'static str) {
        *self.transport.lock().entry(op).or_default() += 1;
    }

    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub(crate) fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    pub(crate) fn statuses(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        self.statuses
            .lock()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    pub(crate) fn transport(&self) -> BTreeMap<String, u64> {
        self.transport
            .lock()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    pub(crate) fn unexpected(&self) -> Vec<String> {
        self.unexpected.lock().clone()
    }
}

/// A shared access token for `hub` on the server at `port` (valid for a day).
fn auth(port: u16, hub: Hub) -> String {
    let se = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 86_400;
    let key = match hub {
        Hub::Soak => super::process::KEY,
        Hub::Tiny => super::process::TINY_KEY,
    };
    token(&format!("https://localhost:{port}/"), "full", key, se)
}

/// HTTP/2 connections to one server process.
pub(crate) struct Pool {
    addr: SocketAddr,
    ca_pem: String,
    auth_soak: String,
    auth_tiny: String,
    slots: Vec<tokio::sync::Mutex<Option<H2Client>>>,
    next: AtomicUsize,
    pub(crate) tally: Arc<Tally>,
}

impl Pool {
    pub(crate) fn new(
        addr: SocketAddr,
        ca_pem: &str,
        connections: usize,
        tally: Arc<Tally>,
    ) -> Pool {
        Pool {
            addr,
            ca_pem: ca_pem.to_owned(),
            auth_soak: auth(addr.port(), Hub::Soak),
            auth_tiny: auth(addr.port(), Hub::Tiny),
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            tally,
        }
    }

    /// A connection of slot `i`, connecting it if needed.
    async fn client(&self, i: usize) -> Option<H2Client> {
        let mut slot = self.slots[i].lock().await;
        if slot.is_none() {
            let c =
                tokio::time::timeout(CONNECT_TIMEOUT, H2Client::connect(self.addr, &self.ca_pem));
            *slot = c.await.ok()?.ok();
        }
        slot.clone()
    }

    /// `method /<hub><path>` (an `api-version` is added) with the hub's token; tallies the
    /// answer under `check`. `None` on a transport error or timeout (the connection is then
    /// replaced).
    pub(crate) async fn call(
        &self,
        check: &Check,
        hub: Hub,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Option<TestResponse> {
        let (op, expected) = (check.op, check.ok);
        let (name, auth) = match hub {
            Hub::Soak => ("soak", &self.auth_soak),
            Hub::Tiny => ("tiny", &self.auth_tiny),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("/{name}{path}{sep}api-version=2020-06");
        let mut h: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        h.extend_from_slice(headers);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let sent = async {
            let c = self.client(i).await?;
            c.send(method, &uri, &h, body).await.ok()
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            Ok(Some(r)) => {
                self.tally.answer(op, &r, expected);
                Some(r)
            }
            _ => {
                self.tally.transport_error(op);
                *self.slots[i].lock().await = None;
                None
            }
        }
    }
}
