#!/usr/bin/python3
"""Training throughput of weft against PyTorch on the same model, data, batch and threads.

    tools/bench_torch.py [--threads 2] [--steps 50] [--warmup 5] [MODEL ...]

MODEL is dcgan, mlp_gan or sparse_ae (default: all three). Each framework runs in a
process of its own, one after the other, so each peak memory (max RSS) is its own. PyTorch
gets its best setting: OpenBLAS (Debian's reference BLAS is far slower) with the core type
forced to SkylakeX (OpenBLAS 0.3.21 mistakes this CPU for an older one), and an explicit
thread count (it would pick 1 here). Needs Debian's python3-torch and libopenblas0-pthread.
"""
import argparse
import gzip
import os
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("WEFT_DATA", "/usr/share/datasets/fashion-mnist")
BATCH = {"dcgan": 64, "mlp_gan": 64, "sparse_ae": 128}
STEPS = {"dcgan": 60, "mlp_gan": 400, "sparse_ae": 1000}  # about 2 s of weft each


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


def run_torch(name, threads, steps, warmup):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    images = torch.from_numpy(load_images(np).astype(np.float32) / 255.0)
    batch = BATCH[name]
    if name != "sparse_ae":
        images = images * 2 - 1
    if name != "dcgan":
        images = images.reshape(-1, 784)
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
    else:
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

    perm = torch.randperm(images.shape[0])
    for i in range(warmup):
        step(images[perm[i * batch:(i + 1) * batch]])
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(images[perm[i * batch:(i + 1) * batch]])
    secs = time.perf_counter() - t0
    blas = "unknown"
    with open("/proc/self/maps") as f:
        maps = f.read()
    m = re.search(r"(/\S*(?:libblas|openblas|mkl)\S*)", maps)
    if m:
        blas = m.group(1)
    print(f"torch {torch.__version__}: {steps * batch / secs:.1f} samples/s, {1e3 * secs / steps:.1f} ms/step, "
          f"threads {torch.get_num_threads()}, oneDNN (mkldnn) {torch.backends.mkldnn.is_available()}, BLAS {blas}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}", flush=True)


def measure(cmd, env):
    """Runs cmd; returns its output and its peak RSS in MiB."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}")
    return out, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["dcgan", "mlp_gan", "sparse_ae"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="timed steps (default: per model, about 2 s of weft)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each framework; the best counts")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--weft", default=os.path.join(ROOT, "build", "weft"))
    ap.add_argument("--torch-only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_only:
        run_torch(args.torch_only, args.threads, args.steps or STEPS[args.torch_only], args.warmup)
        return
    env = dict(os.environ, OPENBLAS_CORETYPE="SkylakeX", OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    print(f"{'model':<10} {'batch':>5} {'weft/s':>9} {'torch/s':>9} {'ratio':>6} {'weft MiB':>9} {'torch MiB':>9}")
    rate = lambda out: float(re.search(r"([\d.]+) samples/s", out).group(1))
    for name in args.models:
        steps = str(args.steps or STEPS[name])
        best = {}
        for _ in range(args.repeat):  # alternate the frameworks; keep each one's best run
            for who, cmd in (("weft", [args.weft, "bench", os.path.join(ROOT, "graphs", name + ".json"), "--threads",
                                       str(args.threads), "--steps", steps, "--warmup", str(args.warmup)]),
                             ("torch", [sys.executable, __file__, "--torch-only", name, "--threads", str(args.threads),
                                        "--steps", steps, "--warmup", str(args.warmup)])):
                out, mem = measure(cmd, env)
                if who not in best or rate(out) > rate(best[who][0]):
                    best[who] = (out, max(mem, best.get(who, ("", 0))[1]))
        (wout, wmem), (tout, tmem) = best["weft"], best["torch"]
        w, t = rate(wout), rate(tout)
        print(f"{name:<10} {BATCH[name]:>5} {w:>9.0f} {t:>9.0f} {w / t:>6.2f} {wmem:>9.0f} {tmem:>9.0f}")
        print("  " + tout.strip().splitlines()[-1])
        print("  weft: " + next(l for l in wout.splitlines() if l.startswith("training:")))


if __name__ == "__main__":
    main()
