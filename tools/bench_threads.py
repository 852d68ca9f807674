#!/usr/bin/python3
"""weft's training throughput on a quiet machine and beside a competing load, for each
OpenMP wait policy: what the README's "Threading" section quotes.

    tools/bench_threads.py [--rounds 5] [--steps 100] [MODEL ...]

MODEL is mlp_gan, sparse_ae or dcgan (default: mlp_gan sparse_ae). For each model and
round, in alternation: `weft bench` at 2 threads with weft's default (it looks at the
machine when it starts: spin when quiet, wait passively when other processes are busy),
always with libgomp's spinning default (GOMP_SPINCOUNT=300000), always passive
(OMP_WAIT_POLICY=passive), and at 1 thread; first on a quiet machine, then while a second weft
run (mlp_gan training at 1 thread, endlessly) holds one core. Prints the median samples/s.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEFT = os.path.join(ROOT, "build", "weft")
POLICIES = [
    ("2 threads, weft's default (chosen at start)", {}, 2),
    ("2 threads, always spin (libgomp's default)", {"GOMP_SPINCOUNT": "300000"}, 2),
    ("2 threads, always passive", {"OMP_WAIT_POLICY": "passive"}, 2),
    ("1 thread", {}, 1),
]


def bench(model, env_extra, threads, steps):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    env.update(env_extra)
    cmd = [WEFT, "bench", os.path.join(ROOT, "graphs", model + ".json"), "--steps", str(steps),
           "--warmup", "5", "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    m = re.search(r"([0-9.]+) samples/s", out.stdout + out.stderr)
    if out.returncode != 0 or not m:
        sys.exit(f"weft bench failed: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return float(m.group(1))


def competitor():
    """A second weft run that trains until it is stopped, on one thread."""
    out = os.path.join("/tmp", f"weft_competitor_{os.getpid()}")
    return subprocess.Popen(
        [WEFT, "train", os.path.join(ROOT, "graphs", "mlp_gan.json"), "--threads", "1",
         "--steps", "100000000", "--sample-every", "100000000", "--checkpoint-every",
         "100000000", "--quiet", "--overwrite", "--out", out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=["mlp_gan", "sparse_ae"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    print(f"{cpu}, {os.cpu_count()} cores; median of {a.rounds} alternating rounds, "
          f"{a.steps} steps each")
    rows = []
    for model in a.models:
        for load in ("quiet", "beside a second weft run"):
            rival = competitor() if load != "quiet" else None
            if rival:
                time.sleep(2)  # let it load its data and reach its steady state
            try:
                got = {name: [] for name, _, _ in POLICIES}
                for _ in range(a.rounds):
                    for name, env, threads in POLICIES:
                        got[name].append(bench(model, env, threads, a.steps))
            finally:
                if rival:
                    rival.send_signal(signal.SIGKILL)
                    rival.wait()
            for name, _, _ in POLICIES:
                med = statistics.median(got[name])
                rows.append((model, load, name, med))
                print(f"{model:10} {load:26} {name:42} {med:10.0f} samples/s  "
                      f"(rounds: {', '.join(f'{v:.0f}' for v in got[name])})", flush=True)
    print("\n| model | machine | policy | samples/s |\n| --- | --- | --- | --- |")
    for model, load, name, med in rows:
        print(f"| {model} | {load} | {name} | {med:,.0f} |")


if __name__ == "__main__":
    main()
