#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel durations by kernel name.

Input: the CSV of `ncu --csv --metrics gpu__time_duration.sum <program>` (one row per launch).
Output: a markdown table, largest total first: kernel (name cut to its first 90 characters),
launches, total ms, share of the total.
Then the launch shapes that took longest: kernel, grid and block, launches, total ms (so that one
kernel used by several layers, e.g. a GEMM, shows which shape is slow).
Usage: kernel_table.py NCU.csv [--skip-first-pass-casts]
"""
import csv
import sys
from collections import defaultdict

UNIT = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3, "ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu mixes the program's own output in
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r["Metric Unit"].strip()
        if unit not in UNIT:
            sys.exit(f"kernel_table: unknown time unit {unit!r} in {path}")
        ms = float(r["Metric Value"].replace(",", "")) * UNIT[unit]
        rows.append((r["Kernel Name"], ms, r.get("Grid Size", "?"), r.get("Block Size", "?")))
    total = sum(r[1] for r in rows)
    by = defaultdict(lambda: [0, 0.0])
    shapes = defaultdict(lambda: [0, 0.0])
    for name, ms, grid, block in rows:
        short = name.split("(")[0] if not name.startswith("void ") else name[5:].split("(")[0]
        short = short[:90]
        by[short][0] += 1
        by[short][1] += ms
        shapes[(short[:60], grid, block)][0] += 1
        shapes[(short[:60], grid, block)][1] += ms
    print(f"{len(rows)} launches, {total:.3f} ms of kernel time\n")
    print("| kernel | launches | ms | share |\n|---|---:|---:|---:|")
    for name, (n, ms) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"| `{name}` | {n} | {ms:.3f} | {100 * ms / total:.1f} % |")
    print("\n| kernel | grid | block | launches | ms |\n|---|---|---|---:|---:|")
    for (name, grid, block), (n, ms) in sorted(shapes.items(), key=lambda kv: -kv[1][1])[:40]:
        print(f"| `{name}` | {grid} | {block} | {n} | {ms:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
