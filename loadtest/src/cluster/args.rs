//! The `cluster` command's options and scenarios, and which combinations make sense.

use std::path::PathBuf;

/// What happens during the broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No fault: every device exactly once.
    None,
    /// `kill -9` of a node at ~40% of the broadcast (at least once).
    KillOwner,
    /// The same with `delivery = "at-most-once"`.
    KillOwnerAtMostOnce,
    /// `kill -9` of a NATS server at ~40% of the broadcast (left dead).
    KillNats,
    /// SIGSTOP of a node at ~40% until the others serve its partitions, then SIGCONT.
    Zombie,
    /// Start with N−1 nodes; the N-th joins at ~30% (planned handoffs).
    Join,
    /// At ~40%, a node's connections to NATS are cut (its TCP proxies close and refuse) until
    /// the others serve its partitions and at least lease + margin passed; it keeps reaching
    /// the push mock.
    Partition,
}

impl Scenario {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::None => "none",
            Scenario::KillOwner => "kill-owner",
            Scenario::KillOwnerAtMostOnce => "kill-owner-at-most-once",
            Scenario::KillNats => "kill-nats",
            Scenario::Zombie => "zombie",
            Scenario::Join => "join",
            Scenario::Partition => "partition",
        }
    }

    /// Whether the nodes run with `delivery = "at-most-once"`.
    pub fn at_most_once(self) -> bool {
        self == Scenario::KillOwnerAtMostOnce
    }

    /// Whether the scenario faults (or adds) a tagcast node: it needs another one to take
    /// over.
    pub fn faults_a_node(self) -> bool {
        matches!(
            self,
            Scenario::KillOwner
                | Scenario::KillOwnerAtMostOnce
                | Scenario::Zombie
                | Scenario::Join
                | Scenario::Partition
        )
    }

    /// How far into the broadcast (fraction of the live devices delivered) the fault lands.
    pub fn trigger(self) -> Option<f64> {
        match self {
            Scenario::None => None,
            Scenario::Join => Some(0.3),
            _ => Some(0.4),
        }
    }
}

/// Options of the `cluster` command.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct ClusterArgs {
    /// tagcast nodes (separate `tagcast serve` processes).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Devices (APNs installations) registered through the REST API before the broadcast.
    #[arg(long, default_value_t = 200_000)]
    pub devices: u64,
    /// What happens during the broadcast.
    #[arg(long, value_enum, default_value_t = Scenario::None)]
    pub scenario: Scenario,
    /// Where to write the JSON report.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// NATS servers (a JetStream cluster on loopback).
    #[arg(long, default_value_t = 3)]
    pub nats_servers: usize,
    /// The `nats-server` binary (≥ 2.10.23); default: `TAGCAST_NATS_SERVER`.
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
    /// The `tagcast` binary (default: next to this executable).
    #[arg(long)]
    pub tagcast: Option<PathBuf>,
    /// Each tagcast node in its own cgroup-v1 cpu cgroup, capped at this many CPUs
    /// (`cpu.cfs_quota_us` = quota × `cpu.cfs_period_us`) from just before the broadcast
    /// (start and registration run uncapped); needs write access to /sys/fs/cgroup/cpu.
    #[arg(long)]
    pub cpu_quota: Option<f64>,
    /// `[cluster] partitions` (CLUSTER.md's test sizes: 64).
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// `[cluster] stream_groups`.
    #[arg(long, default_value_t = 16)]
    pub stream_groups: u16,
    /// `[cluster] claim_size`: the most a takeover re-sends (or skips) per claim.
    #[arg(long, default_value_t = 512)]
    pub claim_size: u32,
    /// `[cluster] lease_ms` (CLUSTER.md's test sizes: 3 s).
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// `[cluster] margin_ms`.
    #[arg(long, default_value_t = 1000)]
    pub margin_ms: u64,
    /// Concurrent registration requests per node.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Latency the mock APNs adds to every push (0: as fast as it answers).
    #[arg(long, default_value_t = 0)]
    pub mock_latency_ms: u64,
    /// HTTP/2 streams the mock APNs allows per connection (APNs: 1000).
    #[arg(long, default_value_t = 1000)]
    pub mock_max_streams: u32,
    /// How long the broadcast may take before the run fails.
    #[arg(long, default_value_t = 600)]
    pub broadcast_timeout_secs: u64,
    /// Keep the run's directory (node configurations and logs, NATS stores) and print it.
    #[arg(long)]
    pub keep: bool,
}

impl ClusterArgs {
    /// The options for `nodes` nodes, `devices` devices and `scenario`, the rest default.
    pub fn new(nodes: usize, devices: u64, scenario: Scenario) -> ClusterArgs {
        ClusterArgs {
            nodes,
            devices,
            scenario,
            json: None,
            nats_servers: 3,
            nats_server: None,
            tagcast: None,
            cpu_quota: None,
            partitions: 64,
            stream_groups: 16,
            claim_size: 512,
            lease_ms: 3000,
            margin_ms: 1000,
            concurrency: 64,
            mock_latency_ms: 0,
            mock_max_streams: 1000,
            broadcast_timeout_secs: 600,
            keep: false,
        }
    }

    /// Refuses combinations that cannot run, naming them.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if self.nodes == 1 && self.scenario.faults_a_node() {
            return Err(format!(
                "--scenario {} needs at least 2 nodes (with --nodes 1 no other node can take \
                 over{}); --nodes 1 runs none or kill-nats",
                self.scenario.name(),
                if self.scenario == Scenario::Join {
                    ", and join starts with N−1 = 0 nodes"
                } else {
                    ""
                }
            ));
        }
        if self.devices == 0 {
            return Err("--devices must be at least 1".into());
        }
        if self.scenario == Scenario::KillNats && self.nats_servers < 3 {
            return Err(
                "--scenario kill-nats needs --nats-servers ≥ 3 (a majority must stay up)".into(),
            );
        }
        if self.nats_servers == 0 {
            return Err("--nats-servers must be at least 1".into());
        }
        if let Some(q) = self.cpu_quota {
            if !(q > 0.0 && q.is_finite()) {
                return Err(format!(
                    "--cpu-quota {q}: must be a positive number of CPUs"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_refuses_the_scenarios_that_fault_a_node() {
        for s in [
            Scenario::KillOwner,
            Scenario::KillOwnerAtMostOnce,
            Scenario::Zombie,
            Scenario::Join,
            Scenario::Partition,
        ] {
            let e = ClusterArgs::new(1, 10, s).check().unwrap_err();
            assert!(
                e.contains(s.name()) && e.contains("at least 2 nodes"),
                "{e}"
            );
        }
        for s in [Scenario::None, Scenario::KillNats] {
            ClusterArgs::new(1, 10, s).check().unwrap();
        }
        ClusterArgs::new(2, 10, Scenario::Join).check().unwrap();
        let mut a = ClusterArgs::new(3, 10, Scenario::None);
        a.cpu_quota = Some(0.0);
        assert!(a.check().unwrap_err().contains("--cpu-quota"));
    }
}
