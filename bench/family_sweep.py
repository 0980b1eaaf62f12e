"""Gstack every causal-LM type transformers builds, and count the grown models that load cleanly.

For each model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``: a tiny random model is built from the
config class's defaults (``bench/tiny_configs.py``), saved, and loaded back (types whose own checkpoint
does not load back cleanly are not counted: transformers cannot round-trip them); then
``hfgrow stack SRC OUT --factor 2`` runs and OUT is loaded with ``output_loading_info``. A type passes
when OUT loads with no missing, unexpected or mismatched keys and twice the layers. Each type runs in
its own process (a crash or a hang stays with its type).

Usage:
    python bench/family_sweep.py                       # every type, 2 processes, table on stdout
    python bench/family_sweep.py --types llama,bart    # a few
    python bench/family_sweep.py --json results.json   # also write the per-type results

The latest figures are in README ("Safety": model types that do not stack).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_PARAMS = 30_000_000


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _load(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
    bad = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return model, {k: v for k, v in bad.items() if v}


def run_one(model_type: str, factor: int = 2, layers: int = 2) -> dict:
    """Build, stack and load one type; the result's ``status`` is ok, refused, broken, crash or not-built."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(HERE))
    from tiny_configs import tiny_config

    import hfgrow
    from hfgrow.arch.layout import quiet_transformers
    from hfgrow.errors import HfgrowError

    result: dict = {"type": model_type}
    with tempfile.TemporaryDirectory(prefix=f"sweep-{model_type}-") as tmp, quiet_transformers():
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        try:
            config = tiny_config(model_type, layers)
            with torch.device("meta"):
                params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
            if params > MAX_PARAMS:
                return result | {"status": "not-built", "reason": f"{params / 1e6:.0f}M parameters at tiny sizes"}
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
            model.save_pretrained(src)
            del model
            _, bad = _load(src)
        except Exception as exc:  # noqa: BLE001 - anything transformers cannot build or round-trip
            return result | {"status": "not-built", "reason": f"{type(exc).__name__}: {_line(exc)}"}
        if bad:
            return result | {"status": "not-built", "reason": f"its own checkpoint does not load back: {_short(bad)}"}
        try:
            grown = hfgrow.stack(str(src), out, factor=factor, quiet=True)
        except HfgrowError as exc:
            return result | {"status": "refused", "reason": _line(exc)}
        except Exception as exc:  # noqa: BLE001
            return result | {"status": "crash", "reason": f"{type(exc).__name__}: {_line(exc)}"}
        result["kind_preserving"] = any("kind" in note for note in grown.plan.notes)
        try:
            model, bad = _load(out)
        except Exception as exc:  # noqa: BLE001
            return result | {"status": "broken", "reason": f"OUT does not load: {type(exc).__name__}: {_line(exc)}"}
        if bad:
            return result | {"status": "broken", "reason": f"OUT loads with {_short(bad)}"}
        return result | {"status": "ok"}


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _short(bad: dict) -> str:
    return "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in bad.items())


def _run_isolated(model_type: str, timeout: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", model_type], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"type": model_type, "status": "crash", "reason": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"type": model_type, "status": "crash", "reason": f"exit {proc.returncode}: {tail[:200]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=None, help="comma-separated model types (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--json", type=Path, default=None, help="write per-type results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    types = args.types.split(",") if args.types else causal_lm_types()
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = []
        for result in pool.map(lambda t: _run_isolated(t, args.timeout), types):
            results.append(result)
            print(f"{result['type']:28s} {result['status']:9s} {result.get('reason', '')}", flush=True)
    built = [r for r in results if r["status"] != "not-built"]
    ok = [r for r in built if r["status"] == "ok"]
    print(f"\n{len(ok)} of {len(built)} types that transformers builds stack x2 and load cleanly "
          f"({100 * len(ok) / max(1, len(built)):.1f}%); {len(results) - len(built)} of {len(results)} not built; "
          f"{time.time() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"types": len(results), "built": len(built), "ok": len(ok),
                                         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
