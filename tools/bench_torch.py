#!/usr/bin/python3
"""Training throughput of weft against PyTorch on the same model, data, batch and threads.

    tools/bench_torch.py [--threads 2] [--rounds 5] [--steps N] [--warmup 5] [--batch B]
                         [--precision f32|bf16|both] [--markdown] [MODEL ...]

MODEL is dcgan, mlp_gan or sparse_ae (default: all three). Needs Debian's python3-torch,
libopenblas0-openmp and libopenblas0-pthread, and build/weft.

PyTorch gets its best configuration, found per model by a short calibration: each
candidate runs in a process of its own with one OpenBLAS build (openmp or pthread, chosen
with LD_LIBRARY_PATH, the system's alternatives untouched), OPENBLAS_CORETYPE left to
OpenBLAS or forced, the OpenMP wait policy left at libgomp's default or passive, and
ATen's kernels at torch's own choice or forced to AVX-512 (ATEN_CPU_CAPABILITY); inside
each process torch's oneDNN (torch.backends.mkldnn) is timed enabled and disabled in
alternating bursts. torch.set_num_threads, OMP_NUM_THREADS and OPENBLAS_NUM_THREADS are
all --threads. Every process checks in /proc/self/maps which BLAS it has mapped, asks
OpenBLAS for its build, core type and thread count and torch for its threads and CPU
capability; a configuration that did not take effect is refused and reports no number.

Then weft and PyTorch (in its chosen configuration) run alternately, each in its own
process, --rounds times per model (with --precision both, weft in f32 and in bf16 and
PyTorch each round, in rotating order); the report gives the median samples/s of each, the
median and range of the per-round ratios weft / PyTorch and each one's peak memory (max RSS).
"""
import argparse
import ctypes
import gzip
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("WEFT_DATA", "/usr/share/datasets/fashion-mnist")
LIBDIR = "/usr/lib/x86_64-linux-gnu"
BATCH = {"dcgan": 64, "mlp_gan": 64, "sparse_ae": 128}
STEPS = {"dcgan": 60, "mlp_gan": 400, "sparse_ae": 1000}  # about 2 s of weft each at the default batch
OPENBLAS_PARALLEL = {0: "sequential", 1: "pthread", 2: "openmp"}
TORCH_ENV = ("LD_LIBRARY_PATH", "LD_PRELOAD", "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
             "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")


# ---- the PyTorch side (runs in a child process) -------------------------------------

def torch_models(torch, name):
    nn = torch.nn

    def normal_init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    if name == "dcgan":
        g = nn.Sequential(
            nn.Linear(100, 7 * 7 * 128), nn.BatchNorm1d(7 * 7 * 128), nn.ReLU(), nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
        d = nn.Sequential(
            nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(128 * 7 * 7, 1))
        g.apply(normal_init)
        d.apply(normal_init)
        return g, d
    if name == "mlp_gan":
        g = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                          nn.Linear(512, 784), nn.Tanh())
        d = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2),
                          nn.Linear(256, 1))
        return g, d
    enc = nn.Sequential(nn.Linear(784, 256), nn.Sigmoid())
    dec = nn.Sequential(nn.Linear(256, 784), nn.Sigmoid())
    return enc, dec


def load_images(np):
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)


