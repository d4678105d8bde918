#!/usr/bin/env python3
"""Regenerates agent/link/agent.order: the functions `rollgate agent` runs,
which agent/build.rs has the linker place first in the binary's code.

Why: the kernel maps a binary's code in 64 KiB windows around each page the
process touches (fault-around), so a few hundred functions scattered over the
8 MB of code keep nearly all of it resident in the agent, which runs on every
node. Placed together they fit in about 1 MB (BENCHMARKS.md, the agent
section, has the figures).

How: runs the agent benchmark (`sandbox bench --scenario agent`) with
`rollgate agent` under valgrind's callgrind, takes every function it
executed (start-up, probes and TTL refreshes, drain), and writes their
symbol names in address order. The names come from the linker's map of the
same build (the binary is stripped, and only a build made exactly as images/
builds it has the same names: features unify across `-p rollgate -p web`).
Needs valgrind and the release `sandbox` binary:

    cargo build --release -p sandbox
    ROLLGATE_LINK_MAP=/tmp/rollgate.map cargo build --profile dist -p rollgate -p web
    python3 agent/link/agent-order.py --map /tmp/rollgate.map
    cargo build --profile dist -p rollgate -p web     # links with the new list

A stale list is safe: names it lacks (new or renamed functions) are placed
after the listed ones, as without a list; only the footprint grows. Most
names hold across code changes; about 4% carry a number LLVM adds to make a
local name unique (`...box_new_uninit.9683`), which any change to the code
may renumber, each costing up to 64 KiB until the list is regenerated. Rerun
it when the agent bench shows `rollgate code` growing.
"""

import argparse
import bisect
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sections(map_file):
    """(address, size, [symbol name]) of every input section of `.text` in an
    LLD map (`-Wl,-Map=`), sorted by address."""
    out = []
    in_text = False
    with open(map_file) as f:
        header = next(f, "")  # VMA LMA Size Align Out In Symbol
        out_column = header.find("Out")
        for line in f:
            fields = line.split(None, 4)
            if len(fields) < 5:
                continue
            vma, size, rest = int(fields[0], 16), int(fields[2], 16), fields[4].strip()
            # The columns Out, In and Symbol are told apart by indentation.
            column = len(line) - len(fields[4])
            if column <= out_column:  # an output section
                in_text = rest == ".text"
            elif not in_text:
                continue
            elif ":(" in rest:  # an input section: file:(.text.<symbol>)
                section = rest.rsplit(":(", 1)[1].rstrip(")")
                # Functions have a section each, named after their (mangled)
                # symbol (cold ones `.text.unlikely.<symbol>`); the map's
                # symbol column is demangled.
                name = None
                if section.startswith(".text."):
                    name = section[len(".text."):]
                    for prefix in ("unlikely.", "hot.", "startup.", "exit.", "split."):
                        name = name.removeprefix(prefix)
                out.append((vma, size, [name] if name else []))
            elif out and not out[-1][2] and " " not in rest:
                # A symbol of a plain `.text` section (C start-up files).
                out[-1][2].append(rest)
    if not any(names for _, _, names in out):
        sys.exit(f"{map_file} lists no .text symbols: is it LLD's map of the rollgate link?")
    out.sort()
    return out


def executed(callgrind_file, binary_name):
    """Addresses of the instructions callgrind saw executed in the binary."""
    addrs = set()
    ob = None
    with open(callgrind_file) as f:
        for line in f:
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("0x") and ob and ob.endswith("/" + binary_name):
                addrs.add(int(line.split()[0], 16))
    return addrs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--map", required=True,
                    help="the linker map of the dist build (ROLLGATE_LINK_MAP)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/dist/rollgate"),
                    help="that build (default: target/dist/rollgate)")
    ap.add_argument("--web", default=os.path.join(ROOT, "target/dist/web"))
    ap.add_argument("--sandbox", default=os.path.join(ROOT, "target/release/sandbox"))
    ap.add_argument("--out", default=os.path.join(ROOT, "agent/link/agent.order"))
    args = ap.parse_args()
    syms = sections(args.map)
    work = tempfile.mkdtemp(prefix="agent-order-")
    try:
        binary = os.path.join(work, "rollgate-stripped")
        shutil.copy(args.binary, binary)
        wrapper = os.path.join(work, "rollgate")
        with open(wrapper, "w") as f:
            f.write(
                "#!/bin/sh\n"
                'case " $* " in\n'
                f'  *" agent "*) exec valgrind -q --tool=callgrind --demangle=no --compress-strings=no '
                f"--compress-pos=no --dump-instr=yes --callgrind-out-file={work}/callgrind.%p "
                f'{binary} "$@" ;;\n'
                f'  *) exec {binary} "$@" ;;\n'
                "esac\n"
            )
        os.chmod(wrapper, 0o755)
        os.symlink(os.path.abspath(args.web), os.path.join(work, "web"))
        subprocess.run(
            [args.sandbox, "bench", "--bin-dir", work, "--scenario", "agent",
             "--window", "10s", "--runs", "2", "--write", os.path.join(work, "bench.md")],
            check=True,
        )
        addrs = set()
        for f in glob.glob(os.path.join(work, "callgrind.*")):
            addrs |= executed(f, "rollgate-stripped")
        with open(binary, "rb") as f:
            entry = int.from_bytes(f.read(32)[24:32], "little")  # ELF64 e_entry
        if entry not in addrs:
            sys.exit("callgrind's addresses are not the binary's (its entry point was not seen)")
        starts = [s[0] for s in syms]
        hit = set()
        for a in addrs:
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and syms[i][0] <= a < syms[i][0] + max(syms[i][1], 1):
                hit.add(i)
        with open(args.out, "w") as f:
            for i in sorted(hit):
                for name in syms[i][2]:
                    f.write(name + "\n")
        size = sum(syms[i][1] for i in hit)
        print(f"wrote {args.out}: {len(hit)} code sections, {size // 1024} KiB of code")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
