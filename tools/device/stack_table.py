#!/usr/bin/env python3
"""Counts functions in gdb backtrace samples of one process (tools/device/cuda_check.sh hoststacks).

Input: the output of repeated `gdb -p PID -batch -ex "thread apply all bt"`, each sample preceded by a
line "=== sample N". Only the main thread (gdb's thread 1) is counted: it queues the GPU work.
Prints, as a share of the samples: the innermost frame (where the time is spent), the innermost frame
in the project's own code (namespace mf::, which of our functions leads there), and every function on
the stack (inclusive).
"""
import collections
import re
import sys


def function_name(frame_line):
    text = re.sub(r"^#\d+\s+", "", frame_line.strip())
    text = re.sub(r"^0x[0-9a-f]+ in ", "", text)
    text = text.replace("(anonymous namespace)", "{anon}")
    depth = 0
    for i, ch in enumerate(text):  # the name ends at the first '(' or ' ' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth <= 0 and (ch == "(" or text[i:i + 2] == " ("):
            return text[:i].strip()
    return text.split(" ")[0]


def main():
    samples, current, in_main = [], None, False
    for line in open(sys.argv[1], errors="replace"):
        if line.startswith("=== sample"):
            current = []
            samples.append(current)
            in_main = False
        elif line.startswith("Thread "):
            in_main = re.match(r"Thread 1 ", line) is not None
        elif in_main and current is not None and line.startswith("#"):
            current.append(function_name(line))
    samples = [s for s in samples if s]
    n = len(samples)
    if not n:
        print("no main-thread samples")
        return
    top, ours, inclusive = collections.Counter(), collections.Counter(), collections.Counter()
    for s in samples:
        top[s[0]] += 1
        mine = next((f for f in s if f.startswith("mf::")), "(none)")
        ours[mine] += 1
        for f in set(s):
            inclusive[f] += 1
    for title, counter, k in (("innermost frame", top, 25), ("innermost mf:: frame", ours, 30),
                              ("on the stack (inclusive)", inclusive, 60)):
        print(f"-- {title}, share of {n} samples")
        for name, c in counter.most_common(k):
            print(f"{100.0 * c / n:5.1f}%  {name[:160]}")


if __name__ == "__main__":
    main()
