"""GPU benchmark: kernel throughput against memory bandwidth, PyTorch side by side, CLI.

    python benchmarks/bench_gpu.py                   # everything (needs a CUDA GPU)
    python benchmarks/bench_gpu.py --skip-cli        # kernels and PyTorch only
    python benchmarks/bench_gpu.py --peak-gbs 3350   # H100 SXM nominal instead of measured

1. Kernel throughput as a fraction of the GPU's memory bandwidth, float32 logits CCE with
   index labels, device inputs (``xn.score`` on Numba device arrays, ``on_invalid="nan"``
   so nothing is copied back): bytes moved (pred + labels + losses + statuses) / time /
   peak, where peak is a device-to-device copy measured here (or ``--peak-gbs``).
   Targets: >= 80% at N=1M, C=1000; >= 85% at C >= 32k.
2. The same data in PyTorch, one process: ``F.cross_entropy(reduction="none")`` and
   ``F.binary_cross_entropy_with_logits(reduction="none").sum(1)`` against ``xn.cce`` and
   ``xn.bce`` (on the same tensors, zero-copy).
3. ``xent score --device cuda`` against ``--device cpu`` on a 4M x 1000 float32 logits
   Parquet dump (written once under ``bench-data/``, about 16 GB).

Without a usable GPU it says so and exits 0. Prints markdown tables for the README.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import common
import numpy as np


def gpu_or_exit():
    gi = common.gpu_internals()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or not gi.cuda_usable():
        print("No usable CUDA GPU here (numba.cuda.is_available() is False, or the simulator is on):")
        print("nothing was measured. Run this on a GPU machine.")
        sys.exit(0)
    from numba import cuda

    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    print(f"GPU: {name}, {dev.MULTIPROCESSOR_COUNT} SMs, compute capability {dev.compute_capability}\n")
    return cuda


def best_of(fn, sync, repeat):
    """Best wall time of ``repeat`` calls after a warm-up (which compiles the kernels), each
    followed by ``sync`` inside the timing."""
    return common.best(fn, repeat, sync=sync)


def peak_bandwidth(cuda, nbytes=1 << 30, repeat=10):
    """Device-to-device copy of ``nbytes``: reads and writes, so 2 * nbytes per copy."""
    src = cuda.device_array(nbytes // 4, dtype=np.float32)
    dst = cuda.device_array(nbytes // 4, dtype=np.float32)
    t = best_of(lambda: dst.copy_to_device(src), cuda.synchronize, repeat)
    return 2 * nbytes / t / 1e9


def device_logits(cuda, n, c, seed=0):
    """(n, c) float32 logits and int64 labels on the device, generated in slices."""
    rng = np.random.default_rng(seed)
    d_x = cuda.device_array((n, c), dtype=np.float32)
    step = max(1, (1 << 27) // c)
    for a in range(0, n, step):
        b = min(n, a + step)
        d_x[a:b].copy_to_device(rng.standard_normal((b - a, c), dtype=np.float32) * 3)
    y = rng.integers(0, c, n)
    return d_x, cuda.to_device(y), y


def kernel_table(cuda, peak, shapes, repeat):
    import xent_numba as xn

    rows = []
    for n, c in shapes:
        d_x, d_y, _ = device_logits(cuda, n, c)
        t = best_of(lambda d_x=d_x, d_y=d_y: xn.score("cce", d_x, d_y, from_logits=True, on_invalid="nan"),
                    cuda.synchronize, repeat)
        nbytes = n * c * 4 + n * 8 + n * 4 + n
        gbs = nbytes / t / 1e9
        shape = common.gpu_internals().plan(n, c, c)[0]
        rows.append((n, c, shape, t * 1e3, gbs, 100 * gbs / peak))
        del d_x, d_y
    print(f"| N | C | kernel | time (ms) | GB/s | % of peak ({peak:.0f} GB/s) |")
    print("|---:|---:|---|---:|---:|---:|")
    for n, c, shape, ms, gbs, pct in rows:
        print(f"| {n:,} | {c:,} | {shape} | {ms:.2f} | {gbs:.0f} | {pct:.0f}% |")
    print()


def torch_table(cuda, shapes, repeat):
    torch = common.peer("torch")
    if torch is None:
        print("PyTorch is not installed: comparison skipped (pip install '.[bench]').\n")
        return
    F = torch.nn.functional
    if not torch.cuda.is_available():
        print("PyTorch has no CUDA: comparison skipped.\n")
        return
    import xent_numba as xn

    sync = torch.cuda.synchronize
    print("| N x C | loss | PyTorch (ms) | xent-numba (ms) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for n, c in shapes:
        d_x, d_y, _ = device_logits(cuda, n, c, seed=1)
        x = torch.as_tensor(d_x, device="cuda")
        y = torch.as_tensor(d_y, device="cuda")
        t_torch = best_of(lambda x=x, y=y: F.cross_entropy(x, y, reduction="none"), sync, repeat)
        t_xn = best_of(lambda x=x, y=y: xn.score("cce", x, y, from_logits=True, on_invalid="nan"), sync, repeat)
        print(f"| {n:,} x {c:,} | CCE, index labels | {t_torch * 1e3:.2f} | {t_xn * 1e3:.2f} | {t_torch / t_xn:.2f}x |")
        t = torch.zeros_like(x)
        t.scatter_(1, y[:, None], 1.0)
        t_torch = best_of(
            lambda x=x, t=t: F.binary_cross_entropy_with_logits(x, t, reduction="none").sum(1), sync, repeat
        )
        t_xn = best_of(lambda x=x, t=t: xn.score("bce", x, t, from_logits=True, on_invalid="nan"), sync, repeat)
        t_xi = best_of(lambda x=x, y=y: xn.score("bce", x, y, from_logits=True, on_invalid="nan"), sync, repeat)
        print(f"| {n:,} x {c:,} | BCE, dense targets | {t_torch * 1e3:.2f} | {t_xn * 1e3:.2f} | {t_torch / t_xn:.2f}x |")
        print(f"| {n:,} x {c:,} | BCE, index labels (one-hot) | {t_torch * 1e3:.2f} | {t_xi * 1e3:.2f} | {t_torch / t_xi:.2f}x |")
        del x, y, t, d_x, d_y
        torch.cuda.empty_cache()
    print()


def cli_table(rows, classes, repeat):
    cmd0 = common.xent_command()
    data = common.write_dump(common.BENCH_DATA / f"gpu-{rows}x{classes}.parquet", rows, classes,
                             row_group=250_000, chunk=250_000, scale=1.0)
    out = common.BENCH_DATA / "gpu-scores.parquet"
    print(f"| `xent score` on {rows:,} x {classes:,} float32 logits | wall time (s) |")
    print("|---|---:|")
    for device in ("cpu", "cuda"):
        cmd = cmd0 + ["score", str(data), "-o", str(out), "--from-logits", "--loss", "cce",
                      "--device", device, "--overwrite"]
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=common.child_env())
            times.append(time.perf_counter() - t)
            if res.returncode != 0:
                print(f"| --device {device} | failed: {res.stderr.strip().splitlines()[-1:]} |")
                break
        else:
            print(f"| --device {device} | {min(times):.1f} |")
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peak-gbs", type=float, default=None, help="peak bandwidth in GB/s (default: measured)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--cli-rows", type=int, default=4_000_000)
    ap.add_argument("--cli-classes", type=int, default=1000)
    args = ap.parse_args(argv)
    cuda = gpu_or_exit()
    measured = peak_bandwidth(cuda)
    peak = args.peak_gbs or measured
    print(f"device-to-device copy: {measured:.0f} GB/s (peak used: {peak:.0f} GB/s)\n")
    kernel_table(cuda, peak, [(1_000_000, 1000), (32_768, 32_768), (4_096, 262_144), (8, 262_144)], args.repeat)
    torch_table(cuda, [(1_000_000, 1000), (32_768, 32_768)], args.repeat)
    if not args.skip_cli:
        cli_table(args.cli_rows, args.cli_classes, max(1, min(args.repeat, 2)))


if __name__ == "__main__":
    main()
