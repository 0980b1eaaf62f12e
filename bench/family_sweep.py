"""Gstack every causal-LM type transformers knows, and count the grown models that stack.

"Stacks" means four checks on OUT after ``hfgrow stack SRC OUT --factor 2``:

1. load: ``AutoModelForCausalLM.from_pretrained(OUT)`` reports no missing, unexpected or mismatched keys;
2. layers: OUT has twice the source's decoder blocks, and its (text) config's ``num_hidden_layers`` says so
   wherever the source's said the block count (caches are sized by it);
3. forward: a forward pass on 5 tokens gives finite logits of shape [1, 5, vocab];
4. generate: ``generate(max_new_tokens=4, use_cache=True)`` (greedy) adds 4 tokens.

For each model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``: a tiny random model is built
(``bench/tiny_configs.py``: the config class's defaults shrunk by name, or hand-chosen sizes for the types
the generic rules cannot shrink), saved, and put through the same four checks (a source that fails them is
reported as ``source-fails``, with transformers' reason); then it is stacked and OUT is checked. Every type
counts in the denominator. Each type runs in its own process (a crash or a hang stays with its type).

Usage:
    python bench/family_sweep.py                       # every type, 2 processes, table on stdout
    python bench/family_sweep.py --types llama,bart    # a few
    python bench/family_sweep.py --json results.json   # also write the per-type results and the versions
    git archive main hfgrow | tar -x -C /tmp/main       # compare with another commit on the same tiny models:
    python bench/family_sweep.py --before /tmp/main --before-json before.json --json after.json

The latest figures are in README ("Which models").
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
    return model.eval(), {k: v for k, v in bad.items() if v}


def _blocks(model) -> dict[str, int]:
    """Length of every ModuleList in ``model``, by qualified name."""
    import torch

    return {name: len(module) for name, module in model.named_modules() if isinstance(module, torch.nn.ModuleList)}


def _declared_layers(model) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) else None


def _runs(model) -> str | None:
    """None when a forward pass and a 4-token cached greedy generation work; else why not."""
    import torch

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    vocab = int(getattr(config, "vocab_size", None) or model.get_output_embeddings().weight.shape[0])
    ids = torch.arange(5).unsqueeze(0) % vocab + 3 if vocab > 8 else torch.zeros(1, 5, dtype=torch.long)
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    except Exception as exc:  # noqa: BLE001
        return f"forward fails: {type(exc).__name__}: {_line(exc)}"
    if logits.shape[:2] != (1, 5) or not bool(torch.isfinite(logits).all()):
        return f"forward gives logits of shape {tuple(logits.shape)}, finite: {bool(torch.isfinite(logits).all())}"
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                                 do_sample=False, use_cache=True, pad_token_id=0)
    except Exception as exc:  # noqa: BLE001
        return f"generate fails: {type(exc).__name__}: {_line(exc)}"
    if out.shape != (1, 9):
        return f"generate gives shape {tuple(out.shape)}, not (1, 9)"
    return None


_HFGROW_FROM: list[str | None] = [None]  # where the imported hfgrow came from (None: the path)


def _import_hfgrow(root: str | None):
    """The hfgrow package from ``root`` (another checkout, e.g. the commit a change is compared against), or the
    one on the path; hfgrow is pure Python, so when the source changes its modules are dropped and imported again
    (never otherwise: a test process keeps its one hfgrow)."""
    import importlib

    if root != _HFGROW_FROM[0]:
        for name in [n for n in sys.modules if n == "hfgrow" or n.startswith("hfgrow.")]:
            del sys.modules[name]
        _HFGROW_FROM[0] = root
    if root is not None:
        sys.path.insert(0, root)
    try:
        return importlib.import_module("hfgrow")
    finally:
        if root is not None:
            sys.path.remove(root)


def _stack_and_check(src: Path, out: Path, factor: int, layers: int, src_blocks: dict, src_declared: int | None,
                     root: str | None = None) -> dict:
    """``hfgrow stack SRC OUT --factor`` and the four checks on OUT (hfgrow imported from ``root``)."""
    import shutil

    hfgrow = _import_hfgrow(root)
    from hfgrow.errors import HfgrowError

    shutil.rmtree(out, ignore_errors=True)
    result: dict = {}
    try:
        grown = hfgrow.stack(str(src), out, factor=factor, quiet=True)
    except HfgrowError as exc:
        return {"status": "refused", "reason": _line(exc)}
    except Exception as exc:  # noqa: BLE001
        return {"status": "crash", "reason": f"{type(exc).__name__}: {_line(exc)}"}
    result["kind_preserving"] = any("kind" in note for note in grown.plan.notes)
    result["_plan"] = (grown.plan.config, list(grown.plan.layer_map))
    try:
        model, bad = _load(out)
    except Exception as exc:  # noqa: BLE001
        return result | {"status": "broken", "check": "load",
                         "reason": f"OUT does not load: {type(exc).__name__}: {_line(exc)}"}
    if bad:
        return result | {"status": "broken", "check": "load", "reason": f"OUT loads with {_short(bad)}"}
    out_blocks = _blocks(model)
    grown_lists = [n for n, length in src_blocks.items() if length == layers and out_blocks.get(n) == layers * factor]
    declared = _declared_layers(model)
    if not grown_lists or (src_declared == layers and declared != layers * factor):
        return result | {"status": "broken", "check": "layers",
                         "reason": f"OUT has block lists {out_blocks} and num_hidden_layers {declared}; "
                                   f"the source had {src_blocks} and {src_declared}"}
    why = _runs(model)
    if why:
        return result | {"status": "broken", "check": why.split(" ", 1)[0], "reason": f"OUT: {why}"}
    return result | {"status": "ok"}


def run_one(model_type: str, factor: int = 2, layers: int = 2, before: str | None = None) -> dict:
    """Build, stack and check one type; ``status`` is ok, refused, broken (OUT fails a check), crash,
    source-fails (the tiny source itself fails a check) or not-built (no tiny model could be built).

    ``before``: also stack the same source with the hfgrow package in that folder (``result["before"]``).
    """
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(HERE))
    from tiny_configs import tiny_config

    from hfgrow.arch.layout import quiet_transformers

    result: dict = {"type": model_type}
    with tempfile.TemporaryDirectory(prefix=f"sweep-{model_type}-") as tmp, quiet_transformers():
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        try:
            config = tiny_config(model_type, layers)
            with torch.device("meta"):
                params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
            if params > MAX_PARAMS:
                failed = {"status": "not-built", "reason": f"{params / 1e6:.0f}M parameters at tiny sizes"}
                return result | failed | ({"before": failed} if before else {})
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
            model.save_pretrained(src)
            del model
            source, bad = _load(src)
        except Exception as exc:  # noqa: BLE001 - anything transformers cannot build or round-trip
            failed = {"status": "not-built", "reason": f"{type(exc).__name__}: {_line(exc)}"}
            return result | failed | ({"before": failed} if before else {})
        why = f"its own checkpoint does not load back: {_short(bad)}" if bad else _runs(source)
        if why:
            failed = {"status": "source-fails", "reason": f"the tiny source: {why}"}
            return result | failed | ({"before": failed} if before else {})
        src_layers = _declared_layers(source) if _declared_layers(source) in _blocks(source).values() else layers
        src_blocks, src_declared = _blocks(source), _declared_layers(source)
        del source
        earlier = _dry_plan(src, factor, before) if before else None
        after = _stack_and_check(src, out, factor, src_layers, src_blocks, src_declared)
        plan = after.pop("_plan", None)
        if before and isinstance(earlier, tuple) and earlier == plan:
            # same grown config.json and layer map from the same source: the same OUT, so the same checks
            result["before"] = dict(after, same_plan_as_after=True)
        elif before:
            result["before"] = isinstance(earlier, dict) and earlier or _stack_and_check(
                src, out, factor, src_layers, src_blocks, src_declared, before)
            result["before"].pop("_plan", None)
        return result | after


def _dry_plan(src: Path, factor: int, root: str):
    """(grown config, layer map) of ``stack --dry-run`` by the hfgrow in ``root``, or its result when it refuses."""
    hfgrow = _import_hfgrow(root)
    from hfgrow.errors import HfgrowError

    try:
        plan = hfgrow.stack(str(src), None, factor=factor, dry_run=True, quiet=True).plan
    except HfgrowError as exc:
        return {"status": "refused", "reason": _line(exc)}
    except Exception as exc:  # noqa: BLE001
        return {"status": "crash", "reason": f"{type(exc).__name__}: {_line(exc)}"}
    return plan.config, list(plan.layer_map)


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _short(bad: dict) -> str:
    return "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in bad.items())


def _run_isolated(model_type: str, timeout: int, before: str | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", model_type, *(["--before", before] if before else [])],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        failed = {"status": "crash", "reason": f"timed out after {timeout} s"}
        return {"type": model_type} | failed | ({"before": failed} if before else {})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"type": model_type, "status": "crash", "reason": f"exit {proc.returncode}: {tail[:200]}"}


def versions() -> dict[str, str]:
    """Versions of what the sweep depends on (recorded with the results)."""
    from importlib.metadata import version

    import platform

    found = {"python": platform.python_version()}
    for name in ("hfgrow", "transformers", "torch", "safetensors", "accelerate", "huggingface-hub"):
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            found[name] = "not installed"
    return found


def _summary(results: list[dict]) -> tuple[int, dict[str, int]]:
    ok = sum(r["status"] == "ok" for r in results)
    return ok, {status: sum(r["status"] == status for r in results) for status in sorted({r["status"] for r in results})}


def _write(path: Path, results: list[dict], hfgrow_from: str) -> None:
    ok, counts = _summary(results)
    path.write_text(json.dumps({"versions": versions(), "hfgrow_from": hfgrow_from, "types": len(results), "ok": ok,
                                "counts": counts, "checks": ["load", "layers", "forward", "generate"],
                                "results": results}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=None, help="comma-separated model types (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per type (default 300)")
    parser.add_argument("--json", type=Path, default=None, help="write per-type results and versions here")
    parser.add_argument("--before", default=None,
                        help="a folder holding another hfgrow package (e.g. `git archive` of main): each source is "
                             "stacked by it too, on the same tiny model")
    parser.add_argument("--before-json", type=Path, default=None, help="write the --before results here")
    parser.add_argument("--jsonl", type=Path, default=None,
                        help="append each type's result here as it finishes (a partial run stays usable)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, before=args.before)))
        return
    types = args.types.split(",") if args.types else causal_lm_types()
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = []
        for result in pool.map(lambda t: _run_isolated(t, args.timeout, args.before), types):
            results.append(result)
            if args.jsonl:
                with args.jsonl.open("a") as stream:
                    stream.write(json.dumps(result) + "\n")
            was = f" (before: {result['before']['status']})" if "before" in result else ""
            print(f"{result['type']:28s} {result['status']:12s}{was} {result.get('reason', '')}", flush=True)
    checks = "load, layer count, forward, generate 4 tokens with the cache"
    ok, counts = _summary(results)
    print(f"\n{ok} of {len(results)} causal-LM types stack x2 ({checks}): {100 * ok / max(1, len(results)):.1f}%; "
          f"{counts}; {time.time() - start:.0f} s")
    if args.before:
        before = [{"type": r["type"], **r.get("before", {"status": "crash", "reason": "no result"})} for r in results]
        ok, counts = _summary(before)
        print(f"before ({args.before}): {ok} of {len(before)} ({100 * ok / max(1, len(before)):.1f}%); {counts}")
        if args.before_json:
            _write(args.before_json, before, args.before)
    if args.json:
        _write(args.json, [{k: v for k, v in r.items() if k != "before"} for r in results], str(HERE.parent))


if __name__ == "__main__":
    main()
