#!/usr/bin/env python3
"""Registers, spills and blocks an SM of each CUDA kernel, from ptxas (-Xptxas -v) with a build's flags.

A memory-bound kernel needs enough warps an SM to keep bytes in flight, and its registers decide how
many it gets. On 2026-12-06 the LayerNorm backward with the residual scale took 158 registers, one
block of 8 warps an SM, and ran at half the speed of the same kernel without the scale (116
registers, two blocks); a launch bound then fixed it, and a careless one let ptxas take 141
registers in another variant, 2.5 times slower. Nothing but ptxas's report shows this before a GPU
run. This tool compiles the backend's .cu files for sm_90 with the flags of a configured build (its
compile_commands.json, as tools/ptx_loads.py) and prints the kernels that spill or that have at
least --min-registers registers, with the blocks an SM their registers allow at --threads a block.

    tools/ptxas_registers.py BUILD_DIR [--files conv,backward] [--min-registers 128] [--threads 256] [--all]

Informational: it exits 0 unless nvcc fails. Needs nvcc (the build's) and c++filt.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptx_loads import cu_entries, nvcc_command  # noqa: E402

# sm_90: 65,536 registers an SM, allocated per warp in units of 256 (8 a thread), 2,048 threads.
REGS_PER_SM, THREADS_PER_SM, UNIT = 65536, 2048, 8


def blocks_per_sm(registers, threads):
    per_thread = -(-max(registers, 1) // UNIT) * UNIT
    return min(REGS_PER_SM // (per_thread * threads), THREADS_PER_SM // threads)


def parse(report):
    """(mangled kernel, registers, spill store bytes, spill load bytes) per kernel of ptxas's report."""
    name, spill = None, (0, 0)
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_\d+'", line)
        if m:
            name, spill = m.group(1), (0, 0)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            spill = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            yield name, int(m.group(1)), spill[0], spill[1]
            name = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("--files", default="", help="only .cu files whose path contains one of these (comma-separated)")
    ap.add_argument("--min-registers", type=int, default=128)
    ap.add_argument("--threads", type=int, default=256, help="block size for the blocks-an-SM column")
    ap.add_argument("--all", action="store_true", help="list every kernel")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    entries = cu_entries(a.build_dir, "ptxas_registers", [w for w in a.files.split(",") if w])
    tmp = tempfile.mkdtemp(prefix="ptxas_registers_")

    def build(e):
        out = os.path.join(tmp, os.path.basename(e["file"]) + ".cubin")
        r = subprocess.run(nvcc_command(e, ["-cubin", "-Xptxas", "-v", "-o", out]), cwd=e.get("directory", "."),
                           capture_output=True, text=True)
        return e["file"], r.returncode, r.stderr

    rows = []
    with ThreadPoolExecutor(a.jobs) as pool:
        for src, rc, err in pool.map(build, entries):
            if rc != 0:
                sys.exit(f"ptxas_registers: nvcc failed on {src}:\n{err[-2000:]}")
            found = list(parse(err))
            plain = subprocess.run(["c++filt"], input="\n".join(k[0] for k in found), capture_output=True,
                                   text=True).stdout.splitlines()
            for (_, regs, st, ld), name in zip(found, plain):
                if a.all or st or ld or regs >= a.min_registers:
                    short = re.sub(r"mf::cuda::(?:kernels::|backward::)?(?:detail::)?\(anonymous namespace\)::", "", name)
                    rows.append((os.path.basename(src), regs, st, ld, blocks_per_sm(regs, a.threads), short[:140]))
    rows.sort(key=lambda r: (-(r[2] + r[3] > 0), -r[1]))
    print(f"| file | registers | spill stores (B) | spill loads (B) | blocks an SM at {a.threads} threads | kernel |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for f, regs, st, ld, blocks, k in rows:
        print(f"| {f} | {regs} | {st} | {ld} | {blocks} | `{k}` |")
    print(f"\n{sum(1 for r in rows if r[2] or r[3])} kernel(s) spill; {len(rows)} listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
