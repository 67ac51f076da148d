//! The server under test as a separate `tagcast serve` process: its configuration file, start
//! (waiting for "serving on" and `/readyz`), `kill -9` and restart on the same data directory.

use std::io::{Read as _, Seek as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mock::testkit::H2Client;

/// The shared access key of the hub `soak` (32+ characters, as the server requires).
pub(crate) const KEY: &str = "c29hay1rZXktZm9yLXRoZS1yZXN0LWFwaS1zb2Fr";
/// The key of the hub `tiny` (hubs may not share a secret).
pub(crate) const TINY_KEY: &str = "dGlueS1rZXktZm9yLXRoZS1yZXN0LWFwaS10aW55";

/// How long a start (recovery included) may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What the configuration needs to know.
pub(crate) struct ConfigInput<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) cert_pem: &'a str,
    pub(crate) key_pem: &'a str,
    pub(crate) ca_file: &'a Path,
    pub(crate) apns_url: &'a str,
    pub(crate) idle_timeout_secs: u64,
    pub(crate) header_read_timeout_secs: u64,
}

/// Writes `tagcast.toml` (and the files it names) into `input.dir`; returns its path.
///
/// Limits: the rate limit and the sends-in-flight cap are set out of the way (the soak does
/// not exercise them: a 429 is therefore unexpected); the installation quota stays far above
/// the soak's id sets. Connection timeouts are the soak's options (defaults: the server's).
pub(crate) fn write_config(input: &ConfigInput<'_>) -> std::io::Result<PathBuf> {
    let d = input.dir;
    let file = |name: &str, text: &str| write_private(d, name, text);
    let p8 = file("key.p8", crate::mock::apns::TEST_KEY_PEM)?;
    let apns = crate::mock::apns::hub_toml(Path::new(&p8), input.apns_url);
    let hub = |name: &str, key: &str| {
        format!(
            "[[hub]]\nname = \"{name}\"\nca_file = \"{ca}\"\nca_only = true\n\
             [hub.limits]\nrequests_per_second = 100000000\nburst = 100000000\n\
             max_sends_in_flight = 100000\nmax_installations = 1000000\n\
             [[hub.key]]\nname = \"full\"\nkey = \"{key}\"\nrights = [\"Listen\", \"Send\", \"Manage\"]\n\
             {apns}",
            ca = input.ca_file.display()
        )
    };
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         data_dir = \"{data}\"\ndrain_delay_secs = 0\nidle_timeout_secs = {idle}\n\
         header_read_timeout_secs = {head}\n\n[log]\nformat = \"json\"\nlevel = \"warn\"\n\
         access = false\n\n{soak}\n{tiny}",
        cert = file("cert.pem", input.cert_pem)?,
        key = file("server-key.pem", input.key_pem)?,
        data = d.join("data").display(),
        idle = input.idle_timeout_secs,
        head = input.header_read_timeout_secs,
        soak = hub("soak", KEY),
        tiny = hub("tiny", TINY_KEY),
    );
    file("tagcast.toml", &config).map(PathBuf::from)
}

/// Writes `dir/name` readable by the owner only (the server warns about a world-readable
/// key); returns its path as text for a configuration file.
pub(crate) fn write_private(dir: &Path, name: &str, text: &str) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(p.display().to_string())
}

/// The `tagcast` binary: `explicit`, else next to this executable (`target/<profile>/`), else
/// one folder up (a test executable lives in `target/<profile>/deps/`).
pub fn locate_tagcast(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--tagcast {}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join("tagcast"), dir.join("..").join("tagcast")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no tagcast binary next to {}: build it first (`cargo build --bin tagcast`, or \
             `cargo build --release --bin tagcast` for the release harness) or pass --tagcast PATH",
                exe.display()
            )
        })
}

/// A running `tagcast serve`.
pub(crate) struct ServerProc {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProc {
    /// Starts `bin serve --config config`, stderr appended to `log`, and waits until it
    /// prints its address and `/readyz` answers 200.
    pub(crate) async fn start(
        bin: &Path,
        config: &Path,
        log: &Path,
        ca_pem: &str,
    ) -> Result<ServerProc, String> {
        let offset = std::fs::metadata(log).map_or(0, |m| m.len());
        let err_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut proc = ServerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        proc.addr = proc.wait_address(log, offset).await?;
        proc.wait_ready(ca_pem).await?;
        Ok(proc)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls the log (from `offset`) for `tagcast: serving on <addr>`.
    async fn wait_address(&mut self, log: &Path, offset: u64) -> Result<SocketAddr, String> {
        let t0 = Instant::now();
        while t0.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "tagcast exited ({status}) before serving:\n{}",
                    tail(log, offset)
                ));
            }
            let text = tail(log, offset);
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("tagcast: serving on "))
                .and_then(|a| a.trim().parse().ok())
            {
                return Ok(addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "tagcast printed no address in {START_TIMEOUT:?}:\n{}",
            tail(log, offset)
        ))
    }

    async fn wait_ready(&self, ca_pem: &str) -> Result<(), String> {
        let t0 = Instant::now();
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
        Err(format!("/readyz not 200 within {START_TIMEOUT:?}"))
    }

    /// `kill -9` (SIGKILL: nothing is flushed, nothing shuts down) and reaps the process.
    pub(crate) fn kill9(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// SIGTERM (the server drains and exits; a profiler wrapping it writes its data), then
    /// waits up to `limit` for the exit; `kill -9` after that.
    pub(crate) async fn terminate(&mut self, limit: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        while self.running() && t0.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.running() {
            let _ = self.kill9();
        }
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.kill9();
        }
    }
}

/// The log from `offset` on (at most its last 64 KiB), lossy.
pub(crate) fn tail(log: &Path, offset: u64) -> String {
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = offset.max(len.saturating_sub(64 * 1024));
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Lines of the (JSON) log at levels `ERROR` and `WARN`, and the first few such lines.
pub(crate) fn log_levels(log: &Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    const ERROR: &str = r#""level":"ERROR""#;
    const WARN: &str = r#""level":"WARN""#;
    let count = |lvl: &str| text.lines().filter(|l| l.contains(lvl)).count() as u64;
    let first = text
        .lines()
        .filter(|l| l.contains(ERROR) || l.contains(WARN))
        .take(10)
        .map(|l| super::clip(l, 400).to_owned())
        .collect();
    (count(ERROR), count(WARN), first)
}
