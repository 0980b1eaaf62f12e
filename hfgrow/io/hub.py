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
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from hfgrow.console import quiet
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
    context = _Context("download", repo_id, revision, token)
    return _call_hub(lambda: _download(repo_id, revision, token, progress), context)


def _download(repo_id: str, revision: str | None, token: str | bool | None, progress: bool) -> tuple[Path, str]:
    """One attempt of :func:`download_source` (raises huggingface_hub's exceptions as they come)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    unreachable: Exception | None = None
    listing = None
    if not constants.is_offline_mode():
        try:  # one request: the commit sha the revision points to, and the file list
            listing = _remote_listing(repo_id, revision, token, storage)
        except Exception as exc:  # noqa: BLE001 - sorted below: only "the Hub cannot be reached" falls back
            if not _unreachable(exc):
                raise
            unreachable = exc
    from_cache = listing is None
    if listing is None:  # offline, or the Hub is unreachable: use what an earlier run cached
        listing = _cached_listing(storage, revision)
        if listing is None:
            if unreachable is not None:
                raise unreachable
            raise RepoMissing(_not_cached_message(repo_id, revision), _not_cached_reason(repo_id, revision))
    sha, files, read_json = listing
    try:
        wanted = _select_files(repo_id, files, read_json)
    except HfgrowError:
        if not from_cache:
            raise
        if unreachable is not None:  # a partial cache (e.g. config only) and no Hub to complete it
            raise unreachable from None
        raise RepoMissing(_not_cached_message(repo_id, revision), _not_cached_reason(repo_id, revision)) from None
    folder = snapshot_download(
        repo_id,
        revision=sha,  # a commit sha: files already in the cache are served without any request
        allow_patterns=wanted,
        token=token,
        tqdm_class=None if progress and not quiet() else _quiet_tqdm(),  # huggingface_hub's own bars, or none
    )
    return Path(folder), sha


_Listing = tuple[str, set[str], Callable[[str], Any]]  # commit sha, repo files, read_json(repo file)


def _remote_listing(repo_id: str, revision: str | None, token: str | bool | None, storage: Path) -> _Listing:
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi(token=token).model_info(repo_id, revision=revision, token=token)
    sha = str(info.sha)
    _cache_ref(storage, revision, sha)

    def read_json(name: str) -> Any:
        return _parse_json(Path(hf_hub_download(repo_id, name, revision=sha, token=token)), repo_id, name)

    return sha, {sibling.rfilename for sibling in info.siblings or []}, read_json


def _cached_listing(storage: Path, revision: str | None) -> _Listing | None:
    cached = _cached_commit(storage, revision)
    snapshot = storage / "snapshots" / (cached or "-")
    if cached is None or not snapshot.is_dir():
        return None
    files = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    return cached, files, lambda name: _parse_json(snapshot / name, storage.name, name)


def _parse_json(path: Path, repo: str, name: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise HfgrowError(f"{name} of Hub repo '{repo}' is not valid JSON ({_first_line(exc).rstrip('.')}).") from None


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
    from huggingface_hub.utils import filter_repo_objects

    from hfgrow.io.folder import ModelFolder

    folder = Path(folder)
    if not folder.is_dir():
        raise HfgrowError(f"cannot push '{folder}': it is not a folder.")
    if not looks_like_repo_id(repo_id):
        raise HfgrowError(f"'{repo_id}' is not a Hub model id: expected the form org/name.")
    if create_pr and revision not in (None, "main"):
        raise HfgrowError(
            "--create-pr always opens the pull request against main: drop --revision, or push to the branch"
            " without --create-pr."
        )
    ModelFolder(folder).check_links()  # a link that leaves the folder would publish a file from elsewhere
    relpaths = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    if not list(filter_repo_objects(relpaths, ignore_patterns=[*PUSH_IGNORE_PATTERNS, ".git", ".git/*", "*/.git/*"])):
        raise HfgrowError(f"nothing to push: '{folder}' holds no files besides temporary or partial ones.")
    if not _has_token(token):
        raise HfgrowError(f"pushing to the Hub needs a token with write access: {_LOGIN}.")
    context = _Context("push to", repo_id, revision, token)
    message = commit_message or f"Upload {folder.resolve().name} with hfgrow"
    return _call_hub(lambda: _push(folder, repo_id, private, revision, create_pr, message, token), context)


def _push(folder: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool, message: str,
          token: str | None) -> str:
    """One attempt of :func:`push_folder`; upload_folder skips what an earlier attempt committed."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
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
        commit_message=message,
        revision=revision,
        create_pr=create_pr,
        ignore_patterns=list(PUSH_IGNORE_PATTERNS),
        token=token,
    )
    return str(info.pr_url or info.commit_url)


