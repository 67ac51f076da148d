//! The SIGKILL harness shared by the crash tests (`crash_consistency.rs`, `state_crash.rs`):
//! run one test of the current binary as a child writer, let it write for a while, kill it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the test `name` of this test binary as a child with `envs`, reads its stdout until a
/// line satisfies `acked` (the child may spend a while recovering first: the clock starts
/// there), keeps reading for `run_for`, then SIGKILLs it. Returns every line it printed.
pub fn run_then_kill(
    name: &str,
    envs: &[(&str, String)],
    acked: impl Fn(&str) -> bool,
    run_for: Duration,
) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child writes");
        let ack = acked(&l);
        lines.push(l);
        if ack {
            break;
        }
    }
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(5)) {
            lines.push(l);
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    lines
}
