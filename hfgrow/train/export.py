"""Turn a training checkpoint into an ordinary Hugging Face model folder, with the card of a trained model.

``export_checkpoint(RUN/checkpoint-N, OUT)`` reads the weights accelerate saved (a plain
``model.safetensors``, an FSDP sharded state dict, or a DeepSpeed ZeRO checkpoint), merges LoRA
adapters into the base weights, casts back to the trained model's dtype, drops tied duplicates, and
writes them with the project's safetensors writer, with the config (``use_cache`` restored), the files
carried over from the model the run started from (tokenizer, chat template, generation config:
:mod:`hfgrow.io.files`) and the card of a trained folder (:func:`hfgrow.growth.card.trained_card`).
Nothing written names a path of this machine: the model is named by its Hub id or its folder's name,
local data by file name. OUT is written into a temporary sibling and renamed into place at the end.

Example:
    >>> export_checkpoint(Path("run/checkpoint-2000"), Path("tinyllama-grown-cpt"))
    PosixPath('tinyllama-grown-cpt')
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

from hfgrow.data.specs import published_spec
from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder
from hfgrow.io.executor import save_state_dict
from hfgrow.io.output import OutputFolder, atomic_write, check_output_path
from hfgrow.train.checkpoints import SPREAD, STATE_FILE, RunState, describe, lacks_shards, read_failure, read_state
from hfgrow.units import counted, format_count


def _strip_prefixes(name: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("._orig_mod.", ".").replace("._checkpoint_wrapped_module.", ".")


def load_checkpoint_weights(checkpoint: Path) -> dict:
    """The model weights of an accelerate checkpoint as {name: tensor} (names unwrapped)."""
    import torch
    from torch.distributed.checkpoint.api import CheckpointException

    folder = Folder(checkpoint)
    folder.check_links()  # FSDP and DeepSpeed readers open the files they find on their own
    checkpoint = folder.path
    single = folder.find("model.safetensors", "the checkpoint's weights")
    binary = folder.find("pytorch_model.bin", "the checkpoint's weights") or \
        folder.find("pytorch_model_fsdp.bin", "the checkpoint's weights")
    fsdp = checkpoint / "pytorch_model_fsdp_0"
    ds = [p for p in checkpoint.iterdir() if p.is_dir() and (p / "mp_rank_00_model_states.pt").exists()] \
        if checkpoint.is_dir() else []
    try:
        if single is not None:
            from safetensors.torch import load_file

            weights = load_file(single)
        elif binary is not None:
            weights = torch.load(binary, map_location="cpu", weights_only=True)
        elif fsdp.is_dir():
            # torch's own converter, without a process group: accelerate's merge_fsdp_weights waits for every
            # process, and only the main one exports
            import tempfile

            from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

            with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:
                dcp_to_torch_save(fsdp, Path(tmp) / "weights.pt")
                weights = torch.load(Path(tmp) / "weights.pt", map_location="cpu", weights_only=True)
            if set(weights) == {"model"}:  # accelerate saves {"model": state_dict}
                weights = weights["model"]
        elif ds:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=ds[0].name)
        else:
            raise HfgrowError(f"{checkpoint} holds no model weights (no model.safetensors, FSDP or DeepSpeed files).")
    except HfgrowError:
        raise
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - truncated file, bad header, a missing shard
        cause = read_failure(exc)
        spread = (f"; {SPREAD} copy every node's files of it into one folder and export that"
                  if lacks_shards(checkpoint, cause) else "")
        raise HfgrowError(f"cannot read the weights in {checkpoint} ({describe(cause)}){spread}.") from None
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


def _merge_lora(run: dict, weights: dict, base: Path) -> dict:
    """The weights of a LoRA run merged into the ``base`` folder's weights (names as the plain model's)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(**run["lora"]))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    lora_missing = [k for k in missing if "lora_" in k]
    if lora_missing or unexpected:
        raise HfgrowError(
            f"the checkpoint's LoRA weights do not fit {run['model']} "
            f"({(lora_missing or unexpected)[0]})."
        )
    return model.merge_and_unload().state_dict()


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------


def _data_source(spec: str) -> str:
    """How the card names a data source: a Hub dataset by id and link, a local file or folder by its name only."""
    if spec.startswith("hf:"):
        name = spec[3:].split(":")[0]
        return f"[{name}](https://huggingface.co/datasets/{name})"
    return f"`{published_spec(spec)}` (local)"


