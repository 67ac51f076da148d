//! The verdict: the guarantees of CLUSTER.md ("Guarantees") checked against what the mock
//! push service counted per device token and what the cluster reported. Pure: numbers in,
//! checks out.
//!
//! | scenario                          | checks                                                   |
//! |-----------------------------------|----------------------------------------------------------|
//! | every one                         | the send completed; 0 acknowledged writes lost           |
//! | none, join                        | 0 missed, 0 duplicates                                   |
//! | kill-owner, kill-nats, zombie,    | 0 missed; duplicates ≤ reported possible duplicates      |
//! | partition (at least once)         |   ≤ claim size × takeovers                               |
//! | kill-owner-at-most-once           | 0 duplicates; missed ≤ reported possibly missed          |
//! |                                   |   ≤ claim size × takeovers                               |
//!
//! At most once, the design bounds the misses from above only: the crashed owner may have
//! reached some devices of the claim it held, so `missed` can be below the reported count.

use super::args::Scenario;

/// What a run observed.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub completed: bool,
    pub acknowledged_writes: u64,
    pub acknowledged_writes_lost: u64,
    /// Acknowledged devices without a delivery at the mock.
    pub missed: u64,
    /// Deliveries to a token that already had one (the mock's count).
    pub duplicates_observed: u64,
    pub possible_duplicates_reported: u64,
    pub possibly_missed_reported: u64,
    /// Unfinished send claims settled by a new owner (summed over the nodes).
    pub takeovers: u64,
    pub claim_size: u32,
}

/// One guarantee checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail,
    }
}

/// The checks of `scenario` on `o`.
pub fn checks(scenario: Scenario, o: &Observed) -> Vec<Check> {
    let bound = u64::from(o.claim_size) * o.takeovers;
    let mut v = vec![
        check(
            "send completed",
            o.completed,
            "every partition finished the broadcast".into(),
        ),
        check(
            "no acknowledged write lost",
            o.acknowledged_writes_lost == 0,
            format!(
                "{} of {} acknowledged installations not readable afterwards",
                o.acknowledged_writes_lost, o.acknowledged_writes
            ),
        ),
    ];
    match scenario {
        Scenario::None | Scenario::Join => {
            v.push(check(
                "no device missed",
                o.missed == 0,
                format!("missed {}", o.missed),
            ));
            v.push(check(
                "no duplicate",
                o.duplicates_observed == 0,
                format!("duplicates observed {}", o.duplicates_observed),
            ));
        }
        Scenario::KillOwnerAtMostOnce => {
            v.push(check(
                "at most once: no duplicate",
                o.duplicates_observed == 0,
                format!("duplicates observed {}", o.duplicates_observed),
            ));
            v.push(check(
                "at most once: missed ≤ reported possibly missed",
                o.missed <= o.possibly_missed_reported,
                format!(
                    "missed {} ≤ possibly missed {} (an upper bound only: the crashed owner \
                     may have reached part of its claim)",
                    o.missed, o.possibly_missed_reported
                ),
            ));
            v.push(check(
                "at most once: possibly missed ≤ claim size × takeovers",
                o.possibly_missed_reported <= bound,
                format!(
                    "{} ≤ {} × {} = {bound}",
                    o.possibly_missed_reported, o.claim_size, o.takeovers
                ),
            ));
        }
        Scenario::KillOwner | Scenario::KillNats | Scenario::Zombie | Scenario::Partition => {
            v.push(check(
                "at least once: no device missed",
                o.missed == 0,
                format!("missed {}", o.missed),
            ));
            v.push(check(
                "at least once: duplicates ≤ reported possible duplicates",
                o.duplicates_observed <= o.possible_duplicates_reported,
                format!(
                    "{} ≤ {}",
                    o.duplicates_observed, o.possible_duplicates_reported
                ),
            ));
            v.push(check(
                "at least once: possible duplicates ≤ claim size × takeovers",
                o.possible_duplicates_reported <= bound,
                format!(
                    "{} ≤ {} × {} = {bound}",
                    o.possible_duplicates_reported, o.claim_size, o.takeovers
                ),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Observed {
        Observed {
            completed: true,
            acknowledged_writes: 100,
            claim_size: 10,
            ..Observed::default()
        }
    }

    fn failed(s: Scenario, o: &Observed) -> Vec<String> {
        checks(s, o)
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_clean_run_passes_every_scenario() {
        for s in [
            Scenario::None,
            Scenario::KillOwner,
            Scenario::KillOwnerAtMostOnce,
            Scenario::KillNats,
            Scenario::Zombie,
            Scenario::Join,
            Scenario::Partition,
        ] {
            assert!(failed(s, &clean()).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn bounds_per_scenario() {
        // At least once: 5 duplicates within 8 reported within 10 × 1.
        let o = Observed {
            duplicates_observed: 5,
            possible_duplicates_reported: 8,
            takeovers: 1,
            ..clean()
        };
        assert!(failed(Scenario::KillOwner, &o).is_empty());
        assert_eq!(failed(Scenario::None, &o), ["no duplicate"]);
        assert_eq!(
            failed(Scenario::KillOwnerAtMostOnce, &o),
            ["at most once: no duplicate"]
        );
        let o = Observed {
            possible_duplicates_reported: 11,
            takeovers: 1,
            ..clean()
        };
        assert_eq!(
            failed(Scenario::Zombie, &o),
            ["at least once: possible duplicates ≤ claim size × takeovers"]
        );
        let o = Observed {
            duplicates_observed: 3,
            possible_duplicates_reported: 2,
            takeovers: 1,
            ..clean()
        };
        assert_eq!(
            failed(Scenario::Partition, &o),
            ["at least once: duplicates ≤ reported possible duplicates"]
        );
        // At most once: misses within the reported count (not equal to it).
        let o = Observed {
            missed: 4,
            possibly_missed_reported: 9,
            takeovers: 1,
            ..clean()
        };
        assert!(failed(Scenario::KillOwnerAtMostOnce, &o).is_empty());
        assert_eq!(
            failed(Scenario::KillOwner, &o),
            ["at least once: no device missed"]
        );
        let o = Observed {
            missed: 10,
            possibly_missed_reported: 9,
            takeovers: 1,
            ..clean()
        };
        assert_eq!(
            failed(Scenario::KillOwnerAtMostOnce, &o),
            ["at most once: missed ≤ reported possibly missed"]
        );
        let o = Observed {
            acknowledged_writes_lost: 1,
            completed: false,
            ..clean()
        };
        assert_eq!(
            failed(Scenario::Join, &o),
            ["send completed", "no acknowledged write lost"]
        );
    }
}
