//! The tagcast nodes as separate `tagcast serve` processes in cluster mode: each one's
//! configuration (TLS from the harness's `MockTls`, the mock APNs, `[cluster]` on the NATS
//! URLs it is given), start (waiting for "serving on" and `/readyz`), `kill -9`, SIGSTOP and
//! SIGCONT, and its CPU in ticks. With `--cpu-quota` each one is moved into its own cpu
//! cgroup right after it is spawned, uncapped; [`NodeProc::cap`] caps it (the harness does so
//! just before the broadcast, so that start and registration run at full speed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cpu::{cpu_ticks, CpuCgroup};
use crate::mock::testkit::H2Client;
use crate::soak::process::tail;

/// The hub every node serves.
pub(crate) const HUB: &str = "load";
/// Its shared access key (32+ characters, as the server requires).
pub(crate) const KEY: &str = "Y2x1c3Rlci1oYXJuZXNzLWtleS1mb3ItdGhlLWxvYWQ";

/// How long a node's start (NATS connect, first round) may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What every node's configuration shares.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) ca_file: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) p8_file: PathBuf,
    pub(crate) apns_url: String,
    pub(crate) partitions: u16,
    pub(crate) stream_groups: u16,
    pub(crate) lease_ms: u64,
    pub(crate) margin_ms: u64,
    pub(crate) claim_size: u32,
    pub(crate) at_most_once: bool,
    pub(crate) cpu_quota: Option<f64>,
}

impl Shared {
    /// Writes the TLS and APNs key files into `dir`.
    pub(crate) fn write_files(
        dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> std::io::Result<(PathBuf, PathBuf, PathBuf, PathBuf)> {
        let file = |name: &str, text: &str| -> std::io::Result<PathBuf> {
            use std::os::unix::fs::PermissionsExt as _;
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            // Keys are for the owner only (the server warns about a world-readable key).
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            Ok(p)
        };
        Ok((
            file("cert.pem", cert_pem)?,
            file("server-key.pem", key_pem)?,
            file("ca.pem", ca_pem)?,
            file("key.p8", crate::mock::apns::TEST_KEY_PEM)?,
        ))
    }

    /// `tagcast.toml` of node `name` on `nats_urls`: limits out of the way (no 429 is
    /// expected), logs at `info` in JSON without access or audit lines (one per write).
    fn config(&self, name: &str, data: &Path, nats_urls: &[String]) -> String {
        let urls: Vec<String> = nats_urls.iter().map(|u| format!("\"{u}\"")).collect();
        let apns = crate::mock::apns::hub_toml(&self.p8_file, &self.apns_url);
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
             data_dir = \"{data}\"\ndrain_delay_secs = 0\n\n\
             [log]\nformat = \"json\"\nlevel = \"info,tagcast::audit=warn\"\naccess = false\n\n\
             [cluster]\nnats_urls = [{urls}]\nnode = \"{name}\"\npartitions = {p}\n\
             stream_groups = {g}\nlease_ms = {lease}\nmargin_ms = {margin}\nclaim_size = {k}\n\
             delivery = \"{delivery}\"\n\n\
             [[hub]]\nname = \"{HUB}\"\nca_file = \"{ca}\"\nca_only = true\n\
             [hub.limits]\nrequests_per_second = 100000000\nburst = 100000000\n\
             max_sends_in_flight = 100000\nmax_installations = 100000000\n\
             [[hub.key]]\nname = \"full\"\nkey = \"{KEY}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n\
             {apns}",
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            data = data.display(),
            urls = urls.join(", "),
            p = self.partitions,
            g = self.stream_groups,
            lease = self.lease_ms,
            margin = self.margin_ms,
            k = self.claim_size,
            delivery = if self.at_most_once {
                "at-most-once"
            } else {
                "at-least-once"
            },
            ca = self.ca_file.display(),
        )
    }
}

/// Where a node process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    Running,
    /// SIGSTOP (a zombie until SIGCONT).
    Stopped,
    Killed,
}

