#!/usr/bin/env python3
"""Checks the workspace's dependency structure (issue 14); exits 1 and says why when it breaks.

1. No crate dev-depends on a crate that depends on it (directly or not): such a cycle builds
   two copies of the crate under test and hides what depends on what.
2. The engine built as an embedder builds it (`tagcast` with `default-features = false`) has
   none of the server's dependencies among its normal dependencies: clap, toml, quick-xml,
   metrics-exporter-prometheus, tracing-subscriber, and hyper's or hyper-util's server side;
   nor cluster mode's async-nats.
"""
import json
import subprocess
import sys


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--offline"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def dev_cycles(meta):
    members = {p["name"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
    normal = {n: {d["name"] for d in p["dependencies"] if d["kind"] is None and d["name"] in members}
              for n, p in members.items()}
    dev = {n: {d["name"] for d in p["dependencies"] if d["kind"] == "dev" and d["name"] in members}
           for n, p in members.items()}

    def reaches(a, b, seen=None):
        seen = seen or set()
        if a == b:
            return True
        seen.add(a)
        return any(reaches(x, b, seen) for x in normal[a] if x not in seen)

    return [f"{n} dev-depends on {d}, which depends on {n}"
            for n in members for d in sorted(dev[n]) if reaches(d, n)]


def embedder_deps():
    tree = subprocess.run(
        ["cargo", "tree", "-p", "tagcast", "--no-default-features", "-e", "normal,features",
         "--prefix", "none", "--offline"],
        check=True, capture_output=True, text=True,
    ).stdout
    banned = ["async-nats ", "clap ", "toml ", "quick-xml ", "metrics-exporter-prometheus ", "tracing-subscriber ",
              'hyper feature "server"', 'hyper-util feature "server"']
    return [f"the engine without the server feature depends on {b.strip()}"
            for b in banned if any(line.startswith(b) for line in tree.splitlines())]


def main():
    problems = dev_cycles(metadata()) + embedder_deps()
    for p in problems:
        print(f"check_deps: {p}")
    if problems:
        sys.exit(1)
    print("check_deps: no dev-dependency cycle; the engine alone has no server dependency")


if __name__ == "__main__":
    main()