def _data_arguments(flag: str, specs: dict[str, str], parts: dict[str, str]) -> list[str]:
    """``--data`` (or ``--eval-data``) arguments giving these domains again: ``NAME=SPEC`` for text; a token folder
    once, by its name alone, when its domains keep their names (``NAME=FOLDER`` renames a folder's only domain)."""
    argv: list[str] = []
    given: set[str] = set()
    for name, spec in specs.items():
        if name in parts and parts[name] == name:
            if spec not in given:
                given.add(spec)
                argv += [flag, published_spec(spec)]
            continue
        argv += [flag, f"{name}={published_spec(spec)}"]
    return argv


def _command(run: dict[str, Any], base: str) -> str:
    """The `hfgrow train` command of this run, with local files by name."""
    argv = ["hfgrow", "train"]
    if int(run.get("world_size") or 1) > 1:
        argv += ["--num-processes", str(run["world_size"])]
    argv += ["--model", base]
    parts = run.get("data_parts") or {}
    argv += _data_arguments("--data", run.get("data") or {}, parts)
    argv += _data_arguments("--eval-data", run.get("eval_data") or {}, parts)
    if run.get("mixture_file"):
        argv += ["--mixture", run["mixture_file"]]
    argv += ["--output-dir", "run/", "--seq-len", str(run["seq_len"]), "--batch-size", str(run["batch_size"]),
             "--grad-accum", str(run["grad_accum"]), "--max-steps", str(run["max_steps"]),
             "--lr", f"{run['max_lr']:.3g}", "--min-lr", f"{run['min_lr']:.3g}",
             "--warmup-steps", str(run["warmup_steps"]), "--seed", str(run.get("seed", 0))]
    if run.get("train", "all") != "all":
        argv += ["--train", run["train"]]
    if run.get("lora"):
        argv += ["--lora-r", str(run["lora"]["r"]), "--lora-alpha", f"{run['lora']['lora_alpha']:g}"]
    for stage in (run.get("stages") or [])[1:]:
        argv += ["--grow", stage["grow"]]
    if run.get("grow_optimizer") not in (None, "fresh"):  # None: a run without --grow
        argv += ["--grow-optimizer", run["grow_optimizer"]]
    if run.get("grow_warmup_steps"):
        argv += ["--grow-warmup-steps", str(run["grow_warmup_steps"])]
    return shlex.join(argv)


def _growth_rows(run: dict[str, Any], upto_stage: int) -> list[tuple[str, str]]:
    """Card rows for the growths a run made up to ``upto_stage``: when, what, and the optimizer and LR across it."""
    stages = (run.get("stages") or [])[: upto_stage + 1]
    rows = []
    for before, stage in zip(stages, stages[1:]):
        rows.append((f"growth {stage['stage']}", f"step {stage['start_step']:,} ({stage['start_tokens']:,} tokens): "
                                                 f"{before['layers']} → {stage['layers']} layers, `{stage['op']}` "
                                                 f"×{stage['factor']:g} ({format_count(stage['n_params'])} parameters)"))
    if rows:
        carry = run.get("grow_optimizer") == "carry"
        rows.append(("across growth", ("AdamW moments carried to the copies of each block" if carry else
                                       "AdamW fresh after every growth") + "; " +
                     (f"LR re-warmed over {counted(run['grow_warmup_steps'], 'step')}" if run.get("grow_warmup_steps") else
                      "the LR schedule continues")))
    return rows


def _losses(checkpoint: Path, state: RunState) -> tuple[float | None, list[dict[str, Any]]]:
    """(train loss of the checkpoint's step, the evaluations up to it) from the run's log.

    A checkpoint moved out of its run folder has no log beside it: its own record of the last losses is used.
    """
    from hfgrow.train.runlog import read_run

    step = state.step
    try:
        record = read_run(checkpoint.parent)
    except HfgrowError:
        record = None
    train = [r for r in record.train if r["step"] <= step] if record else []
    evals = [r for r in record.evals if r["step"] <= step] if record else []
    if not train:
        evals = [{"step": step, "losses": state.last_eval}] if state.last_eval else []
        return state.last_loss, evals
    return train[-1]["loss"], evals


