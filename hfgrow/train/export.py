"""Turn a training checkpoint into an ordinary Hugging Face model folder; plot a run's losses.

``export_checkpoint(RUN/checkpoint-N, OUT)`` reads the weights accelerate saved (a plain
``model.safetensors``, an FSDP sharded state dict, or a DeepSpeed ZeRO checkpoint), merges LoRA
adapters into the base weights, casts back to the grown model's dtype, drops tied duplicates, and
writes them with the project's safetensors writer together with the config (``use_cache``
restored), tokenizer, generation config and an updated model card (base_model = the grown model,
base_model_relation = finetune, data, tokens, steps, final losses). It writes into a temporary
folder beside OUT and renames it at the end, so OUT is never left half-written.

Example:
    >>> export_checkpoint(Path("run/checkpoint-2000"), Path("tinyllama-grown-cpt"))
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hfgrow.errors import HfgrowError
from hfgrow.io.executor import OutputFolder, save_state_dict

STATE_FILE = "hfgrow_state.json"
CARD_START = "<!-- hfgrow:continue:start -->"
CARD_END = "<!-- hfgrow:continue:end -->"
COPY_FILES = ("generation_config.json",)


def _strip_prefixes(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("._orig_mod.", ".").replace("._checkpoint_wrapped_module.", ".")


def load_checkpoint_weights(checkpoint: Path) -> dict:
    """The model weights of an accelerate checkpoint as {name: tensor} (names unwrapped)."""
    import torch

    checkpoint = Path(checkpoint)
    single = checkpoint / "model.safetensors"
    fsdp = checkpoint / "pytorch_model_fsdp_0"
    ds = [p for p in checkpoint.iterdir() if p.is_dir() and (p / "mp_rank_00_model_states.pt").exists()] \
        if checkpoint.is_dir() else []
    try:
        if single.is_file():
            from safetensors.torch import load_file

            weights = load_file(single)
        elif (checkpoint / "pytorch_model.bin").is_file():
            weights = torch.load(checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
        elif (checkpoint / "pytorch_model_fsdp.bin").is_file():
            weights = torch.load(checkpoint / "pytorch_model_fsdp.bin", map_location="cpu", weights_only=True)
        elif fsdp.is_dir():
            import tempfile

            from accelerate.utils import merge_fsdp_weights

            with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:
                merge_fsdp_weights(str(fsdp), tmp, safe_serialization=True)
                from safetensors.torch import load_file

                weights = {}
                for f in sorted(Path(tmp).glob("*.safetensors")):
                    weights.update(load_file(f))
        elif ds:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=ds[0].name)
        else:
            raise HfgrowError(f"{checkpoint} holds no model weights (no model.safetensors, FSDP or DeepSpeed files).")
    except HfgrowError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated file, bad header
        raise HfgrowError(
            f"cannot read the weights in {checkpoint} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
        ) from None
    return {_strip_prefixes(k): v for k, v in weights.items()}


def _tied_targets(model) -> set[str]:
    """Names of parameters that are tied copies (e.g. lm_head.weight = embed_tokens.weight)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.add(name)
        else:
            seen[id(param)] = name
    return tied


def _merged_state_dict(run: dict, weights: dict, config) -> tuple[dict, set[str]]:
    """Weights ready to write (LoRA merged) and the set of names expected by the architecture."""
    import torch
    from transformers import AutoModelForCausalLM

    if run.get("lora"):
        from peft import LoraConfig, get_peft_model

        model = AutoModelForCausalLM.from_pretrained(run["model"], dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(**run["lora"]))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        lora_missing = [k for k in missing if "lora_" in k]
        if lora_missing or unexpected:
            raise HfgrowError(
                f"the checkpoint's LoRA weights do not fit {run['model']} "
                f"({(lora_missing or unexpected)[0]})."
            )
        model = model.merge_and_unload()
        tied = _tied_targets(model)
        state = {k: v for k, v in model.state_dict().items() if k not in tied}
        return state, set(state)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    tied = _tied_targets(meta)
    expected = {k for k in meta.state_dict() if k not in tied}
    return {k: v for k, v in weights.items() if k not in tied}, expected


