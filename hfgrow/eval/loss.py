"""Held-out loss of a causal LM: the sliding-window token-level loss / perplexity, and model loading.

Loss uses the sliding-window method of the Hugging Face perplexity guide: windows of ``seq_len``
tokens start every ``stride`` tokens; each window scores only the tokens not scored by an earlier
window, so every token is scored exactly once and, when ``stride < seq_len``, with at least
``seq_len − stride`` tokens of context carried over from the previous window. With
``stride == seq_len`` this is the plain chunked loss (each chunk independent; its first token has no
context and is not scored). A stream of n tokens scores n − 1 tokens when ``stride < seq_len``.

Text: a domain's documents are opened through :mod:`hfgrow.data.specs` (the files
:mod:`hfgrow.data.text` reads, or a folder of them) and become one token stream by the project's
one rule (:func:`hfgrow.data.tokenization.token_stream`: ``BOS doc1 EOS … BOS docN EOS``, BOS where the
tokenizer adds one), the stream the model is trained on; every token of it after the first is scored.

Benchmarks (lm-evaluation-harness) are in :mod:`hfgrow.eval.tasks`.

Example::

    result = evaluate_loss("out/grown", {"web": "web.jsonl", "code": "code.txt"}, seq_len=2048)
    print(result.loss, result.domains["code"].perplexity)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError

__all__ = [
    "DEFAULT_SEQ_LEN",
    "EvalResult",
    "window_plan",
    "sliding_window_nll",
    "pick_device",
    "load_model",
    "evaluate_loss",
]

#: Default window when the model's config does not say, and the cap on the default (paper: 2048).
DEFAULT_SEQ_LEN = 2048


@dataclass
class EvalResult:
    """Token-level loss of a model on some text.

    Attributes:
        loss: mean negative log-likelihood per scored token, in nats.
        perplexity: exp(loss).
        tokens: number of tokens scored.
        domains: per-domain results when several named inputs were given (empty otherwise); the
            top-level numbers are then the token-weighted aggregate over all domains.
        seq_len, stride: the window settings used.
    """

    loss: float
    perplexity: float
    tokens: int
    domains: dict[str, EvalResult] = field(default_factory=dict)
    seq_len: int | None = None
    stride: int | None = None

    @classmethod
    def from_sums(cls, nll_sum: float, tokens: int, **kwargs: Any) -> EvalResult:
        """Build from a summed NLL and a token count."""
        loss = nll_sum / tokens
        return cls(loss=loss, perplexity=_safe_exp(loss), tokens=tokens, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (domains nested)."""
        data: dict[str, Any] = {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens}
        if self.seq_len is not None:
            data["seq_len"] = self.seq_len
            data["stride"] = self.stride
        if self.domains:
            data["domains"] = {name: r.to_dict() for name, r in self.domains.items()}
        return data


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# --------------------------------------------------------------------------- windows


