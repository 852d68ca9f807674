#!/usr/bin/python3
"""The reconstruction error of PCA with k components on Fashion-MNIST (or MNIST) images in
[0, 1]: the best any linear autoencoder with a k-wide code can reach. Prints the squared
error summed over the 784 pixels and averaged over the test examples, the figure that
`weft eval` reports for graphs/sources/004_linear_ae.json (which leaves out the last
10000 % batch test examples: pass --examples to match).

Needs python3-numpy.  tools/pca_error.py [--k 32] [--data DIR] [--examples N]
"""
import argparse
import gzip
import os

import numpy as np


def read_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != 0x803:
        raise SystemExit(f"{path}: not an IDX image file (magic {magic:#x})")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, rows * cols) / 255.0


def find(data, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(data, name)):
            return os.path.join(data, name)
    raise SystemExit(f"no {stem}[.gz] in {data}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--data", default=os.environ.get("WEFT_DATA", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--examples", type=int, default=0, help="the first N test examples (0: all)")
    a = ap.parse_args()
    train = read_images(find(a.data, "train-images-idx3-ubyte"))
    test = read_images(find(a.data, "t10k-images-idx3-ubyte"))
    if a.examples:
        test = test[: a.examples]
    mean = train.mean(axis=0)
    # The principal directions are the leading right singular vectors of the centred data.
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[: a.k]
    centred = test - mean
    recon = centred @ basis.T @ basis
    err = ((centred - recon) ** 2).sum(axis=1).mean()
    print(f"PCA, {a.k} components, {len(test)} test images: squared error per image {err:.4f}")


if __name__ == "__main__":
    main()
