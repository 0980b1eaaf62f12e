"""Width x2 (hidden and FFN, G-right-direct) of a Llama-shaped random bf16 checkpoint vs `cat`.

Usage:
    python bench/bench_width.py                 # scaled-down TinyLlama shape (scale 0.5), a couple of minutes
    python bench/bench_width.py --full          # TinyLlama 1.1B shape: 22 layers, hidden 2048, FFN 5632,
                                                #   32 heads, 4 KV heads, vocab 32000 (2.2 GB in, ~8.8 GB out)
    python bench/bench_width.py --scale 0.25 --repeats 3 --workdir /big/disk

Each run is a fresh child process (imports included): `hfgrow grow SRC OUT --hidden-size 2H
--intermediate-size 2I` (heads x2, KV heads x2, head_dim fixed), then `cat OUT/*.safetensors > file`,
i.e. cat writing exactly the bytes hfgrow wrote, on the same disk, in the same run. Runs alternate
and medians are reported. Peak RSS comes from wait4 (the child's own maximum resident set); the
fixed overhead is the peak RSS of `--dry-run` (imports, config, meta-model skeleton, plan), and the
memory bound checked is: peak RSS <= 2 x largest output tensor + that overhead.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="TinyLlama 1.1B shape (same as --scale 1)")
    parser.add_argument("--scale", type=float, default=0.5, help="scale of hidden/FFN/vocab (1.0 = TinyLlama)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--make-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scale = 1.0 if args.full else args.scale
    if args.make_only:
        make_checkpoint(args.make_only, scale)
        return

    root = Path(tempfile.mkdtemp(prefix="hfgrow-bench-width-", dir=args.workdir))
    try:
        src = root / "src"
        # made in a child so this process stays small
        made = subprocess.run([sys.executable, __file__, "--make-only", str(src), "--scale", str(scale)],
                              check=True, capture_output=True, text=True).stdout
        shape = json.loads(made.strip().splitlines()[-1])
        grown, cat_out = root / "grown", root / "cat.bin"
        base = [sys.executable, "-m", "hfgrow.cli.main", "grow", str(src), str(grown),
                "--hidden-size", str(2 * shape["hidden"]), "--intermediate-size", str(2 * shape["ffn"]), "--quiet"]
        dry_s, overhead, dry_cpu = timed(base + ["--dry-run"])
        cats, grows = [], []
        written = 0
        for _ in range(args.repeats):
            os.sync()
            grows.append(timed(base))
            shards = sorted(str(p) for p in grown.glob("*.safetensors"))
            written = sum(Path(p).stat().st_size for p in shards)
            os.sync()
            with open(cat_out, "wb") as sink:
                cats.append(timed(["cat", *shards], stdout=sink))
            cat_out.unlink()
            shutil.rmtree(grown)
            os.sync()
        largest = 2 * max(2 * shape["vocab"] * shape["hidden"], 2 * shape["hidden"] * 2 * shape["ffn"])  # bf16 bytes
        cat_s = statistics.median(t for t, _, _ in cats)
        grow_s = statistics.median(t for t, _, _ in grows)
        grow_cpu = statistics.median(c for _, _, c in grows)
        peak = max(r for _, r, _ in grows)
        result = {
            "shape": {"layers": 22, **{k: v for k, v in shape.items() if k != "params"},
                      "heads": 32, "kv_heads": 4, "scale": scale},
            "source_params": shape["params"],
            "bytes_written": written,
            "cat_seconds_same_bytes": round(cat_s, 2),
            "hfgrow_seconds": round(grow_s, 2),
            "time_ratio_vs_cat": round(grow_s / cat_s, 2),
            "hfgrow_cpu_seconds": round(grow_cpu, 2),
            "startup_seconds (dry run: imports, config, skeleton, plan)": round(dry_s, 2),
            "time_ratio_vs_cat_excluding_startup": round(max(grow_s - dry_s, 0.0) / cat_s, 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "hfgrow_peak_rss_gb": round(peak, 3),
            "fixed_overhead_rss_gb": round(overhead, 3),
            "largest_output_tensor_gb": round(largest / 1e9, 3),
            "rss_bound_gb (2x largest + overhead)": round((2 * largest) / 1e9 + overhead, 3),
            "rss_within_bound": peak <= 2 * largest / 1e9 + overhead,
            "cat_peak_rss_gb": round(max(r for _, r, _ in cats), 3),
            "runs": {"cat": [round(t, 2) for t, _, _ in cats], "hfgrow": [round(t, 2) for t, _, _ in grows]},
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
