#!/usr/bin/env python
"""Start-up of tensor-free commands vs ``python -c "import click, yaml"`` (the floor of any click CLI), same run.

Target (issue 12): `hfgrow --help`, `hfgrow plan --target 7B --max-tokens 2T` and `hfgrow mix fit --help` start
within 5x of the floor, because none of them imports torch. Runs are interleaved so machine noise hits both.

    python bench/bench_startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from _common import timed

COMMANDS = {
    "hfgrow --help": ["--help"],
    "hfgrow plan --target 7B --max-tokens 2T": ["plan", "--target", "7B", "--max-tokens", "2T"],
    "hfgrow mix fit --help": ["mix", "fit", "--help"],
    "hfgrow push --help": ["push", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    floor_argv = [sys.executable, "-c", "import click, yaml"]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            floor = timed(floor_argv)[0]
            times[name].append((floor, timed([sys.executable, "-m", "hfgrow.cli.main", *argv])[0]))
    result = {}
    for name, pairs in times.items():
        floor = statistics.median(a for a, _ in pairs)
        ours = statistics.median(b for _, b in pairs)
        result[name] = {"seconds": ours, "floor_seconds": floor, "ratio": ours / floor}
        print(f"{name:40s} {ours * 1000:6.0f} ms   floor {floor * 1000:5.0f} ms   {ours / floor:4.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