def make_step(torch, name, batch):
    bce = torch.nn.BCEWithLogitsLoss()
    a, b = torch_models(torch, name)
    if name == "sparse_ae":
        opt = torch.optim.Adam(list(a.parameters()) + list(b.parameters()), lr=1e-3)

        def step(x):
            code = a(x)
            recon = b(code)
            rho, rho_hat = 0.05, code.mean(0)
            kl = (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()
            loss = ((recon - x) ** 2).sum(1).mean() + 3 * kl + 1e-4 * (a[0].weight.pow(2).sum() + b[0].weight.pow(2).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step
    g, d = a, b
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def step(x):
        with torch.no_grad():
            fake = g(torch.randn(batch, 100))
        d_loss = bce(d(x), ones) + bce(d(fake), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)  # G's step needs no gradients of D's weights
        g_loss = bce(d(g(torch.randn(batch, 100))), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
    return step


def mapped_blas():
    """The BLAS/LAPACK/OpenBLAS files this process has mapped (real paths)."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    return sorted(set(re.findall(r"(/\S*(?:libblas|liblapack|openblas|libmkl)\S*)", maps)))


def verify(torch, cfg, threads, mkldnn_variants):
    """What is in effect in this process; raises RuntimeError where it is not cfg."""
    libs = mapped_blas()
    folder = os.path.join(LIBDIR, "openblas-" + cfg["blas"]) + "/"
    stray = [p for p in libs if not p.startswith(folder)]
    openblas = [p for p in libs if "libopenblas" in p]
    if stray or not openblas:
        raise RuntimeError(f"wanted OpenBLAS from {folder}, mapped: {', '.join(libs) or 'no BLAS'}")
    lib = ctypes.CDLL(openblas[0])
    lib.openblas_get_corename.restype = ctypes.c_char_p
    core = lib.openblas_get_corename().decode()
    parallel = OPENBLAS_PARALLEL.get(lib.openblas_get_parallel(), "?")
    blas_threads = lib.openblas_get_num_threads()
    if parallel != cfg["blas"]:
        raise RuntimeError(f"OpenBLAS reports a {parallel} build, wanted {cfg['blas']}")
    if cfg["core"] != "auto" and core.lower() != cfg["core"].lower():
        raise RuntimeError(f"OpenBLAS runs core type {core}, wanted {cfg['core']}")
    if blas_threads != threads or torch.get_num_threads() != threads:
        raise RuntimeError(f"threads: OpenBLAS {blas_threads}, torch {torch.get_num_threads()}, wanted {threads}")
    if True in mkldnn_variants and not torch.backends.mkldnn.is_available():
        raise RuntimeError("torch has no oneDNN (mkldnn)")
    wait = os.environ.get("OMP_WAIT_POLICY", "").lower() or "default"
    if wait != cfg["wait"]:
        raise RuntimeError(f"OMP_WAIT_POLICY is {wait}, wanted {cfg['wait']}")
    m = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    cap = m.group(1) if m else "?"
    if cfg["aten"] != "default" and cap.lower() != cfg["aten"].lower():
        raise RuntimeError(f"ATen's CPU capability is {cap}, wanted {cfg['aten']}")
    return {"libopenblas": openblas[0], "core": core, "parallel": parallel, "blas_threads": blas_threads,
            "torch_threads": torch.get_num_threads(), "aten": cap}


def torch_info(torch):
    """parallel_info(), and from show() what concerns BLAS, oneDNN, OpenMP and the CPU."""
    show = torch.__config__.show()
    lines = [l.strip() for l in show.splitlines() if re.search(r"MKL|DNN|OpenMP|LAPACK|CPU capability", l)
             and "Build settings" not in l]
    keep = r"(?:BLAS_INFO|LAPACK_INFO|USE_MKL|USE_MKLDNN|USE_OPENMP|TORCH_VERSION)=[^,\s]*"
    lines.append("- Build settings: " + ", ".join(re.findall(keep, show)))
    return torch.__config__.parallel_info().strip() + "\n" + "\n".join(lines)


def torch_child(a):
    """One process: one OpenBLAS configuration, one or more oneDNN settings in alternating bursts."""
    import numpy as np
    import torch
    cfg = json.loads(a.config)
    variants = [v == "1" for v in a.mkldnn.split(",")]
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    images = torch.from_numpy(load_images(np).astype(np.float32) / 255.0)
    if a.torch_child != "sparse_ae":
        images = images * 2 - 1
    if a.torch_child != "dcgan":
        images = images.reshape(-1, 784)
    batch = a.batch
    nb = images.shape[0] // batch  # whole batches per epoch; a step past the epoch wraps around
    perm = torch.randperm(images.shape[0])
    step = make_step(torch, a.torch_child, batch)
    i = 0

    def run(n):
        nonlocal i
        t0 = time.perf_counter()
        for _ in range(n):
            j = i % nb
            step(images[perm[j * batch:(j + 1) * batch]])
            i += 1
        return time.perf_counter() - t0

    try:
        for v in variants:
            torch.backends.mkldnn.enabled = v
            run(a.warmup)
        seen = verify(torch, cfg, a.threads, variants)  # after the warm-up: every library is loaded
    except RuntimeError as e:
        print(json.dumps({"refused": str(e)}), flush=True)
        sys.exit(3)
    rates = {str(int(v)): [] for v in variants}
    for _ in range(a.bursts):
        for v in variants:
            torch.backends.mkldnn.enabled = v
            rates[str(int(v))].append(a.steps * batch / run(a.steps))
    out = {"rates": rates, "seen": seen, "torch": torch.__version__}
    if a.info:
        out["info"] = torch_info(torch)
    print(json.dumps(out), flush=True)


# ---- the harness ---------------------------------------------------------------------

def cpu_info():
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break  # the first processor is enough
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    flags = set(fields.get("flags", "").split())
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    if avx512:
        isa = "AVX-512 (" + " ".join(avx512) + ")"
    elif "avx2" in flags:
        isa = "AVX2, no AVX-512"
    else:
        isa = "no AVX2"
    name = fields.get("model name", "unknown CPU")
    ident = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} stepping {fields.get('stepping', '?')}"
    return name, ident, isa, bool(avx512)


def cfg_name(cfg, seen=None):
    core = cfg["core"] if cfg["core"] != "auto" else "auto" + (f" = {seen['core']}" if seen else "")
    aten = cfg["aten"].upper() if cfg["aten"] != "default" else "default" + (f" = {seen['aten']}" if seen else "")
    return f"OpenBLAS {cfg['blas']}, core {core}, OMP wait {cfg['wait']}, ATen {aten}"


def full_name(cfg, mkldnn, seen=None):
    return cfg_name(cfg, seen) + f", oneDNN {'on' if mkldnn == '1' else 'off'}"


def measure(cmd, env):
    """Runs cmd; returns its exit status, its output and its peak RSS in MiB."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), out, usage.ru_maxrss / 1024


def torch_env(cfg, threads):
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    env.update(LD_LIBRARY_PATH=os.path.join(LIBDIR, "openblas-" + cfg["blas"]), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    if cfg["core"] != "auto":
        env["OPENBLAS_CORETYPE"] = cfg["core"]
    if cfg["wait"] != "default":
        env["OMP_WAIT_POLICY"] = cfg["wait"].upper()
    if cfg["aten"] != "default":
        env["ATEN_CPU_CAPABILITY"] = cfg["aten"]
    return env


def run_torch(args, name, batch, cfg, mkldnn, steps, bursts, info=False):
    """Returns (result dict or None, output, peak MiB)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", name, "--config", json.dumps(cfg),
           "--mkldnn", mkldnn, "--threads", str(args.threads), "--steps", str(steps), "--warmup", str(args.warmup),
           "--batch", str(batch), "--bursts", str(bursts)] + (["--info"] if info else [])
    rc, out, mem = measure(cmd, torch_env(cfg, args.threads))
    lines = [l for l in out.splitlines() if l.startswith("{")]
    res = json.loads(lines[-1]) if lines else None
    if rc != 0 and not (res and "refused" in res):
        sys.exit(f"failed ({rc}): {' '.join(cmd)}\n{out}")
    return res, out, mem


def calibrate(args, name, batch, steps, cores, atens):
    """Times every candidate briefly; returns (cfg, mkldnn, what the child saw) of the fastest."""
    csteps = args.calib_steps or max(3, steps // 8)
    print(f"  calibration: {args.calib_bursts} bursts of {csteps} steps per setting, medians in samples/s")
    results = []
    for blas in args.blas.split(","):
        auto_core = None
        for core, wait, aten in itertools.product(["auto"] + cores, args.wait.split(","), atens):
            cfg = {"blas": blas, "core": core, "wait": wait, "aten": aten}
            if core != "auto" and auto_core and core.lower() == auto_core.lower():
                print(f"    {cfg_name(cfg):<72} same as core auto ({auto_core}), skipped")
                continue
            res, _, _ = run_torch(args, name, batch, cfg, args.mkldnn, csteps, args.calib_bursts)
            if "refused" in res:
                print(f"    {cfg_name(cfg):<72} REFUSED: {res['refused']}")
                continue
            if core == "auto":
                auto_core = res["seen"]["core"]
            cells = []
            for v, rates in res["rates"].items():
                med = statistics.median(rates)
                results.append((med, cfg, v, res["seen"]))
                cells.append(f"oneDNN {'on' if v == '1' else 'off'} {med:>8,.0f}")
            print(f"    {cfg_name(cfg, res['seen']):<72} " + "  ".join(cells))
    if not results:
        sys.exit(f"{name}: no PyTorch configuration took effect")
    best = max(results, key=lambda r: r[0])
    return best[1], best[2], best[3]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["dcgan", "mlp_gan", "sparse_ae"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps per run (default: per model, about 2 s of weft)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--batch", type=int, help="batch for every model (default: each graph's own)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating weft / PyTorch runs per model")
    ap.add_argument("--markdown", action="store_true", help="also print the results as README table rows")
    ap.add_argument("--calib-steps", type=int, help="steps per calibration burst (default: steps / 8)")
    ap.add_argument("--calib-bursts", type=int, default=3, help="bursts per setting in the calibration")
    ap.add_argument("--blas", default="openmp,pthread", help="OpenBLAS builds to try")
    ap.add_argument("--cores", help="OPENBLAS_CORETYPE values to try besides OpenBLAS's own choice "
                                    "(default: SkylakeX,Haswell on AVX-512, Haswell on AVX2)")
    ap.add_argument("--wait", default="default,passive", help="OMP_WAIT_POLICY settings to try")
    ap.add_argument("--mkldnn", default="1,0", help="torch.backends.mkldnn.enabled settings to try")
    ap.add_argument("--aten", help="ATEN_CPU_CAPABILITY settings to try (default: default,avx512 on AVX-512, "
                                   "else default)")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "both"],
                    help="weft's --precision; both runs f32 and bf16 in every round against the same PyTorch")
    ap.add_argument("--weft", default=os.path.join(ROOT, "build", "weft"))
    ap.add_argument("--torch-child", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--bursts", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--info", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_child:
        torch_child(args)
        return
    for m in args.models:
        if m not in BATCH:
            ap.error(f"unknown model {m} (dcgan, mlp_gan, sparse_ae)")
    if not os.access(args.weft, os.X_OK):
        sys.exit(f"{args.weft} is missing: build weft first (cmake --build build --target weft)")
    for v in args.blas.split(","):
        if not os.path.isdir(os.path.join(LIBDIR, "openblas-" + v)):
            sys.exit(f"{LIBDIR}/openblas-{v} is missing: apt-get install libopenblas0-{v}")

    precisions = ["f32", "bf16"] if args.precision == "both" else [args.precision]
    cpu, ident, isa, has_avx512 = cpu_info()
    forced = args.cores.split(",") if args.cores else (["SkylakeX", "Haswell"] if has_avx512 else ["Haswell"])
    forced = [c for c in forced if c and c != "auto"]
    atens = args.aten.split(",") if args.aten else (["default", "avx512"] if has_avx512 else ["default"])
    print(f"CPU: {cpu} ({ident}), {isa}; {len(os.sched_getaffinity(0))} cores available, --threads {args.threads}")
    rate = lambda out: float(re.search(r"([\d.]+) samples/s", out).group(1))
    floor_share = lambda out: float(re.search(r"runs at (\d+)% of the floor", out).group(1))
    summary, infos_shown = [], set()
    torch_version = "?"
    for name in args.models:
        batch = args.batch or BATCH[name]
        steps = args.steps or max(10, STEPS[name] * BATCH[name] // batch)
        print(f"\n{name}: batch {batch}, {steps} timed steps after {args.warmup} warm-up, {args.threads} threads")
        cfg, mkldnn, seen = calibrate(args, name, batch, steps, forced, atens)
        chosen = full_name(cfg, mkldnn, seen)
        print(f"  PyTorch's fastest: {chosen}")
        env_weft = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        weft_cmd = lambda p: [args.weft, "bench", os.path.join(ROOT, "graphs", name + ".json"), "--threads",
                              str(args.threads), "--steps", str(steps), "--warmup", str(args.warmup), "--batch",
                              str(batch), "--precision", p]
        runners = precisions + ["torch"]
        w_rates, ratios, w_floor = ({p: [] for p in precisions} for _ in range(3))
        t_rates, w_mem, t_mem = [], {p: 0.0 for p in precisions}, 0.0
        for r in range(args.rounds):
            k = r % len(runners)
            order = runners[k:] + runners[:k]  # none always goes first
            got = {}
            for who in order:
                if who != "torch":
                    rc, out, mem = measure(weft_cmd(who), env_weft)
                    if rc != 0:
                        sys.exit(f"failed ({rc}): {' '.join(weft_cmd(who))}\n{out}")
                    got[who] = rate(out)
                    w_floor[who].append(floor_share(out))
                    w_mem[who] = max(w_mem[who], mem)
                else:
                    key = json.dumps([cfg, mkldnn])
                    res, out, mem = run_torch(args, name, batch, cfg, mkldnn, steps, 1, info=key not in infos_shown)
                    if "refused" in res:
                        sys.exit(f"{name}: PyTorch's chosen configuration was refused: {res['refused']}")
                    if key not in infos_shown:
                        infos_shown.add(key)
                        print(f"  torch {res['torch']} in this configuration (libopenblas {res['seen']['libopenblas']},"
                              f" {res['seen']['parallel']} build, core {res['seen']['core']},"
                              f" {res['seen']['blas_threads']} OpenBLAS threads,"
                              f" {res['seen']['torch_threads']} torch threads, ATen {res['seen']['aten']}):")
                        print("    " + res["info"].replace("\n", "\n    "))
                    torch_version = res["torch"]
                    got["torch"] = res["rates"][mkldnn][0]
                    t_mem = max(t_mem, mem)
            t_rates.append(got["torch"])
            line = f"  round {r + 1}: torch {got['torch']:>9,.0f}"
            for p in precisions:
                w_rates[p].append(got[p])
                ratios[p].append(got[p] / got["torch"])
                line += f"  weft {p} {got[p]:>9,.0f} (ratio {ratios[p][-1]:.2f})"
            print(line + " samples/s")
        for p in precisions:
            row = (name, batch, p, statistics.median(w_rates[p]), statistics.median(t_rates),
                   statistics.median(ratios[p]), min(ratios[p]), max(ratios[p]), w_mem[p], t_mem, chosen,
                   statistics.median(w_floor[p]))
            summary.append(row)
            print(f"  median, weft {p}: weft {row[3]:,.0f}, torch {row[4]:,.0f} samples/s, ratio {row[5]:.2f} "
                  f"(rounds {row[6]:.2f}-{row[7]:.2f}); weft at {row[11]:.0f}% of its floor; "
                  f"peak memory weft {row[8]:.0f} MiB, torch {t_mem:.0f} MiB")

    print(f"\n{cpu} ({ident}), {isa}; torch {torch_version}; {args.threads} threads; "
          f"medians of {args.rounds} alternating rounds")
    print(f"{'model':<10} {'batch':>5} {'weft':>5} {'weft/s':>9} {'torch/s':>9} {'ratio':>6} {'rounds':>10} {'floor':>6}"
          f" {'weft MiB':>9} {'torch MiB':>9}  PyTorch configuration")
    for name, batch, p, w, t, ratio, lo, hi, wm, tm, chosen, fl in summary:
        print(f"{name:<10} {batch:>5} {p:>5} {w:>9,.0f} {t:>9,.0f} {ratio:>6.2f} {lo:>4.2f}-{hi:<4.2f} {fl:>5.0f}%"
              f" {wm:>9.0f} {tm:>9.0f}  {chosen}")
    if args.markdown:
        print("\n| model | batch | weft precision | weft samples/s | PyTorch samples/s | weft / PyTorch (rounds) "
              "| weft's share of its floor | peak memory weft / PyTorch | PyTorch configuration |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, batch, p, w, t, ratio, lo, hi, wm, tm, chosen, fl in summary:
            print(f"| {name} | {batch} | {p} | {w:,.0f} | {t:,.0f} | **{ratio:.2f}** ({lo:.2f}-{hi:.2f}) | {fl:.0f}% "
                  f"| {wm:.0f} / {tm:.0f} MiB | {chosen} |")


if __name__ == "__main__":
    main()
