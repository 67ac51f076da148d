#!/usr/bin/env bash
# The delivery figures of docs/benchmarks.md ("Delivery: the main job"): three default runs
# with h2load, three interleaved pairs of zero / 20 ms latency broadcasts, one run with the
# default fault profile. Usage, from the repository root after
# `cargo build --release -p tagcast-loadtest` (and `apt-get install -y nghttp2-client`):
#   loadtest/testdata/bench-delivery.sh OUT_DIR
set -euo pipefail
out=${1:?usage: bench-delivery.sh OUT_DIR}
mkdir -p "$out"
bin=target/release/tagcast-loadtest
for i in 1 2 3; do
  $bin --h2load --json "$out/default-$i.json" > "$out/default-$i.txt" 2>&1
done
for i in 1 2 3; do
  $bin --broadcast-only --json "$out/lat0-$i.json" > "$out/lat0-$i.txt" 2>&1
  $bin --broadcast-only --latency-ms 20 --json "$out/lat20-$i.json" > "$out/lat20-$i.txt" 2>&1
done
$bin --faults default --json "$out/faults.json" > "$out/faults.txt" 2>&1
python3 - "$out" <<'PY'
import json, sys, statistics, glob, os
out = sys.argv[1]
def load(p): return json.load(open(p))
def med(xs): return statistics.median(xs)
d = [load(p) for p in sorted(glob.glob(f"{out}/default-*.json"))]
b = [r["sends"][-1] for r in d]
print("default (1M, apns+fcm): broadcast rate", [round(s["per_sec"]) for s in b], "median", round(med([s["per_sec"] for s in b])))
print("  last device s", [round(s["last_secs"], 2) for s in b], "h2load", [round(r["h2load_per_sec"] or 0) for r in d], "ratio", [round(r["h2load_ratio"] or 0, 2) for r in d])
print("  expr send rate", [round(r["sends"][0]["per_sec"]) for r in d], "p50/p99 ms", [(s["latency_p50_us"]/1e3, s["latency_p99_us"]/1e3) for s in b])
l0 = [load(p)["sends"][-1]["per_sec"] for p in sorted(glob.glob(f"{out}/lat0-*.json"))]
l20 = [load(p)["sends"][-1]["per_sec"] for p in sorted(glob.glob(f"{out}/lat20-*.json"))]
print("latency 0 :", [round(x) for x in l0], "median", round(med(l0)))
print("latency 20:", [round(x) for x in l20], "median", round(med(l20)), "ratio of medians", round(med(l20)/med(l0), 2))
f = load(f"{out}/faults.json")
print("faults default: verified", f["verified"], [(s["audience"], s["delivered"], s["pruned"], s["retried"], s["ambiguous_resends"], round(s["per_sec"]), round(s["last_secs"], 1)) for s in f["sends"]])
PY