/// A `tagcast serve` node; killed (and its cgroup removed) on drop.
pub(crate) struct NodeProc {
    pub(crate) name: String,
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
    pub(crate) state: NodeState,
    /// Dropped after the process is killed (see `Drop`).
    cgroup: Option<CpuCgroup>,
}

impl NodeProc {
    /// Spawns node `name` (moved into its uncapped cgroup at once with `--cpu-quota`); call
    /// [`NodeProc::wait_ready`] next.
    pub(crate) fn spawn(
        shared: &Shared,
        name: &str,
        nats_urls: &[String],
    ) -> Result<NodeProc, String> {
        let dir = shared.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("tagcast.toml");
        std::fs::write(&config, shared.config(name, &dir.join("data"), nats_urls))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let log = dir.join("tagcast.log");
        let err_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // The cgroup first: a refusal stops the run before a process exists.
        let cgroup = match shared.cpu_quota {
            Some(_) => Some(CpuCgroup::create(&format!(
                "tagcast-loadtest-{}-{name}",
                std::process::id()
            ))?),
            None => None,
        };
        let child = Command::new(&shared.bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", shared.bin.display()))?;
        let node = NodeProc {
            name: name.to_owned(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            state: NodeState::Running,
            cgroup,
        };
        if let Some(cg) = &node.cgroup {
            cg.add(node.pid())?;
        }
        Ok(node)
    }

    /// Waits until the node prints its address and `/readyz` answers 200 (its first round
    /// is done: membership written, partitions taken).
    pub(crate) async fn wait_ready(&mut self, ca_pem: &str) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name,
                    tail(&self.log, 0)
                ));
            }
            if let Some(addr) = tail(&self.log, 0)
                .lines()
                .find_map(|l| l.strip_prefix("tagcast: serving on "))
                .and_then(|a| a.trim().parse().ok())
            {
                self.addr = addr;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.addr.port() == 0 {
            return Err(format!(
                "{} printed no address in {START_TIMEOUT:?}",
                self.name
            ));
        }
        while t0.elapsed() < START_TIMEOUT {
            let probe = async {
                let c = H2Client::connect(self.addr, ca_pem).await.ok()?;
                c.send(http::Method::GET, "/readyz", &[], Vec::new())
                    .await
                    .ok()
            };
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{}: /readyz not 200 within {START_TIMEOUT:?}:\n{}",
            self.name,
            tail(&self.log, 0)
        ))
    }

    /// Caps the node at `--cpu-quota` CPUs (nothing without it), and reads the quota back.
    pub(crate) fn cap(&self, shared: &Shared) -> Result<(), String> {
        let (Some(cg), Some(q)) = (&self.cgroup, shared.cpu_quota) else {
            return Ok(());
        };
        cg.cap(q)?;
        match cg.quota()? {
            Some(got) if (got - q).abs() < 0.01 || q < 0.01 => Ok(()),
            got => Err(format!(
                "{}: cgroup quota reads back as {got:?} CPUs, not {q}",
                self.name
            )),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `utime + stime` in ticks while the process exists.
    pub(crate) fn cpu_ticks(&self) -> Option<u64> {
        (self.state != NodeState::Killed)
            .then(|| cpu_ticks(self.pid()))
            .flatten()
    }

    /// `kill -9` (nothing flushed, nothing shut down) and reaps the process.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state = NodeState::Killed;
    }

    /// SIGSTOP: the process keeps its sockets and its leases' revisions, and does nothing.
    pub(crate) fn stop(&mut self) {
        self.signal("-STOP");
        self.state = NodeState::Stopped;
    }

    /// SIGCONT after [`NodeProc::stop`].
    pub(crate) fn resume(&mut self) {
        self.signal("-CONT");
        self.state = NodeState::Running;
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(self.pid().to_string())
            .status();
    }

    /// Whether the process exited by itself (a crash the harness did not cause).
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) if self.state != NodeState::Killed => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.state == NodeState::Stopped {
            self.signal("-CONT");
        }
        if self.state != NodeState::Killed {
            self.kill9();
        }
        // `cgroup` is dropped after this body: the process has left it.
    }
}