def card_text(checkpoint: Path, state: RunState, base_folder: Path, config, model_name: str,
              base_model_id: str | None) -> str:
    """README.md of the exported folder: what was trained, how, on what, with which result."""
    from hfgrow.growth.card import trained_card
    from hfgrow.growth.recipe import Recipe, SourceRef

    run = state.run
    ref = SourceRef.from_dict(run.get("model_source") or {})
    repo_id = base_model_id or run.get("base_model_id") or ref.repo_id
    base = repo_id or run.get("model") or ref.display
    steps, tokens, stage = state.step, state.tokens, state.stage
    n_params = (run.get("stages") or [{}] * (stage + 1))[stage].get("n_params", run["n_params"])
    trained = {"all": "all",
               "new": f"the new layers only ({', '.join(map(str, run.get('new_layers') or []))})",
               "lora": f"LoRA adapters, r = {(run.get('lora') or {}).get('r')}, merged into the weights"}
    world = int(run.get("world_size") or 1)
    betas = run.get("betas") or [0.9, 0.95]
    rows = [
        ("model trained", f"`{base}`'s architecture from random initialisation (seed {run.get('seed', 0)})"
                          if run.get("random_init") else f"`{base}`"),
        ("parameters", f"{format_count(n_params)} ({n_params:,})"),
        ("parameters trained", trained.get(run.get("train", "all"), "all")),
        ("steps", f"{steps:,}"),
        ("tokens", f"{tokens:,}"),
        ("tokens per step", f"{run['tokens_per_step']:,} (processes × sequences × micro-steps × tokens = "
                            f"{world} × {run['batch_size']} × {run['grad_accum']} × {run['seq_len']})"),
        ("optimizer", f"AdamW, fresh (β₁ {betas[0]:g}, β₂ {betas[1]:g}, weight decay {run['weight_decay']:g}, "
                      f"gradient clipping {run['grad_clip']:g})"),
        ("learning rate", f"{run['max_lr']:.3g} → {run['min_lr']:.3g}: linear warmup over "
                          f"{counted(run['warmup_steps'], 'step')}, then cosine decay"),
    ]
    rows += _growth_rows(run, stage)
    mask = run.get("mask")
    if mask and not stage:
        rows.append(("MSG mask ramp", f"new structure scaled by c = 0 → 1 over the first {counted(mask['steps'], 'step')}"))
    last_loss, evals = _losses(Path(checkpoint), state)
    if last_loss is not None:
        rows.append((f"train loss at step {steps:,}", f"{last_loss:.4f}"))
    shown = evals if len(evals) <= 2 else [evals[0], evals[-1]]
    columns = [f"step {e['step']:,}" + (" (before training)" if e["step"] == 0 else "") for e in shown]
    domains = list(dict.fromkeys(d for e in shown for d in e["losses"]))
    eval_rows = [(d, [f"{e['losses'][d]:.4f}" if d in e["losses"] else "" for e in shown]) for d in domains]
    mixture = run.get("mixture") or {}
    data = [(name, _data_source(spec), f"{mixture.get(name, 0):.3f}") for name, spec in (run.get("data") or {}).items()]
    data += [(name, _data_source(spec), "held out") for name, spec in (run.get("eval_data") or {}).items()
             if name not in (run.get("data") or {})]
    datasets = sorted({spec[3:].split(":")[0] for spec in [*(run.get("data") or {}).values(),
                                                           *(run.get("eval_data") or {}).values()]
                       if spec.startswith("hf:")})
    grown = [(f"from {before['layers']} to {after['layers']} layers with `{after['op']}` ×{after['factor']:g} after "
              f"step {after['start_step']:,} ({after['start_tokens']:,} tokens)")
             for before, after in zip((run.get("stages") or [])[: stage + 1], (run.get("stages") or [])[1 : stage + 1])]
    # in a later stage, base_folder is the run's own grown-K: its growth is the run's (told above), not the base's
    return trained_card(
        model_name=model_name, base_display=base, base_repo_id=repo_id,
        model_type=getattr(config, "model_type", "model"), base_recipe=None if stage else Recipe.read(base_folder),
        steps=steps, tokens=tokens, training=rows, eval_columns=columns, eval_rows=eval_rows, data=data,
        datasets=datasets, command=_command(run, base), random_init=bool(run.get("random_init")),
        run_growth="; then ".join(grown) or None,
        run_growth_ops=[s["op"] for s in (run.get("stages") or [])[1 : stage + 1]])


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _base_folder(run: dict[str, Any], base, run_dir: Path):
    """The folder of the model the run started from: ``base`` when given, else resolved again from run.json
    (a local folder is recorded relative to the run folder ``run_dir``)."""
    if base is not None:
        yield base
        return
    from hfgrow.io.source import open_source

    spec = str(run_dir / run["model_spec"]) if run.get("model_folder") else run["model_spec"]
    with contextlib.ExitStack() as stack:
        try:
            source = stack.enter_context(open_source(spec, revision=run.get("model_revision"), progress=False))
        except HfgrowError as exc:
            raise HfgrowError(f"cannot open {run.get('model')!r}, the model this run started from: {exc}") from None
        yield source


