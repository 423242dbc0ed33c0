#!/usr/bin/env python3
"""Counts the global loads and stores of each bf16 CUDA kernel by width, from the PTX nvcc makes.

The kernels named *_vec* are written to move 16 bytes a thread. Until 2026-12-06 their shared
unpacking helper read the loaded vector's elements through a pointer, and nvcc (11.8 and 13.0) split
every such 16-byte load into eight 2-byte ones (ld.global.u16): the same bytes, eight times the load
instructions. A 16-byte load can also come out in 4- and 8-byte pieces (ld.global.u32, .v2.u32) where
nvcc cannot prove the address aligned: two loads in the branches of an if did. Nothing in the outputs
shows either; the PTX does. This tool compiles the backend's .cu files to PTX with the flags of a
configured build (its compile_commands.json) and prints, per kernel, its loads and stores by width;
it exits 1 if a *_vec* kernel has 2-byte loads or 4/8-byte integer loads (pieces of a vector).

    tools/ptx_loads.py BUILD_DIR [--all] [--jobs N]

BUILD_DIR: a build configured with CUDA (-DMETAFORMER_CUDA=ON). --all lists every bf16 kernel, not
only the flagged ones. Needs nvcc (the build's) and c++filt.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

LOAD = r"ld\.global(?:\.(?:nc|ca|cg|cs|lu))?(?:\.L\w+::\w+)*"
STORE = r"st\.global(?:\.L\w+::\w+)*"


def ptx_command(entry, out):
    """The build's nvcc command for one file, turned into one that writes PTX to `out`."""
    return nvcc_command(entry, ["-ptx", "-o", out])


def nvcc_command(entry, tail):
    """The build's nvcc command for one file for sm_90, without its -c, -o and code targets, then `tail`."""
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    keep, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-c", "-o"):
            skip = a == "-o"
            continue
        if a.startswith("--generate-code") or a.startswith("-gencode"):
            continue
        keep.append(a)
    return keep + ["-arch=sm_90"] + tail


def cu_entries(build_dir, tool, wanted=()):
    """The build's compile_commands.json entries of .cu files (those whose path contains one of
    `wanted`, when given); exits with one line naming `tool` when there are none."""
    db = os.path.join(build_dir, "compile_commands.json")
    try:
        entries = [e for e in json.load(open(db)) if e["file"].endswith(".cu")]
    except (OSError, ValueError) as e:
        sys.exit(f"{tool}: cannot read {db}: {e}")
    entries = [e for e in entries if not wanted or any(w in e["file"] for w in wanted)]
    if not entries:
        sys.exit(f"{tool}: {db} lists no matching .cu files (configure with -DMETAFORMER_CUDA=ON)")
    return entries


def kernels(ptx_text):
    for m in re.finditer(r"\.entry (\S+)\((.*?)\n\}\n", ptx_text, re.S):
        yield m.group(1), m.group(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("--all", action="store_true", help="list every bf16 kernel")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    entries = cu_entries(a.build_dir, "ptx_loads")
    tmp = tempfile.mkdtemp(prefix="ptx_loads_")

    def build(e):
        out = os.path.join(tmp, os.path.basename(e["file"]) + ".ptx")
        r = subprocess.run(ptx_command(e, out), cwd=e.get("directory", "."), capture_output=True, text=True)
        return e["file"], out, r.returncode, r.stderr

    flagged = 0
    rows = []
    with ThreadPoolExecutor(a.jobs) as pool:
        for src, out, rc, err in pool.map(build, entries):
            if rc != 0:
                sys.exit(f"ptx_loads: nvcc failed on {src}:\n{err[-2000:]}")
            for name, body in kernels(open(out).read()):
                plain = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
                if "bfloat16" not in plain:
                    continue
                ld2 = len(re.findall(LOAD + r"\.(?:u16|b16)\b", body))
                pieces = len(re.findall(LOAD + r"\.(?:v2\.)?(?:u32|b32)\b", body))
                ld16 = len(re.findall(LOAD + r"\.v4\.", body))
                st2 = len(re.findall(STORE + r"\.(?:u16|b16)\b", body))
                st16 = len(re.findall(STORE + r"\.v4\.", body))
                short = re.sub(r"mf::cuda::(?:kernels::|backward::)?(?:detail::)?\(anonymous namespace\)::", "", plain)
                bad = "_vec" in short.split("(")[0] and ld2 + pieces > 0
                flagged += bad
                if bad or a.all:
                    rows.append((os.path.basename(src), ld2, pieces, ld16, st2, st16, short[:120], bad))
    print("| file | 2-byte loads | 4/8-byte integer loads | 16-byte loads | 2-byte stores | 16-byte stores | kernel |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for f, ld2, pieces, ld16, st2, st16, k, bad in rows:
        print(f"| {f} | {ld2} | {pieces} | {ld16} | {st2} | {st16} | `{k}`{' (flagged)' if bad else ''} |")
    print(f"\n{flagged} *_vec* kernel(s) with 2-byte loads or pieces of 16-byte ones")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
