#!/usr/bin/env python3
"""Mock APNs vs nghttpd under h2load (docs/benchmarks.md, "Mock APNs server vs nghttpd").

Usage (from the repository root, after `apt-get install -y nghttp2-client nghttp2-server`):

    cargo build --release -p tagcast-loadtest
    python3 loadtest/testdata/bench-apns-vs-nghttpd.py [path/to/tagcast-loadtest]

Both servers run for the whole session; each round runs the same h2load command against
nghttpd and against the mock, alternating which goes first. Every run records how much CPU
processes other than the server and h2load used meanwhile; a pair where that exceeded 0.1
core is marked DISTURBED and the summary gives medians for all pairs and for undisturbed
pairs. Environment: N (requests per run, default 400000), ROUNDS (default 14).
"""
import os, re, resource, subprocess, sys, tempfile, time, statistics

N = int(os.environ.get("N", "400000"))
ROUNDS = int(os.environ.get("ROUNDS", "14"))
BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/tagcast-loadtest"
BIN = os.path.abspath(BIN)
MOCK_PORT, NG_PORT = 18443, 18444
HZ = os.sysconf("SC_CLK_TCK")
work = tempfile.mkdtemp(prefix="bench-apns-")
os.chdir(work)

# 200,000 distinct 64-hex-digit device tokens; h2load walks the list in order per client.
for port, name in [(MOCK_PORT, "mock"), (NG_PORT, "ng")]:
    with open(f"uris-{name}.txt", "w") as f:
        for i in range(200_000):
            f.write(f"https://127.0.0.1:{port}/3/device/{i * 7919 + 1:064x}\n")
with open("payload.json", "w") as f:
    f.write('{"aps":{"alert":"hello"}}')
os.mkdir("htdocs")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ng.key", "-out", "ng.crt",
                "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)


def busy_jiffies():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def proc_jiffies(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


mock = subprocess.Popen([BIN, "mock", "--apns", f"127.0.0.1:{MOCK_PORT}", "--out-dir", "mock"],
                        stdout=open("mock.out", "w"), stderr=subprocess.STDOUT)
ng = subprocess.Popen(["nghttpd", "-d", "htdocs", str(NG_PORT), "ng.key", "ng.crt"],
                      stdout=open("ng.out", "w"), stderr=subprocess.STDOUT)
time.sleep(1.0)
token = re.search(r"bearer (\S+)", open("mock.out").read()).group(1)


def run(target, pid):
    cmd = ["h2load", "-n", str(N), "-c", "4", "-m", "100", "-t", "1", "-i", f"uris-{target}.txt",
           "-d", "payload.json", "-H", f"authorization: bearer {token}",
           "-H", "apns-topic: com.example.tagcast", "-H", "apns-push-type: alert"]
    b0, s0, t0 = busy_jiffies(), proc_jiffies(pid), time.time()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1, s1, t1 = busy_jiffies(), proc_jiffies(pid), time.time()
    h2load_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    other = (b1 - b0) / HZ - (s1 - s0) / HZ - h2load_cpu
    rate = float(re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", out).group(1))
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    return rate, other / (t1 - t0), ok


def wait_quiet(limit=30.0):
    """Waits until other processes use < 0.1 core over 0.5 s (at most `limit` seconds)."""
    end = time.time() + limit
    while time.time() < end:
        b0, m0, n0 = busy_jiffies(), proc_jiffies(mock.pid), proc_jiffies(ng.pid)
        time.sleep(0.5)
        used = (busy_jiffies() - b0) - (proc_jiffies(mock.pid) - m0) - (proc_jiffies(ng.pid) - n0)
        if used / HZ / 0.5 < 0.1:
            return


pairs = []
try:
    for r in range(ROUNDS):
        wait_quiet()
        order = [("ng", ng.pid), ("mock", mock.pid)]
        if r % 2:
            order.reverse()
        res = {t: run(t, p) for t, p in order}
        (a, oa, _), (b, ob, okb) = res["ng"], res["mock"]
        disturbed = max(oa, ob) > 0.1
        pairs.append((a, b, disturbed))
        print(f"round {r + 1}: nghttpd {a:9.0f} req/s, mock {b:9.0f} req/s ({okb} ok), "
              f"ratio {b / a:.2f}  other CPU {oa:.2f}/{ob:.2f} cores"
              f"{'  DISTURBED' if disturbed else ''}", flush=True)
finally:
    mock.send_signal(2)
    ng.terminate()
    mock.wait()
    ng.wait()
for name, sel in [("all", [(a, b) for a, b, _ in pairs]),
                  ("undisturbed", [(a, b) for a, b, d in pairs if not d])]:
    if sel:
        print(f"{name} ({len(sel)} pairs): median nghttpd {statistics.median(a for a, _ in sel):.0f}"
              f" req/s, median mock {statistics.median(b for _, b in sel):.0f} req/s, "
              f"median ratio {statistics.median(b / a for a, b in sel):.2f}")