def _card(base: str, base_id: str, out: Path, run: dict, state: dict) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    readme = Path(base) / "README.md"
    card = None
    if readme.is_file():
        try:
            card = ModelCard.load(readme)
        except Exception:  # noqa: BLE001 - a hand-written README without valid metadata
            card = None
    if card is None:
        name = Path(base_id).name
        card = ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n\n# {name} (continued pre-training)\n\n"
                         f"`{base_id}` after continued pre-training with hfgrow.\n")
    data = card.data
    from hfgrow.io.hub import looks_like_repo_id

    if looks_like_repo_id(base_id) and not Path(base_id).exists():  # the Hub rejects local paths here
        data.base_model = base_id
        data.base_model_relation = "finetune"
    hf_sets = [spec[3:].split(":")[0] for spec in (run.get("data") or {}).values() if spec.startswith("hf:")]
    if hf_sets:
        data.datasets = sorted(set((data.datasets or []) + hf_sets)) if isinstance(data.datasets, list) else hf_sets
    tags = list(data.tags or [])
    for t in ("hfgrow", "continued-pretraining"):
        if t not in tags:
            tags.append(t)
    data.tags = tags
    if not getattr(data, "library_name", None):
        data.library_name = "transformers"

    steps, tokens = int(state["step"]), int(state["tokens"])
    rows = [
        ("base model (grown)", f"`{base_id}`"),
        ("trained parameters", {"all": "all", "new": f"new layers only {run.get('new_layers')}",
                                "lora": f"LoRA r={(run.get('lora') or {}).get('r')} (merged)"}[run.get("train", "all")]),
        ("steps", f"{steps:,}"),
        ("tokens", f"{tokens:,}"),
        ("sequence length", str(run.get("seq_len"))),
        ("tokens per step", f"{run.get('tokens_per_step', 0):,}"),
        ("max / min LR", f"{run.get('max_lr'):.3g} / {run.get('min_lr'):.3g} (warmup {run.get('warmup_steps')}, cosine)"),
        ("final train loss", f"{state['last_loss']:.4f}" if state.get("last_loss") is not None else "n/a"),
    ]
    for name, loss in (state.get("last_eval") or {}).items():
        rows.append((f"final eval loss: {name}", f"{loss:.4f}"))
    mix = run.get("mixture") or {}
    data_lines = [f"- `{name}`: {spec} (proportion {mix.get(name, 0):.3f})" for name, spec in (run.get("data") or {}).items()]
    section = "\n".join([
        CARD_START,
        "## Continued pre-training",
        "",
        "Trained with `hfgrow/continue.py` (AdamW, warmup + cosine to 10% of the max LR, fresh optimizer).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Data:",
        "",
        *data_lines,
        CARD_END,
    ])
    text = card.text
    if CARD_START in text and CARD_END in text:
        head, _, rest = text.partition(CARD_START)
        _, _, tail = rest.partition(CARD_END)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    return f"---\n{data.to_yaml()}\n---\n{text if text.startswith(chr(10)) else chr(10) + text}"


def export_checkpoint(checkpoint: Path | str, out: Path | str, *, replace: bool = False,
                      max_shard_size: int | str = "5GB", base_model_id: str | None = None) -> Path:
    """Write ``checkpoint`` (a continue.py checkpoint-N folder) as a Hugging Face model folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / STATE_FILE).is_file():
        raise HfgrowError(f"{checkpoint} is not a complete hfgrow checkpoint (no {STATE_FILE}).")
    if out.exists() and not replace and any(out.iterdir()):
        raise HfgrowError(f"{out} already exists and is not empty; choose a new output folder.")
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        run = state["run"]
        base = run["model"]
    except (ValueError, KeyError, TypeError):
        raise HfgrowError(f"{checkpoint}/{STATE_FILE} is corrupt.") from None
    base_id = base_model_id or run.get("base_model_id") or base
    try:
        config = AutoConfig.from_pretrained(base)
    except Exception as exc:  # noqa: BLE001
        raise HfgrowError(f"cannot load the grown model {base!r} this run started from: {str(exc).splitlines()[0]}") from None

    weights = load_checkpoint_weights(checkpoint)
    state_dict, expected = _merged_state_dict(run, weights, config)
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    dtype = getattr(torch, str(run.get("export_dtype") or "float32"), torch.float32)

    # written into a temporary sibling and renamed into place only when complete
    with OutputFolder(out, overwrite=True) as tmp:
        if missing or unexpected:
            # Architectures whose in-memory names differ from the on-disk ones (fused MoE experts...):
            # let transformers map them back.
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(state_dict, strict=False)
            model.to(dtype).save_pretrained(tmp, max_shard_size=max_shard_size)
        else:
            cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
            save_state_dict(cast, tmp, max_shard_size=max_shard_size)
        config.use_cache = True if run.get("use_cache") is None else bool(run["use_cache"])
        config.dtype = dtype
        config.save_pretrained(tmp)
        for name in COPY_FILES:
            if (Path(base) / name).is_file():
                shutil.copy2(Path(base) / name, tmp / name)
        try:
            AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        except Exception:  # noqa: BLE001 - a model without tokenizer files: export the weights anyway
            pass
        (tmp / "README.md").write_text(_card(base, base_id, out, run, state))
    return out


def push(folder: Path | str, repo_id: str) -> None:
    """Push an exported folder with the project's hub helper."""
    try:
        from hfgrow.io.hub import push_folder
    except ImportError:
        raise HfgrowError("--push-to needs hfgrow.io.hub.push_folder, which this installation lacks.") from None
    push_folder(Path(folder), repo_id)


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------


def read_log(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of RUN/log.jsonl, the last record per step winning."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise HfgrowError(f"{run_dir} has no log.jsonl; is it a continue.py output folder?")
    train, evals = {}, {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        (evals if rec.get("type") == "eval" else train)[rec.get("step")] = rec
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_run(run_dir: Path | str, out: Path | str | None = None, x: str = "tokens") -> Path:
    """Loss vs tokens (or FLOPs ≈ 6·N·tokens) of a run, train and per-domain eval, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train, evals = read_log(run_dir)
    if not train:
        raise HfgrowError(f"{run_dir}/log.jsonl has no training steps yet.")
    n_params = None
    if (run_dir / "run.json").is_file():
        n_params = json.loads((run_dir / "run.json").read_text()).get("n_params")
    if x == "flops":
        if not n_params:
            raise HfgrowError(f"{run_dir}/run.json does not record the parameter count; plot with --x tokens.")
        scale, label = 6.0 * n_params, "training FLOPs (≈ 6·N·tokens)"
    else:
        scale, label = 1.0, "tokens"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.plot([r["tokens"] * scale for r in train], [r["loss"] for r in train], lw=1, label="train")
    domains = sorted({d for r in evals for d in r.get("losses", {})})
    for d in domains:
        pts = [(r["tokens"] * scale, r["losses"][d]) for r in evals if d in r.get("losses", {})]
        ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=f"eval: {d}")
    ax.set_xlabel(label)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(run_dir.resolve().name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(out) if out else run_dir / "loss.png"
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
