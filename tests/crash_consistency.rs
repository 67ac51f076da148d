//! Crash test: a child process writes continuously (upserts, deletes and handle handovers from
//! several threads) and reports every acknowledged write; the parent SIGKILLs it at a random
//! moment, reopens the registry and checks that every acknowledged write is there and every
//! invariant holds. Several rounds reuse one store, so recovery of a crashed store that was
//! itself recovered from a crash is exercised too.

mod crash_child;

use std::time::Duration;

use tagcast::{Installation, InstallationId, PushHandle, Registry, Tag};

const CHILD_ENV: &str = "TAGCAST_CRASH_CHILD_DIR";
const THREADS: u64 = 4;
const IDS_PER_THREAD: u64 = 200;
/// Handles are shared by many ids, so writes keep moving handles between installations.
const HANDLES: u64 = 300;

fn version_of(inst: &Installation) -> u64 {
    inst.tags
        .iter()
        .find_map(|t| t.as_str().strip_prefix("v").and_then(|v| v.parse().ok()))
        .expect("every written installation carries a version tag")
}

/// The writer. Runs only when the parent starts this test binary with `CHILD_ENV` set.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var("TAGCAST_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let reg = Registry::open(&dir).unwrap();
    std::thread::scope(|s| {
        // Compaction runs all the time too, so crashes also land in the middle of it.
        let compactor = reg.clone();
        s.spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            compactor.compact().unwrap();
        });
        for t in 0..THREADS {
            let reg = reg.clone();
            s.spawn(move || {
                let mut op = start;
                loop {
                    op += 1;
                    let k = t * IDS_PER_THREAD + op % IDS_PER_THREAD;
                    let id = InstallationId::new(format!("c{k}")).unwrap();
                    // Versions are globally increasing per id: `op` grows and each id belongs
                    // to one thread.
                    let version = op * THREADS + t;
                    if op % 7 == 0 {
                        reg.delete(&id).unwrap();
                        println!("del {id} {version}");
                    } else {
                        let handle =
                            PushHandle::apns(&format!("{:064x}", (op * 31 + t) % HANDLES)).unwrap();
                        let tags = vec![
                            Tag::new(format!("v{version}")).unwrap(),
                            Tag::new("all").unwrap(),
                        ];
                        reg.upsert(Installation::new(id.clone(), handle).with_tags(tags))
                            .unwrap();
                        println!("put {id} {version}");
                    }
                }
            });
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Last acknowledged operation per id: (version, is_delete).
    let mut acked: std::collections::HashMap<String, (u64, bool)> = Default::default();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut start = 0u64;
    let rounds = 6;
    let mut total_acks = 0;
    let mut history: Vec<(usize, String)> = Vec::new();
    for round in 0..rounds {
        let start_of_round = start;
        // Kill it at a pseudo-random moment after its first acknowledgement.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let lines = crash_child::run_then_kill(
            "crash_child_writer",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("TAGCAST_CRASH_START", start.to_string()),
            ],
            |l| l.contains("put c") || l.contains("del c"),
            Duration::from_millis(100 + seed % 500),
        );
        let mut max_version = 0;
        let mut acks = 0;
        for l in &lines {
            // The harness prints "test crash_child_writer ... " without a newline before the
            // writers start, so the first acknowledgement shares its line: parse from the last
            // "put " / "del " on the line.
            let Some(at) = [l.rfind("put c"), l.rfind("del c")]
                .into_iter()
                .flatten()
                .max()
            else {
                continue;
            };
            let l = &l[at..];
            let mut parts = l.split_whitespace();
            let (Some(kind), Some(id), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
                continue; // the test harness's own output, or a line cut by the kill
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            if kind != "put" && kind != "del" {
                continue;
            }
            history.push((round, l.to_string()));
            max_version = max_version.max(v);
            acks += 1;
            let e = acked.entry(id.to_string()).or_insert((0, false));
            if v >= e.0 {
                *e = (v, kind == "del");
            }
        }
        assert!(acks > 0, "round {round}: the child acknowledged no write");
        total_acks += acks;
        start = max_version / THREADS + 1000;

        let reg = Registry::open(dir.path()).unwrap();
        reg.check_invariants()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let round_start = start_of_round;
        // Each writer thread had at most one operation in flight when it was killed: the one
        // after its last acknowledged op. If that is a delete, its id may be gone.
        let mut last_op = [None::<u64>; THREADS as usize];
        for (_, l) in history.iter().filter(|(r, _)| *r == round) {
            if let Some(v) = l
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                let (op, t) = (v / THREADS, (v % THREADS) as usize);
                last_op[t] = Some(last_op[t].map_or(op, |o: u64| o.max(op)));
            }
        }
        let in_flight_deletes: Vec<String> = (0..THREADS)
            .filter_map(|t| {
                let next = last_op[t as usize].unwrap_or(round_start) + 1;
                (next % 7 == 0).then(|| format!("c{}", t * IDS_PER_THREAD + next % IDS_PER_THREAD))
            })
            .collect();
        for (id, (v, deleted)) in &acked {
            let got = reg.get(&InstallationId::new(id).unwrap());
            match (got, deleted) {
                (None, true) => {}
                (None, false) if in_flight_deletes.contains(id) => {}
                (None, false) => {
                    let hist: Vec<String> = history
                        .iter()
                        .filter(|(_, l)| l.split_whitespace().nth(1) == Some(id.as_str()))
                        .map(|(r, l)| format!("r{r}: {l}"))
                        .collect();
                    panic!(
                        "round {round}: acknowledged {id} v{v} is missing; acknowledged: {hist:?}"
                    )
                }
                (Some(inst), _) => {
                    let have = version_of(&inst);
                    // A later, unacknowledged write may have reached the disk; an older one may not.
                    assert!(
                        have >= *v && (!deleted || have > *v),
                        "round {round}: {id} has v{have}, acknowledged {} v{v}",
                        if *deleted { "delete" } else { "put" }
                    );
                }
            }
        }
        // Bring the expectations up to date with what survived (later unacked writes count now).
        for (id, e) in acked.iter_mut() {
            *e = match reg.get(&InstallationId::new(id).unwrap()) {
                Some(inst) => (version_of(&inst), false),
                None => (e.0, true),
            };
        }
        drop(reg);
    }
    assert!(
        total_acks > 100,
        "only {total_acks} acknowledged writes over {rounds} rounds"
    );
}