def window_plan(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding windows over a stream of ``n_tokens`` tokens.

    Returns ``(begin, end, first)`` triples: the window is ``ids[begin:end]`` and it scores the
    tokens at positions ``first … end−1`` (each predicted from the tokens before it in the window).
    Windows start every ``stride`` tokens and stop at the first one reaching the end of the stream.

    Raises:
        HfgrowError: ``seq_len < 2``, ``stride < 1`` or ``stride > seq_len`` (tokens would be skipped).

    Example:
        >>> window_plan(10, seq_len=6, stride=3)   # tokens 1..5, then 6..8, then 9
        [(0, 6, 1), (3, 9, 6), (6, 10, 9)]
    """
    if seq_len < 2:
        raise HfgrowError(f"--seq-len must be at least 2 (got {seq_len}).")
    if stride < 1 or stride > seq_len:
        raise HfgrowError(f"--stride must be between 1 and --seq-len ({seq_len}) (got {stride}).")
    windows = []
    prev_end = 0
    for begin in range(0, max(n_tokens - 1, 1), stride):
        end = min(begin + seq_len, n_tokens)
        first = max(prev_end, begin + 1)
        if end > first:
            windows.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def sliding_window_nll(
    model: Any,
    ids: Sequence[int] | Any,
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and number of scored tokens of one token stream.

    ``model`` is any causal LM returning ``.logits``; ``ids`` a list or 1-D tensor of token ids.
    Windows of equal length are batched ``batch_size`` at a time (the last, shorter window is padded
    on the right and masked, which cannot change the earlier positions of a causal model).
    Log-probabilities are computed in float32 whatever the model's dtype.

    Example:
        >>> nll, n = sliding_window_nll(model, token_stream(tok, docs), seq_len=2048, stride=1024)  # doctest: +SKIP
        >>> math.exp(nll / n)                                                                       # doctest: +SKIP
        14.2
    """
    import torch

    stride = seq_len if stride is None else stride
    if batch_size < 1:
        raise HfgrowError(f"--batch-size must be at least 1 (got {batch_size}).")
    ids_t = torch.as_tensor(ids, dtype=torch.long).flatten()
    windows = window_plan(len(ids_t), seq_len, stride)
    device = next(model.parameters()).device
    nll = 0.0
    count = 0
    batches = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
    iterator: Iterable = batches
    if progress:
        from hfgrow.console import progress as progress_bar

        iterator = progress_bar(batches, desc="eval", unit="batch")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in iterator:
                width = max(end - begin for begin, end, _ in batch)
                input_ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (begin, end, _) in enumerate(batch):
                    input_ids[row, : end - begin] = ids_t[begin:end]
                    mask[row, : end - begin] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                for row, (begin, end, first) in enumerate(batch):
                    # token at relative position r is predicted by the logits at r − 1
                    pred = logits[row, first - begin - 1 : end - begin - 1].float()
                    target = ids_t[first:end].to(pred.device)
                    logp = torch.log_softmax(pred, dim=-1).gather(1, target[:, None])
                    nll -= float(logp.sum())
                    count += end - first
    finally:
        model.train(was_training)
    return nll, count


# --------------------------------------------------------------------------- models


def pick_device(device: str | None = None) -> str:
    """The device to run on: ``device`` if given, else ``"cuda"`` when available, else ``"cpu"``.

    Example:
        >>> pick_device("cpu")
        'cpu'
    """
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | Path, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a folder or a Hub repo id.

    ``dtype`` defaults to float32 on CPU and the checkpoint's own dtype ("auto") elsewhere.

    Raises:
        HfgrowError: the model or its tokenizer cannot be loaded.

    Example:
        >>> model, tok = load_model("out/grown", device="cpu")              # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    dtype = dtype or ("float32" if device == "cpu" else "auto")
    if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise HfgrowError(f"unknown --dtype '{dtype}': use auto, float32, bfloat16 or float16.")
    text = str(path)
    local = Path(text).expanduser()
    if not local.exists() and (text.startswith((".", "~", "/")) or text.count("/") > 1 or "\\" in text):
        raise HfgrowError(f"the model folder '{text}' does not exist.")
    if local.is_file():
        raise HfgrowError(f"'{text}' is a file; give the model's folder (with config.json).")
    from hfgrow.io.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)  # a folder's links are checked first: transformers reads its files on its own
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        )
    except Exception as exc:  # noqa: BLE001
        raise HfgrowError(f"cannot load a causal LM from '{path}': {_first_line(exc)}.") from None
    return model.to(device), tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _default_seq_len(model: Any) -> int:
    """The model's context (:func:`hfgrow.arch.layout.context_length`), capped at :data:`DEFAULT_SEQ_LEN`."""
    from hfgrow.arch.layout import context_length

    config = getattr(model, "config", None)
    context = context_length(config) if config is not None else None
    return min(context, DEFAULT_SEQ_LEN) if context else DEFAULT_SEQ_LEN


def _file_texts(path: str | Path) -> list[str]:
    """The texts of a file or folder, opened like every other data spec (pieces of long plain text included)."""
    from hfgrow.data.specs import DomainSpec, open_domain

    return list(open_domain(DomainSpec("data", str(path))).texts())


