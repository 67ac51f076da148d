//! CPU time of a process from `/proc/<pid>/stat` (user + system, all threads, children not
//! included), for the "CPU seconds per 1,000 deliveries" figures of issue 17.

use std::sync::OnceLock;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on every Linux
/// build in use, the fallback when `getconf` is missing).
pub(crate) fn ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
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
    })
}

/// `utime + stime` of `/proc/<pid>/stat` text, in ticks.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields after
    // the last ')'. There, field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `utime + stime` of `pid` in ticks, `None` when it is gone.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_ticks(&text)
}

/// User + system CPU seconds `pid` has used so far (`None`: this process); `None` when
/// `/proc` cannot be read (not Linux, the process gone). Resolution: one clock tick (10 ms).
pub fn process_cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    stat_ticks(&text).map(|t| t as f64 / ticks_per_sec())
}

/// CPU seconds per 1,000 deliveries; `None` without deliveries.
pub fn per_1k(cpu_secs: f64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu_secs * 1000.0 / deliveries as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (tag cast) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 9 0 1000 2000000 500 18446744073709551615";
        assert_eq!(stat_ticks(line), Some(325));
        assert_eq!(stat_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "1234 (tag cast) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(stat_ticks(line), Some(325));
        assert!(process_cpu_secs(None).is_some_and(|s| s >= 0.0));
        assert_eq!(per_1k(2.0, 4000), Some(0.5));
        assert_eq!(per_1k(2.0, 0), None);
    }
}
