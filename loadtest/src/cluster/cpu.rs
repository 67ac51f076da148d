//! CPU of the processes under test: `utime + stime` from `/proc/<pid>/stat`, and the cgroup-v1
//! cpu cgroup that caps a node (`--cpu-quota`), removed when dropped.

use std::path::{Path, PathBuf};

/// Where cgroup v1's cpu controller is mounted on Linux.
const CPU_CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`): `getconf CLK_TCK`, else 100,
/// the value on every mainstream Linux architecture (proc(5)).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `utime + stime` of `pid` in ticks, `None` when it is gone.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces, so the fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

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
    fn stat_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (tag cast) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 1000 2000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(clock_ticks() > 0.0);
    }
}
