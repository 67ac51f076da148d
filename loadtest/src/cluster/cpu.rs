//! CPU of the processes under test: `utime + stime` from `/proc/<pid>/stat` (the crate's
//! [`cpu`](crate::cpu) module), and the cgroup-v1 cpu cgroup that caps a node
//! (`--cpu-quota`), removed when dropped.

use std::path::{Path, PathBuf};

/// Where cgroup v1's cpu controller is mounted on Linux.
const CPU_CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";

pub(crate) use crate::cpu::{cpu_ticks, ticks_per_sec as clock_ticks};

/// A cpu cgroup of its own for one process, capped at `quota` CPUs; removed on drop (after
/// the process in it exited: the caller drops the process first).
#[derive(Debug)]
pub(crate) struct CpuCgroup {
    dir: PathBuf,
}

impl CpuCgroup {
    /// Creates `/sys/fs/cgroup/cpu/<name>` with `cpu.cfs_quota_us` = quota ×
    /// `cpu.cfs_period_us`.
    pub(crate) fn create(name: &str, quota: f64) -> Result<CpuCgroup, String> {
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
        let period: u64 = std::fs::read_to_string(cg.dir.join("cpu.cfs_period_us"))
            .map_err(|e| format!("{}: {e}", cg.dir.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}/cpu.cfs_period_us: {e}", cg.dir.display()))?;
        // The kernel refuses quotas under 1 ms.
        let quota_us = ((quota * period as f64).round() as u64).max(1000);
        cg.write("cpu.cfs_quota_us", &quota_us.to_string())?;
        Ok(cg)
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
}
