"""Gstack x4 of a TinyLlama-shaped (1.1B, bf16) checkpoint vs `cat` copying the same bytes.

Usage:
    python bench/bench_stack.py                 # full TinyLlama shape: 2.2 GB in, 8.0 GB out
    python bench/bench_stack.py --scale 0.25    # smaller hidden/FFN/vocab for a quick look
    python bench/bench_stack.py --workdir /big/disk --repeats 3

Prints wall time and peak RSS of `hfgrow stack` (a fresh child process each run, imports
included) and of `cat src x4 > file` in the same run on the same disk, and their ratio. cat
writes the source g times while Gstack writes the embeddings and LM head once, so cat's time is
scaled to the byte count hfgrow wrote. Runs alternate
(cat, hfgrow, cat, hfgrow, ...) and the median of each is reported, since this machine is noisy.
Targets: peak RSS < 0.5 GB, wall time within 1.2x of cat including start-up (`hfgrow stack` starts copying
from the safetensors headers while imports, the meta skeleton and the checks run alongside). ``--save``
writes the JSON (with versions and the load average) to a file, e.g. bench/results/stack_tinyllama.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import make_checkpoint, timed  # bench/ is on sys.path when run as a script



def versions() -> dict:
    import importlib.metadata as md
    import platform

    return {"python": platform.python_version(), **{p: md.version(p) for p in ("torch", "transformers", "safetensors")},
            "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="scale of hidden/FFN/vocab (1.0 = TinyLlama)")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="a checkout of an earlier hfgrow: its `hfgrow stack` runs in every pair too (before/after "
                             "in the same conditions)")
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON result to this file")
    parser.add_argument("--make-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_only:
        make_checkpoint(args.make_only, args.scale)  # prints its JSON summary
        return

    root = Path(tempfile.mkdtemp(prefix="hfgrow-bench-", dir=args.workdir))
    try:
        src = root / "src"
        # made in a child so this process stays small: a forked child's peak RSS counts the parent's pages
        made = subprocess.run([sys.executable, __file__, "--make-only", str(src), "--scale", str(args.scale)],
                              check=True, capture_output=True, text=True).stdout
        params = json.loads(made.strip().splitlines()[-1])["params"]
        files = sorted(str(p) for p in src.glob("*.safetensors"))
        cat_out, grown = root / "cat.bin", root / "grown"
        hfgrow = [sys.executable, "-m", "hfgrow.cli.main", "stack", str(src), str(grown),
                  "--factor", str(args.factor), "--quiet"]
        cats, grows, olds = [], [], []
        old_env = {**os.environ, "PYTHONPATH": str(args.baseline_tree.resolve())} if args.baseline_tree else None
        dry = timed(hfgrow[:-1] + ["--dry-run", "--quiet"])[0]  # start-up: imports, config, skeleton, plan
        for _ in range(args.repeats):
            os.sync()  # start each run with no dirty pages left by the previous one
            with open(cat_out, "wb") as sink:
                cats.append(timed(["cat"] + files * args.factor, stdout=sink))
            cat_bytes = cat_out.stat().st_size
            cat_out.unlink()
            for which in (("new", "old") if len(grows) % 2 == 0 else ("old", "new")) if old_env else ("new",):
                os.sync()
                if which == "new":
                    grows.append(timed(hfgrow))
                    written = sum(p.stat().st_size for p in grown.iterdir())
                else:
                    olds.append(timed(hfgrow, env=old_env))
                shutil.rmtree(grown)
        # cat copies the source g times; Gstack writes embeddings/LM head once, so compare per byte
        cat_s = statistics.median(t for t, *_ in cats) * written / cat_bytes
        grow_s = statistics.median(t for t, *_ in grows)
        scale = written / cat_bytes
        # on a loaded machine the median of per-pair ratios (each run against the cat just before it) is steadier
        pair = statistics.median(g / (c * scale) for (g, *_), (c, *_) in zip(grows, cats))
        result = {
            "source_params": params,
            "bytes_written": written,
            "cat_bytes": cat_bytes,
            "cat_seconds_for_same_bytes": round(cat_s, 2),
            "hfgrow_seconds": round(grow_s, 2),
            "time_ratio_vs_cat": round(grow_s / cat_s, 3),
            "time_ratio_vs_cat_median_of_pairs": round(pair, 3),
            "startup_seconds (dry run)": round(dry, 2),
            "time_ratio_vs_cat_excluding_startup": round((grow_s - dry) / cat_s, 3),
            # CPU seconds (user + system, the process and its children): on a loaded machine, what wall time follows
            "cpu_seconds": {"cat": round(statistics.median(c for *_, c in cats), 2),
                            "hfgrow": round(statistics.median(c for *_, c in grows), 2),
                            **({"baseline": round(statistics.median(c for *_, c in olds), 2)} if olds else {})},
            "hfgrow_peak_rss_gb": round(max(r for _, r, _ in grows), 3),
            "cat_peak_rss_gb": round(max(r for _, r, _ in cats), 3),
            "runs": {"cat": [round(t, 2) for t, *_ in cats], "hfgrow": [round(t, 2) for t, *_ in grows]},
            **({"baseline_tree": str(args.baseline_tree), "baseline_seconds": round(statistics.median(
                t for t, *_ in olds), 2), "baseline_time_ratio_vs_cat": round(statistics.median(t for t, *_ in olds)
                                                                             / cat_s, 3),
                "baseline_time_ratio_vs_cat_median_of_pairs": round(statistics.median(
                    o / (c * scale) for (o, *_), (c, *_) in zip(olds, cats)), 3),
                "baseline_peak_rss_gb": round(max(r for _, r, _ in olds), 3),
                "baseline_runs": [round(t, 2) for t, *_ in olds]} if olds else {}),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "versions": versions(),
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.save:
            args.save.write_text(text + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