def _documents_or_ids(value: Any) -> list[str] | list[int]:
    """Normalise one domain's input: a file/folder, a text, a list of those, or token ids."""
    from hfgrow.data.text import file_kind

    if isinstance(value, Path):
        return _file_texts(value)
    if isinstance(value, str):
        if Path(value).expanduser().exists():
            return _file_texts(value)
        if file_kind(value) and not any(c.isspace() for c in value):
            raise HfgrowError(f"the data file '{value}' does not exist.")
        return [value]
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # tensor / array of ids
        value = value.tolist()
    if isinstance(value, Sequence):
        items = list(value)
        if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return items
        docs: list[str] = []
        for item in items:
            sub = _documents_or_ids(item)
            if sub and isinstance(sub[0], int):
                raise HfgrowError("mixing token ids with texts or files in one domain is not supported.")
            docs.extend(sub)  # type: ignore[arg-type]
        return docs
    raise HfgrowError(f"cannot evaluate on a {type(value).__name__}: give files, texts or token ids.")


def evaluate_loss(
    model_or_path: Any,
    texts_or_files: Any,
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    *,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> EvalResult:
    """Token-level loss and perplexity of a causal LM with a sliding window (see module docstring).

    Args:
        model_or_path: a model folder / Hub repo id, or a loaded model (then pass ``tokenizer``
            unless the inputs are token ids).
        texts_or_files: one input or a mapping ``{domain name: input}``. An input is a file or folder
            path (see :mod:`hfgrow.data.text`), a text, a list of those (one domain), or a
            list/tensor of token ids (used as the stream as-is).
        seq_len: window length; default min(the model's context length, 2048).
        stride: tokens between window starts; default ``seq_len // 2``. ``stride == seq_len`` gives
            the plain chunked loss.
        batch_size: windows per forward pass.
        max_tokens: keep at most this many tokens of each domain's stream.

    Returns:
        The aggregate result; ``.domains`` holds per-domain results when a mapping with several
        entries was given.

    Raises:
        HfgrowError: unreadable inputs, a domain with fewer than 2 tokens, bad window settings.

    Example:
        >>> evaluate_loss("out/grown", {"web": "web.jsonl", "code": "code/"}).domains["code"].loss  # doctest: +SKIP
        2.31
    """
    if isinstance(model_or_path, (str, Path)):
        model, loaded_tokenizer = load_model(model_or_path, device=device, dtype=dtype)
        tokenizer = tokenizer or loaded_tokenizer
    else:
        model = model_or_path
    seq_len = seq_len or _default_seq_len(model)
    stride = stride or max(seq_len // 2, 1)
    window_plan(0, seq_len, stride)  # validate settings before reading anything

    if isinstance(texts_or_files, Mapping):
        inputs = dict(texts_or_files)
        if not inputs:
            raise HfgrowError("no data to evaluate on.")
    else:
        inputs = {"data": texts_or_files}

    streams: dict[str, list[int]] = {}
    for name, value in inputs.items():
        content = _documents_or_ids(value)
        if content and isinstance(content[0], int):
            stream = list(content)  # type: ignore[arg-type]
        else:
            if tokenizer is None:
                raise HfgrowError("a tokenizer is needed to evaluate texts with an in-memory model.")
            from hfgrow.data.tokenization import token_stream

            stream = token_stream(tokenizer, content)  # type: ignore[arg-type]
        if max_tokens is not None:
            stream = stream[:max_tokens]
        if len(stream) < 2:
            raise HfgrowError(f"domain '{name}' has fewer than 2 tokens; nothing to score.")
        streams[name] = stream

    results: dict[str, EvalResult] = {}
    total_nll, total_tokens = 0.0, 0
    for name, stream in streams.items():
        nll, count = sliding_window_nll(model, stream, seq_len, stride, batch_size, progress=progress)
        results[name] = EvalResult.from_sums(nll, count, seq_len=seq_len, stride=stride)
        total_nll += nll
        total_tokens += count
    overall = EvalResult.from_sums(total_nll, total_tokens, seq_len=seq_len, stride=stride)
    if len(results) > 1:
        overall.domains = results
    return overall
