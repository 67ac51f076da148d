//! CPU of the processes under test: `utime + stime` from `/proc/<pid>/stat` (the crate's
//! [`cpu`](crate::cpu) module), and the cgroup-v1 cpu cgroup that caps a node
//! (`--cpu-quota`: created uncapped, capped from the broadcast on), removed when dropped.

use std::path::{Path, PathBuf};

/// Where cgroup v1's cpu controller is mounted on Linux.
const CPU_CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";

pub(crate) use crate::cpu::{cpu_ticks, ticks_per_sec as clock_ticks};

/// A cpu cgroup of its own for one process, uncapped until [`CpuCgroup::cap`]; removed on
/// drop (after the process in it exited: the caller drops the process first).
#[derive(Debug)]
pub(crate) struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    /// Creates `/sys/fs/cgroup/cpu/<name>`, uncapped (`cpu.cfs_quota_us` = -1), and checks
    /// that its quota can be written.
    pub(crate) fn create(name: &str) -> Result<CpuCgroup, String> {
        let root = Path::new(CPU_CGROUP_ROOT);
        let hint = "--cpu-quota needs cgroup v1's cpu controller mounted at /sys/fs/cgroup/cpu \
                    and write access to it (root)";
        if !root.join("cpu.cfs_period_us").is_file() {
            return Err(format!(
                "{}/cpu.cfs_period_us not found: {hint}",
                root.display()
            ));
        }
        let dir = root.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating cgroup {}: {e}; {hint}", dir.display()))?;
        let cg = CpuCgroup { dir };
        cg.write("cpu.cfs_quota_us", "-1")?;
        Ok(cg)
    }

    /// Caps the cgroup at `quota` CPUs: `cpu.cfs_quota_us` = quota × `cpu.cfs_period_us`.
    pub(crate) fn cap(&self, quota: f64) -> Result<(), String> {
        let period: u64 = std::fs::read_to_string(self.dir.join("cpu.cfs_period_us"))
            .map_err(|e| format!("{}: {e}", self.dir.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}/cpu.cfs_period_us: {e}", self.dir.display()))?;
        // The kernel refuses quotas under 1 ms.
        let quota_us = ((quota * period as f64).round() as u64).max(1000);
        self.write("cpu.cfs_quota_us", &quota_us.to_string())
    }

    /// The quota written last, in CPUs (`None`: uncapped).
    pub(crate) fn quota(&self) -> Result<Option<f64>, String> {
        let read = |f: &str| -> Result<i64, String> {
            let p = self.dir.join(f);
            std::fs::read_to_string(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim()
                .parse()
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let quota = read("cpu.cfs_quota_us")?;
        Ok((quota > 0).then(|| quota as f64 / read("cpu.cfs_period_us").unwrap_or(100_000) as f64))
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> Result<(), String> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let p = self.dir.join(file);
        std::fs::write(&p, value).map_err(|e| format!("writing {value} to {}: {e}", p.display()))
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // A cgroup is removed with rmdir once no process is in it; a process just killed may
        // take a moment to leave.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks() > 0.0);
    }

    /// A cgroup starts uncapped, is capped by `cap`, and is gone after drop. Skipped (with a
    /// line saying so) where cgroup v1's cpu controller is not writable.
    #[test]
    fn a_cgroup_starts_uncapped_and_caps_when_told() {
        let name = format!("tagcast-loadtest-test-{}", std::process::id());
        let cg = match CpuCgroup::create(&name) {
            Ok(cg) => cg,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        assert_eq!(cg.quota().unwrap(), None);
        cg.cap(0.25).unwrap();
        assert_eq!(cg.quota().unwrap(), Some(0.25));
        cg.cap(0.0001).unwrap();
        assert_eq!(cg.quota().unwrap(), Some(0.01), "the kernel's 1 ms floor");
        let dir = cg.dir.clone();
        drop(cg);
        assert!(!dir.exists());
    }
}
