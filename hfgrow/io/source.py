"""Resolve what the user named as SRC into a local model folder.

SRC is a local folder or a Hub repo id (``org/name``). A PEFT adapter (a folder or
repo with ``adapter_config.json``) is merged into its base model with peft first.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hfgrow.errors import HfgrowError
from hfgrow.io.files import copy_carry_over


@dataclass(frozen=True)
class Source:
    """A resolved model folder and where it came from (for the card and the recipe)."""

    spec: str  # what the user typed
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    adapter: "Source | None" = None  # set when ``path`` is a base model with this adapter merged in

    @property
    def display(self) -> str:
        return self.repo_id or str(self.path)


def _resolve_folder(spec: str, revision: str | None, token, progress: bool) -> Source:
    path = Path(spec).expanduser()
    if path.is_dir():
        if revision:
            raise HfgrowError(f"--revision applies to Hub repos, but {spec} is a local folder.")
        return Source(spec, path.resolve())
    if path.exists():
        raise HfgrowError(f"{spec} is a file; SRC must be a model folder or a Hub repo id.")
    from hfgrow.io import hub

    if not hub.looks_like_repo_id(spec):
        raise HfgrowError(f"{spec} is neither an existing folder nor a Hub repo id like 'org/name'.")
    folder, commit = hub.download_source(spec, revision=revision, token=token, progress=progress)
    return Source(spec, Path(folder), repo_id=spec, revision=revision, commit=commit)


def _merge_adapter(adapter: Source, token, progress: bool, workdir: Path) -> Source:
    """Merge a PEFT adapter into its base model and save the result to ``workdir``."""
    config = json.loads((adapter.path / "adapter_config.json").read_text())
    base_spec = config.get("base_model_name_or_path")
    if not base_spec:
        raise HfgrowError(f"{adapter.spec}'s adapter_config.json does not name its base model.")
    base = _resolve_folder(base_spec, config.get("revision"), token, progress)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hfgrow.io.executor import save_state_dict

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype="auto", device_map="cpu")
    try:
        merged = PeftModel.from_pretrained(model, adapter.path).merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - peft raises many types for mismatched adapters
        raise HfgrowError(f"cannot merge adapter {adapter.spec} into {base_spec}: {str(exc).splitlines()[0][:160]}") from None
    state = merged.state_dict()
    tied = getattr(merged, "all_tied_weights_keys", None) or {}
    for target in tied:
        state.pop(target, None)
    with torch.no_grad():
        save_state_dict(state, workdir)
    shutil.copy2(base.path / "config.json", workdir / "config.json")
    copy_carry_over(base.path, workdir)
    return Source(base.spec, workdir, base.repo_id, base.revision, base.commit, adapter=adapter)


@contextlib.contextmanager
def open_source(spec: str, revision: str | None = None, token=None, progress: bool = True) -> Iterator[Source]:
    """Resolve ``spec`` to a local folder; temporary files (merged adapters) live for the ``with`` block.

    Example:
        >>> with open_source("TinyLlama/TinyLlama_v1.1") as src:
        ...     print(src.path, src.commit)
    """
    source = _resolve_folder(str(spec), revision, token, progress)
    if (source.path / "adapter_config.json").is_file() and not (source.path / "config.json").is_file():
        with tempfile.TemporaryDirectory(prefix="hfgrow-merged-") as workdir:
            yield _merge_adapter(source, token, progress, Path(workdir))
        return
    yield source