def export_checkpoint(checkpoint: Path | str, out: Path | str, *, replace: bool = False,
                      max_shard_size: int | str = "5GB", base_model_id: str | None = None, base=None,
                      model_name: str | None = None) -> Path:
    """Write ``checkpoint`` (a training run's checkpoint-N folder) as a Hugging Face model folder ``out``.

    ``base`` is the resolved model the run started from (:class:`hfgrow.io.source.Source`; default: opened
    again from run.json), ``base_model_id`` the Hub id the card names it by (default: the one recorded),
    ``model_name`` the card's title (default: ``out``'s name). A checkpoint of a later stage of a run with
    growth takes its architecture from the stage's grown folder (``RUN/grown-K``).

    Example:
        >>> export_checkpoint("run/checkpoint-2000", "grown-cpt", base_model_id="org/grown")
        PosixPath('grown-cpt')
    """
    import torch

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / STATE_FILE).is_file():
        raise HfgrowError(f"{checkpoint} is not a complete hfgrow checkpoint (no {STATE_FILE}).")
    # OUT may not be the checkpoint, its run folder or anything holding them; --overwrite replaces model folders only
    check_output_path(out, [checkpoint], replace)
    state = read_state(checkpoint)
    run = state.run
    if "model_spec" not in run:
        raise HfgrowError(f"{checkpoint} was written by hfgrow 0.1, whose checkpoints this version does not export; "
                          "export it with hfgrow 0.1.")
    with _stage_folder(checkpoint, state, run, base) as folder:
        weights = load_checkpoint_weights(checkpoint)
        if run.get("lora"):
            weights = _merge_lora(run, weights, folder)
        config = _config(folder, run)
        readme = card_text(checkpoint, state, folder, config, model_name or out.name, base_model_id)
        return write_model_folder(weights, out, config=config, carry_from=folder,
                                  dtype=getattr(torch, str(run.get("export_dtype") or "float32"), torch.float32),
                                  use_cache=run.get("use_cache"), readme=readme, max_shard_size=max_shard_size)


@contextlib.contextmanager
def _stage_folder(checkpoint: Path, state: RunState, run: dict[str, Any], base):
    """The folder whose architecture and files the checkpoint's model has: the run's model, or a grown stage's."""
    stage = state.stage
    if stage:
        from hfgrow.train.growth import grown_folder

        folder = grown_folder(checkpoint.parent, stage)
        if not (folder / "config.json").is_file():
            raise HfgrowError(f"{checkpoint} is in stage {stage} of a run with growth, but {folder} (the grown model "
                              "that stage started from) is missing; export it from inside its run folder.")
        yield folder
        return
    with _base_folder(run, base, checkpoint.parent) as source:
        yield source.path


def _config(folder: Path, run: dict[str, Any]):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001
        raise HfgrowError(f"cannot load the config of {run.get('model')!r}, the model this run started from: "
                          f"{str(exc).splitlines()[0]}") from None


def write_model_folder(weights: dict, out: Path, *, config, carry_from: Path, dtype, use_cache: bool | None,
                       readme: str | None, max_shard_size: int | str = "5GB") -> Path:
    """Write model weights (unwrapped names; tied duplicates are dropped) as a Hugging Face folder ``out``.

    The weights are cast to ``dtype``; the config gets ``use_cache`` back (True when unknown) and the dtype;
    tokenizer and friends come from ``carry_from``; ``readme`` becomes README.md. ``out`` is written into a
    temporary sibling and renamed into place.

    Example:
        >>> write_model_folder(model.state_dict(), Path("run/stage-0"), config=model.config, carry_from=Path("small"),
        ...                    dtype=torch.float32, use_cache=True, readme=None)
        PosixPath('run/stage-0')
    """
    import torch
    from transformers import AutoModelForCausalLM

    from hfgrow.io.files import copy_carry_over

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    tied = _tied_targets(meta)
    expected = {k for k in meta.state_dict() if k not in tied}
    state_dict = {k: v for k, v in weights.items() if k not in tied}
    with OutputFolder(Path(out)) as tmp:
        if expected ^ set(state_dict):
            # Architectures whose in-memory names differ from the on-disk ones (fused MoE experts...):
            # let transformers map them back.
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(state_dict, strict=False)
            model.to(dtype).save_pretrained(tmp, max_shard_size=max_shard_size)
        else:
            cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state_dict.items()}
            save_state_dict(cast, tmp, max_shard_size=max_shard_size)
        config.use_cache = True if use_cache is None else bool(use_cache)
        config.dtype = dtype
        config.save_pretrained(tmp)
        copy_carry_over(carry_from, tmp)
        if readme is not None:
            atomic_write(tmp / "README.md", readme)
    return Path(out)


def push(folder: Path | str, repo_id: str) -> None:
    """Push an exported folder with the project's hub helper."""
    from hfgrow.io.hub import push_folder

    push_folder(Path(folder), repo_id)