# --------------------------------------------------------------------------------------------------- internals


def _select_files(repo_id: str, files: set[str], read_json: Callable[[str], Any]) -> list[str]:
    """Exact repo paths to fetch: metadata files + one weights format (+ adapter files)."""
    chosen = {f for f in files if any(fnmatchcase(f, p) for p in METADATA_PATTERNS)}
    weights: list[str] = []
    for index, single in _WEIGHT_LAYOUTS:
        if index in files:
            data = read_json(index)
            weight_map = data.get("weight_map") if isinstance(data, dict) else None
            names = list(weight_map.values()) if isinstance(weight_map, dict) else []
            if not all(isinstance(name, str) for name in names):
                names = []
            shards = sorted(set(names))
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
    errors.extend(module.TransportError for module in _http_modules())
    return tuple(errors)


def _http_modules() -> list[Any]:
    """httpx2 (huggingface_hub 2.x) and/or httpx (1.x), whichever is installed."""
    import importlib

    modules = []
    for name in ("httpx2", "httpx"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    return modules


def _has_token(token: str | bool | None) -> bool:
    if token is False:
        return False
    if isinstance(token, str):
        return bool(token.strip())
    from huggingface_hub import get_token

    return get_token() is not None


class RepoMissing(HfgrowError):
    """The Hub repo does not exist for this client: not in the cache while offline, or not found online.

    ``reason`` is the same fact as a clause, for a caller that also looked for a local folder of that name.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _not_cached_message(repo_id: str, revision: str | None) -> str:
    at = f" at revision '{revision}'" if revision else ""
    return (
        f"Hub repo '{repo_id}'{at} is not (fully) in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set: run once"
        " with network access (unset HF_HUB_OFFLINE) to download it."
    )


def _not_cached_reason(repo_id: str, revision: str | None) -> str:
    at = f" at revision '{revision}'" if revision else ""
    return (f"Hub repo '{repo_id}'{at} is not (fully) in the local Hugging Face cache (HF_HUB_OFFLINE=1 is set, so "
            "the Hub was not asked)")


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


# --------------------------------------------------------------------------------------------------- network


#: Seconds to wait before the 2nd, 3rd, ... attempt when the Hub cannot be reached (timeouts, dropped connections).
RETRY_DELAYS: tuple[float, ...] = (2.0, 8.0)


def _seconds(variable: str, default: float) -> float:
    """A timeout from the environment (read at call time, so a changed variable counts), else ``default``."""
    import os

    try:
        value = float(os.environ.get(variable, ""))
    except ValueError:
        return float(default)
    return value if value > 0 else float(default)


def _client_with_timeouts() -> Any:
    """huggingface_hub's default HTTP client with connect/read timeouts: its API calls have none by default, so a
    server that accepts connections and never answers would hang them forever."""
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    connect = _seconds("HF_HUB_ETAG_TIMEOUT", constants.HF_HUB_ETAG_TIMEOUT)
    read = _seconds("HF_HUB_DOWNLOAD_TIMEOUT", constants.HF_HUB_DOWNLOAD_TIMEOUT)
    defaults = {"connect": connect, "read": read, "write": read, "pool": connect}

    def fill_timeouts(request: Any) -> None:
        # huggingface_hub passes timeout=None on API calls, which overrides a client default: fill the gaps per
        # request instead (an explicit timeout, e.g. a download's, is kept)
        timeout = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {key: timeout.get(key) or value for key, value in defaults.items()}

    hooks = dict(client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), fill_timeouts]
    client.event_hooks = hooks
    return client


def _use_timeouts() -> None:
    """Make huggingface_hub build its shared client with :func:`_client_with_timeouts` (once per process)."""
    from huggingface_hub.utils import _http

    if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is _client_with_timeouts:
        return
    _http.set_client_factory(_client_with_timeouts)


def _retryable(exc: BaseException) -> bool:
    """A timeout or a dropped connection anywhere in the chain (HTTP errors are answers, not retried here)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    transport = tuple(module.TransportError for module in _http_modules())
    return any(isinstance(e, transport) and not isinstance(e, OfflineModeIsEnabled) for e in _exception_chain(exc))


def _unreachable(exc: BaseException) -> bool:
    """The Hub cannot be reached or is failing (transport error, HTTP 5xx): a download may use the cache instead."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, _transport_errors()):
        return True
    return isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code >= 500


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _call_hub(attempt: Callable[[], Any], context: "_Context") -> Any:
    """Run ``attempt`` with HTTP timeouts, retried with back-off while the Hub cannot be reached; every failure
    ends as one HfgrowError sentence."""
    _use_timeouts()
    for delay in (*RETRY_DELAYS, None):
        try:
            return attempt()
        except HfgrowError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into one sentence below
            if delay is not None and _retryable(exc):
                _sleep(delay)
                continue
            raise _hub_error(exc, context) from exc
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class _Context:
    """What was being done when a Hub call failed: ``action`` reads "download" or "push to"."""

    action: str
    repo_id: str
    revision: str | None = None
    token: str | bool | None = None

    @property
    def pushing(self) -> bool:
        return self.action.startswith("push")

    @property
    def at(self) -> str:
        return f" at revision '{self.revision}'" if self.revision else ""

    @property
    def resume(self) -> str:
        if self.pushing:
            return ("; re-run the same command to resume (the local folder is untouched and finished files are not "
                    "sent again)")
        return "; re-run to resume (files already downloaded stay in the cache)"


def _gated(e: BaseException, c: _Context) -> str:
    from huggingface_hub import constants

    return (f"Hub repo '{c.repo_id}' is gated: request access at {constants.ENDPOINT}/{c.repo_id}, then {_LOGIN}"
            " with a token of the account that was granted access.")


def _no_revision(e: BaseException, c: _Context) -> str:
    return (f"revision '{c.revision or 'main'}' does not exist in Hub repo '{c.repo_id}': use an existing branch,"
            " tag or commit sha.")


def _no_repo(e: BaseException, c: _Context) -> str:
    if _has_token(c.token):
        return (f"Hub repo '{c.repo_id}' was not found or your token cannot access it: check the name, and that the"
                " token belongs to an account that can see the repo.")
    return (f"Hub repo '{c.repo_id}' was not found, or it is private and no token was sent: check the name, or"
            f" {_LOGIN} if it is private.")


def _file_vanished(e: BaseException, c: _Context) -> str:
    return (f"a file disappeared from Hub repo '{c.repo_id}'{c.at} while downloading it: re-run, or pin --revision"
            " to a commit sha.")


def _incomplete(e: BaseException, c: _Context) -> str:
    return (f"the cached copy of Hub repo '{c.repo_id}'{c.at} is incomplete and the Hub cannot be reached: re-run"
            " with network access (HF_HUB_OFFLINE unset) to finish the download.")


def _card_rejected(e: BaseException, c: _Context) -> str:
    detail = " ".join(ln.strip("- ").strip() for ln in str(e).splitlines()[1:] if ln.strip())
    return (f"the Hub rejected the YAML metadata of README.md{': ' + detail if detail else ''}; fix the card"
            " header and push again.")


def _offline(e: BaseException, c: _Context) -> str:
    if c.pushing:
        return "cannot push while HF_HUB_OFFLINE=1 is set: unset HF_HUB_OFFLINE and run again."
    return _not_cached_message(c.repo_id, c.revision)


def _network(e: BaseException, c: _Context) -> str:
    from huggingface_hub import constants

    attempts = len(RETRY_DELAYS) + 1
    return (f"network problem while trying to {c.action} '{c.repo_id}' ({type(e).__name__}, {attempts} attempts):"
            f" check your connection and HF_ENDPOINT ({constants.ENDPOINT}){c.resume}.")


def _http_401(e: Any, c: _Context) -> str:
    if not _has_token(c.token):
        return f"the Hub requires a token to {c.action} '{c.repo_id}': {_LOGIN}."
    return f"the Hub rejected your token (HTTP 401) while trying to {c.action} '{c.repo_id}': {_LOGIN} with a valid token."


def _http_403(e: Any, c: _Context) -> str:
    need = "write" if c.pushing else "read"
    return (f"your token may not {c.action} '{c.repo_id}' (HTTP 403): use a token with {need} access to the"
            f" '{c.repo_id.split('/')[0]}' namespace ({_LOGIN}).")


def _http_429(e: Any, c: _Context) -> str:
    return (f"the Hub rate-limited this client (HTTP 429) while trying to {c.action} '{c.repo_id}': wait a few"
            " minutes and re-run.")


def _http_5xx(e: Any, c: _Context) -> str:
    return (f"the Hub had a server error (HTTP {e.response.status_code}) while trying to {c.action} '{c.repo_id}':"
            f" try again later{c.resume}.")


def _http_other(e: Any, c: _Context) -> str:
    detail = (e.server_message or _first_line(e)).splitlines()[0].rstrip(".")
    return f"the Hub refused to {c.action} '{c.repo_id}' (HTTP {e.response.status_code}: {detail})."


_Sentence = Callable[[Any, _Context], str]

#: huggingface_hub error classes -> sentence, most specific first (GatedRepoError is a RepositoryNotFoundError).
#: Looked up by name: some classes only exist in recent releases.
_BY_CLASS: tuple[tuple[str, _Sentence], ...] = (
    ("GatedRepoError", _gated),
    ("RevisionNotFoundError", _no_revision),
    ("RepositoryNotFoundError", _no_repo),
    ("RemoteEntryNotFoundError", _file_vanished),
    ("IncompleteSnapshotError", _incomplete),
)
#: HTTP status -> sentence, for any other HfHubHTTPError with a response.
_BY_STATUS: dict[int, _Sentence] = {401: _http_401, 403: _http_403, 429: _http_429}
#: Without a response, these mean "no answer from the Hub" (besides the HTTP stack's transport errors).
_NETWORK_CLASSES = ("LocalEntryNotFoundError", "RevisionResolutionError")
_OFFLINE_CLASSES = ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "RevisionResolutionError")


def _is_instance(e: BaseException, names: tuple[str, ...]) -> bool:
    from huggingface_hub import errors as hf

    return any(isinstance(e, cls) for cls in (getattr(hf, name, None) for name in names) if cls is not None)


def _sentence(e: BaseException, c: _Context) -> str | None:
    """The sentence for one exception of the chain, or None when it says nothing we can explain."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    for name, sentence in _BY_CLASS:
        if _is_instance(e, (name,)):
            return sentence(e, c)
    if isinstance(e, ValueError) and "metadata in README.md" in str(e):
        return _card_rejected(e, c)
    if _is_instance(e, _OFFLINE_CLASSES) and constants.is_offline_mode():
        return _offline(e, c)
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        return (_http_5xx if status >= 500 else _BY_STATUS.get(status, _http_other))(e, c)
    if isinstance(e, _transport_errors()) or _is_instance(e, _NETWORK_CLASSES) or (
            isinstance(e, OSError) and "Consistency check failed" in str(e)):
        return _network(e, c)
    return None


def _hub_error(exc: BaseException, context: _Context) -> HfgrowError:
    """One actionable HfgrowError sentence for a huggingface_hub / HTTP-stack exception.

    The whole exception chain is read, outermost first (the error raised last describes the failure best), so a
    wrapped cause (an LFS upload failure inside a RuntimeError) is still recognised.
    """
    for item in _exception_chain(exc):
        message = _sentence(item, context)
        if message is None:
            continue
        if not context.pushing and _is_instance(item, ("RepositoryNotFoundError",)) and not _is_instance(
                item, ("GatedRepoError", "RevisionNotFoundError")):
            return RepoMissing(message, f"the Hub has no repo '{context.repo_id}' that this client may see")
        return HfgrowError(message)
    return HfgrowError(f"could not {context.action} Hub repo '{context.repo_id}'{context.at}: "
                       f"{type(exc).__name__}: {_first_line(exc).rstrip('.')}.")
