"""Resolve what the user named as SRC into a local model folder.

SRC is a local folder or a Hub repo id (``org/name``). A PEFT adapter (a folder or
repo with ``adapter_config.json``) is merged into its base model with peft first.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hfgrow.console import log
from hfgrow.errors import HfgrowError
from hfgrow.io.files import copy_carry_over
from hfgrow.io.folder import ModelFolder


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
    """A local folder or a Hub snapshot; either way every link in it must stay inside it (ModelFolder)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if revision:
            raise HfgrowError(f"--revision applies to Hub repos, but {spec} is a local folder.")
        ModelFolder(path).check_links()
        log.debug(f"{spec}: the local folder {path.resolve()}")
        return Source(spec, path.resolve())
    if path.exists() or path.is_symlink():
        raise HfgrowError(f"{spec} is not a folder; SRC must be a model folder or a Hub repo id.")
    from hfgrow.io import hub

    if not hub.looks_like_repo_id(spec):
        raise HfgrowError(f"{spec} is neither an existing folder nor a Hub repo id like 'org/name'.")
    try:
        folder, commit = hub.download_source(spec, revision=revision, token=token, progress=progress)
    except hub.RepoMissing as exc:
        raise HfgrowError(f"there is no local folder {spec}, and {exc.reason}.") from None
    ModelFolder(folder).check_links()
    log.debug(f"{spec}: the Hub snapshot {folder} (commit {commit})")
    return Source(spec, Path(folder), repo_id=spec, revision=revision, commit=commit)


def _merge_adapter(adapter: Source, token, progress: bool, workdir: Path) -> Source:
    """Merge a PEFT adapter into its base model and save the result to ``workdir``."""
    config = ModelFolder(adapter.path).read_json("adapter_config.json")
    base_spec = config.get("base_model_name_or_path")
    if not isinstance(base_spec, str) or not base_spec:
        raise HfgrowError(f"{adapter.spec}'s adapter_config.json does not name its base model.")
    revision = config.get("revision")
    base = _resolve_folder(base_spec, revision if isinstance(revision, str) else None, token, progress)
    base_folder = ModelFolder(base.path)
    base_config = base_folder.file("config.json")
    from hfgrow.io.checkpoint import Checkpoint

    base_folder.check_links()  # before transformers and peft open files in it on their own
    Checkpoint.open(base_folder)  # headers and index checked as the safetensors library checks them
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hfgrow.io.executor import save_state_dict

    model, loading = AutoModelForCausalLM.from_pretrained(base.path, dtype="auto", device_map="cpu",
                                                          output_loading_info=True)
    # a base whose tensors do not match its config would load with weights silently re-initialised
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if loading.get(kind):
            first = sorted(loading[kind], key=str)[0]
            raise HfgrowError(f"the adapter's base model {base_spec} does not match its config.json: "
                              f"{kind.replace('_', ' ')[:-1]} {first!s} ({len(loading[kind])} in all).")
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
    shutil.copyfile(base_config, workdir / "config.json")
    copy_carry_over(base_folder, workdir)
    return Source(base.spec, workdir, base.repo_id, base.revision, base.commit, adapter=adapter)


@contextlib.contextmanager
def open_source(spec: str, revision: str | None = None, token=None, progress: bool = True) -> Iterator[Source]:
    """Resolve ``spec`` to a local folder; temporary files (merged adapters) live for the ``with`` block.

    Example:
        >>> with open_source("TinyLlama/TinyLlama_v1.1") as src:
        ...     print(src.path, src.commit)
    """
    source = _resolve_folder(str(spec), revision, token, progress)
    folder = ModelFolder(source.path)
    if folder.find("adapter_config.json") is not None and folder.find("config.json") is None:
        with tempfile.TemporaryDirectory(prefix="hfgrow-merged-") as workdir:
            yield _merge_adapter(source, token, progress, Path(workdir))
        return
    yield source
