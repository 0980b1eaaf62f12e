"""Hugging Face Hub I/O: pull a model repo into the normal HF cache, push an output folder.

Everything talks to ``HF_ENDPOINT`` (https://huggingface.co by default) through ``huggingface_hub``; the token
comes from the argument, else ``HF_TOKEN``, else ``hf auth login``. Every Hub or network failure surfaces as one
:class:`~hfgrow.errors.HfgrowError` sentence that says what to do.

Example:
    >>> from hfgrow.io.hub import download_source, push_folder
    >>> folder, sha = download_source("TinyLlama/TinyLlama_v1.1")          # doctest: +SKIP
    >>> push_folder("out/big", "me/tinyllama-x4", private=True)             # doctest: +SKIP
    'https://huggingface.co/me/tinyllama-x4/commit/0123abcd...'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.files import CARRY_OVER

# Small files fetched along with the weights (repo root only): what loading, tokenizing, chatting and describing
# the model needs. Matched with fnmatch against paths in the repo.
METADATA_PATTERNS: tuple[str, ...] = (
    "config.json",
    *CARRY_OVER,
    "README.md",  # the source card: license and lineage for the grown model's card
    "hfgrow.yaml",  # a grown model's recipe: training reads its new layers and MSG ramp from it
    "LICENSE*",
    "adapter_config.json",  # PEFT adapter repos
)

# Weight layouts, most preferred first: (index file, single file). safetensors before pickled .bin.
_WEIGHT_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
_ADAPTER_WEIGHTS: tuple[str, ...] = ("adapter_model.safetensors", "adapter_model.bin")

# Never uploaded by push_folder (fnmatch on the path relative to the folder; "*" also matches "/").
PUSH_IGNORE_PATTERNS: tuple[str, ...] = (
    "*hfgrow-tmp*",  # hfgrow's in-progress output (".NAME.hfgrow-tmp-PID" folders)
    "*.partial",
    "*.incomplete",
    "*.tmp",
    "*.lock",
    ".cache",
    ".cache/*",
    "*/.cache",
    "*/.cache/*",
    "checkpoint-*/*",  # transformers.Trainer checkpoints (optimizer/scheduler state)
    "*/checkpoint-*/*",
    "checkpoints/*",
    "*/checkpoints/*",
    ".ipynb_checkpoints/*",
    "*/.ipynb_checkpoints/*",
    "__pycache__/*",
    "*/__pycache__/*",
    "*.pyc",
    ".DS_Store",
    "*/.DS_Store",
)

_REPO_PART = r"\w(?:[\w.\-]{0,94}\w)?"
_REPO_ID_RE = re.compile(rf"{_REPO_PART}/{_REPO_PART}", re.ASCII)
_LOGIN = "run `hf auth login` or set HF_TOKEN"


def looks_like_repo_id(text: str) -> bool:
    """Whether `text` is shaped like a Hub model id ``org/name`` (syntax only: no network, no disk).

    A relative local path such as ``out/big`` has the same shape, so callers should test for an existing local
    folder first and only then treat `text` as a repo id.

    Example:
        >>> looks_like_repo_id("TinyLlama/TinyLlama_v1.1"), looks_like_repo_id("./small"), looks_like_repo_id("gpt2")
        (True, False, False)
    """
    if not isinstance(text, str) or not _REPO_ID_RE.fullmatch(text):
        return False
    return "--" not in text and ".." not in text and not text.endswith(".git")


def download_source(
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    progress: bool = True,
) -> tuple[Path, str]:
    """Download what hfgrow needs from a Hub model repo into the HF cache; return (snapshot folder, commit sha).

    Fetched: config, generation config, tokenizer files, chat templates, README/LICENSE, and exactly one weights
    format: ``model.safetensors`` (or its shards + index) when present, else ``pytorch_model.bin`` (or shards);
    for a PEFT adapter repo, ``adapter_config.json`` and ``adapter_model.safetensors`` (else ``.bin``). Files
    already in the cache are not downloaded again. With ``HF_HUB_OFFLINE=1`` (or when the Hub cannot be reached)
    the cached snapshot is used.

    Args:
        repo_id: ``org/name``.
        revision: branch, tag or commit sha; default: the repo's main branch.
        token: a token string, False to send none; default: HF_TOKEN or the ``hf auth login`` token.
        progress: show download progress bars.

    Raises:
        HfgrowError: repo/revision missing, private or gated without access, bad token, network down, not cached
            while offline, or no weights in a supported format.

    Example:
        >>> folder, sha = download_source("TinyLlama/TinyLlama_v1.1", revision="main")  # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())[:2], len(sha)                      # doctest: +SKIP
        (['config.json', 'generation_config.json'], 40)
    """
    if not looks_like_repo_id(repo_id):
        raise HfgrowError(f"'{repo_id}' is not a Hub model id: expected the form org/name.")
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    api = HfApi(token=token)
    try:
        files: set[str] | None = None
        unreachable: Exception | None = None
        if not constants.is_offline_mode():
            try:  # one request: the commit sha the revision points to, and the file list
                info = api.model_info(repo_id, revision=revision, token=token)
                sha = str(info.sha)
                files = {sibling.rfilename for sibling in info.siblings or []}
            except _transport_errors() as exc:  # Hub unreachable: fall back on the cache below
                unreachable = exc
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code < 500:
                    raise
                unreachable = exc
        from_cache = files is None
        if files is None:  # offline, or the Hub is unreachable: use what an earlier run cached
            cached = _cached_commit(storage, revision)
            snapshot = storage / "snapshots" / (cached or "-")
            if cached is None or not snapshot.is_dir():
                if unreachable is not None:
                    raise unreachable
                raise HfgrowError(_not_cached_message(repo_id, revision))
            sha = cached
            files = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}

            def read_json(name: str) -> Any:
                return json.loads((snapshot / name).read_text(encoding="utf-8"))

        else:
            _cache_ref(storage, revision, sha)

            def read_json(name: str) -> Any:
                path = hf_hub_download(repo_id, name, revision=sha, token=token)
                return json.loads(Path(path).read_text(encoding="utf-8"))

        try:
            wanted = _select_files(repo_id, files, read_json)
        except HfgrowError:
            if not from_cache:
                raise
            if unreachable is not None:  # a partial cache (e.g. config only) and no Hub to complete it
                raise unreachable from None
            raise HfgrowError(_not_cached_message(repo_id, revision)) from None
        folder = snapshot_download(
            repo_id,
            revision=sha,  # a commit sha: files already in the cache are served without any request
            allow_patterns=wanted,
            token=token,
            tqdm_class=None if progress else _quiet_tqdm(),
        )
    except HfgrowError:
        raise
    except Exception as exc:
        raise _hub_error(exc, action="download", repo_id=repo_id, revision=revision, token=token) from exc
    return Path(folder), sha


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload `folder` to the Hub model repo `repo_id` (created if missing); return the URL of the commit or PR.

    Uses ``HfApi.upload_folder`` (resumable: re-running after an interruption skips what was committed; files
    identical to the remote ones are not uploaded or committed again). README.md is uploaded as is (it is the
    model card). Temporary, partial, cache and checkpoint files (:data:`PUSH_IGNORE_PATTERNS`) are never uploaded.
    The local folder is only read.

    Args:
        folder: the folder to upload (e.g. an hfgrow output folder).
        repo_id: ``org/name``.
        private: create the repo private. An existing public repo is refused rather than published to.
        revision: branch to push to (created from main if missing); default main.
        create_pr: open a pull request against main instead of committing to it.
        commit_message: default "Upload <folder name> with hfgrow".
        token: a token with write access; default HF_TOKEN or the ``hf auth login`` token.

    Raises:
        HfgrowError: no token, no permission, bad folder, network failure, invalid README metadata...

    Example:
        >>> push_folder("out/big", "me/tiny-x4", commit_message="Gstack x4")  # doctest: +SKIP
        'https://huggingface.co/me/tiny-x4/commit/5f0c...'
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    if not folder.is_dir():
        raise HfgrowError(f"Cannot push '{folder}': it is not a folder.")
    if not looks_like_repo_id(repo_id):
        raise HfgrowError(f"'{repo_id}' is not a Hub model id: expected the form org/name.")
    if create_pr and revision not in (None, "main"):
        raise HfgrowError(
            "--create-pr always opens the pull request against main: drop --revision, or push to the branch"
            " without --create-pr."
        )
    relpaths = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    if not list(filter_repo_objects(relpaths, ignore_patterns=[*PUSH_IGNORE_PATTERNS, ".git", ".git/*", "*/.git/*"])):
        raise HfgrowError(f"Nothing to push: '{folder}' holds no files besides temporary or partial ones.")
    if not _has_token(token):
        raise HfgrowError(f"Pushing to the Hub needs a token with write access: {_LOGIN}.")

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, token=token)
        if private and not api.repo_info(repo_id, token=token).private:
            raise HfgrowError(
                f"Hub repo '{repo_id}' already exists and is public, so --private cannot apply: make it private in"
                " its settings first, or push without --private."
            )
        if revision and revision != "main" and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {folder.resolve().name} with hfgrow",
            revision=revision,
            create_pr=create_pr,
            ignore_patterns=list(PUSH_IGNORE_PATTERNS),
            token=token,
        )
    except HfgrowError:
        raise
    except Exception as exc:
        raise _hub_error(exc, action="push to", repo_id=repo_id, revision=revision, token=token) from exc
    return str(info.pr_url or info.commit_url)


# --------------------------------------------------------------------------------------------------- internals


def _select_files(repo_id: str, files: set[str], read_json: Callable[[str], Any]) -> list[str]:
    """Exact repo paths to fetch: metadata files + one weights format (+ adapter files)."""
    chosen = {f for f in files if any(fnmatchcase(f, p) for p in METADATA_PATTERNS)}
    weights: list[str] = []
    for index, single in _WEIGHT_LAYOUTS:
        if index in files:
            shards = sorted(set((read_json(index).get("weight_map") or {}).values()))
            missing = [s for s in shards if s not in files]
            if not shards or missing:
                raise HfgrowError(
                    f"Hub repo '{repo_id}' is broken: {index} lists {', '.join(missing[:3]) or 'no files'}"
                    " that the repo does not have; pick another revision or fix the repo."
                )
            weights = [index, *shards]
            break
        if single in files:
            weights = [single]
            break
    adapter = next((w for w in _ADAPTER_WEIGHTS if w in files), None) if "adapter_config.json" in files else None
    if not weights and adapter is None:
        other = sorted(f for f in files if f.endswith((".safetensors", ".bin", ".gguf", ".pth", ".pt")))
        found = f" (it has {', '.join(other[:3])})" if other else ""
        raise HfgrowError(
            f"Hub repo '{repo_id}' has no weights hfgrow can read{found}: it needs model.safetensors or"
            " pytorch_model.bin (or their shards with an index), or adapter_config.json with adapter weights."
        )
    chosen.update(weights)
    if adapter is not None:
        chosen.add(adapter)
    return sorted(chosen)


_SHA_RE = re.compile(r"[0-9a-f]{40}")


def _cached_commit(storage: Path, revision: str | None) -> str | None:
    """The commit sha `revision` pointed to when last seen online (HF cache ``refs/`` files), or None."""
    if revision and _SHA_RE.fullmatch(revision):
        return revision
    ref = storage / "refs" / (revision or "main")
    try:
        sha = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return sha if _SHA_RE.fullmatch(sha) else None


def _cache_ref(storage: Path, revision: str | None, sha: str) -> None:
    """Record revision -> sha in the HF cache (``refs/<revision>``, the documented cache layout) for offline runs."""
    name = revision or "main"
    if _SHA_RE.fullmatch(name):
        return
    ref = storage / "refs" / name
    try:
        if ref.is_file() and ref.read_text(encoding="utf-8").strip() == sha:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f"{ref.name}.hfgrow-tmp")
        tmp.write_text(sha, encoding="utf-8")
        tmp.replace(ref)
    except OSError:
        pass  # best effort, e.g. a read-only cache


def _quiet_tqdm() -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _QuietTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _QuietTqdm


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the Hub could not be reached" for the installed huggingface_hub HTTP stack."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled]
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        try:
            errors.append(__import__(module).TransportError)
        except ImportError:
            pass
    return tuple(errors)


def _has_token(token: str | bool | None) -> bool:
    if token is False:
        return False
    if isinstance(token, str):
        return bool(token.strip())
    from huggingface_hub import get_token

    return get_token() is not None


def _not_cached_message(repo_id: str, revision: str | None) -> str:
    at = f" at revision '{revision}'" if revision else ""
    return (
        f"Hub repo '{repo_id}'{at} is not (fully) in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set: run once"
        " with network access (unset HF_HUB_OFFLINE) to download it."
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([item.__cause__, item.__context__])
    return seen


def _first_line(exc: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hub_error(
    exc: BaseException,
    *,
    action: str,
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
) -> HfgrowError:
    """Map a huggingface_hub / HTTP-stack exception to one actionable HfgrowError sentence.

    `action` reads "download" or "push to"; the whole exception chain is inspected, so wrapped errors (e.g. an
    LFS upload failure wrapped in a RuntimeError) are recognised.
    """
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    pushing = action.startswith("push")
    at = f" at revision '{revision}'" if revision else ""
    retry = (
        "; re-run the same command to resume (the local folder is untouched and finished files are not sent again)"
        if pushing
        else "; re-run to resume (files already downloaded stay in the cache)"
    )
    class _Never(Exception):
        pass

    # Looked up by name: some of these classes only exist in recent huggingface_hub releases.
    remote_entry = getattr(hf, "RemoteEntryNotFoundError", _Never)
    incomplete = getattr(hf, "IncompleteSnapshotError", _Never)
    unresolved = getattr(hf, "RevisionResolutionError", _Never)
    network_types = (*_transport_errors(), hf.LocalEntryNotFoundError, unresolved)
    offline_types = (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError, unresolved)

    def classify(e: BaseException) -> str | None:
        if isinstance(e, hf.GatedRepoError):
            return (
                f"Hub repo '{repo_id}' is gated: request access at {constants.ENDPOINT}/{repo_id}, then {_LOGIN}"
                " with a token of the account that was granted access."
            )
        if isinstance(e, hf.RevisionNotFoundError):
            return (
                f"Revision '{revision or 'main'}' does not exist in Hub repo '{repo_id}': use an existing branch,"
                " tag or commit sha."
            )
        if isinstance(e, hf.RepositoryNotFoundError):
            if _has_token(token):
                return (
                    f"Hub repo '{repo_id}' was not found or your token cannot access it: check the name, and that"
                    " the token belongs to an account that can see the repo."
                )
            return (
                f"Hub repo '{repo_id}' was not found, or it is private and no token was sent: check the name, or"
                f" {_LOGIN} if it is private."
            )
        if isinstance(e, remote_entry):
            return (
                f"A file disappeared from Hub repo '{repo_id}'{at} while downloading it: re-run, or pin --revision"
                " to a commit sha."
            )
        if isinstance(e, ValueError) and "metadata in README.md" in str(e):
            detail = " ".join(ln.strip("- ").strip() for ln in str(e).splitlines()[1:] if ln.strip())
            return (
                f"The Hub rejected the YAML metadata of README.md{': ' + detail if detail else ''}; fix the card"
                " header and push again."
            )
        if isinstance(e, incomplete):
            return (
                f"The cached copy of Hub repo '{repo_id}'{at} is incomplete and the Hub cannot be reached: re-run"
                " with network access (HF_HUB_OFFLINE unset) to finish the download."
            )
        if isinstance(e, offline_types) and constants.is_offline_mode():
            if pushing:
                return "Cannot push while HF_HUB_OFFLINE=1 is set: unset HF_HUB_OFFLINE and run again."
            return _not_cached_message(repo_id, revision)
        if isinstance(e, hf.HfHubHTTPError) and e.response is not None:
            status = e.response.status_code
            if status == 401:
                if not _has_token(token):
                    return f"The Hub requires a token to {action} '{repo_id}': {_LOGIN}."
                return (
                    f"The Hub rejected your token (HTTP 401) while trying to {action} '{repo_id}': {_LOGIN} with a"
                    " valid token."
                )
            if status == 403:
                need = "write" if pushing else "read"
                return (
                    f"Your token may not {action} '{repo_id}' (HTTP 403): use a token with {need} access to the"
                    f" '{repo_id.split('/')[0]}' namespace ({_LOGIN})."
                )
            if status == 429:
                return (
                    f"The Hub rate-limited this client (HTTP 429) while trying to {action} '{repo_id}': wait a few"
                    " minutes and re-run."
                )
            if status >= 500:
                return (
                    f"The Hub had a server error (HTTP {status}) while trying to {action} '{repo_id}': try again"
                    f" later{retry}."
                )
            detail = (e.server_message or _first_line(e)).splitlines()[0]
            return f"The Hub refused to {action} '{repo_id}' (HTTP {status}: {detail})."
        if isinstance(e, network_types) or (isinstance(e, OSError) and "Consistency check failed" in str(e)):
            return (
                f"Network problem while trying to {action} '{repo_id}' ({type(e).__name__}): check your"
                f" connection and HF_ENDPOINT ({constants.ENDPOINT}){retry}."
            )
        return None

    # Outermost first: the error raised last describes the failure best; wrapped causes are looked at after.
    for item in _exception_chain(exc):
        message = classify(item)
        if message is not None:
            return HfgrowError(message)
    return HfgrowError(f"Could not {action} Hub repo '{repo_id}'{at}: {type(exc).__name__}: {_first_line(exc)}.")

