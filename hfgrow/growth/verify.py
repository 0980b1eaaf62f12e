"""Check a grown model against its source: max |Δlogit|, KL(src‖out) and each model's loss.

Both models run (float32, CPU by default) on the same token ids: a sample text tokenized
with SRC's tokenizer (OUT's when SRC has none; raw bytes modulo the vocabulary when
neither has one). A function-preserving operator should give max |Δlogit| at float
rounding level and a KL divergence of about zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hfgrow.errors import HfgrowError
from hfgrow.arch.layout import context_length, quiet_transformers, text_config

SAMPLE_TEXT = """\
The quick brown fox jumps over the lazy dog. A language model assigns a probability to every
next token given the tokens before it; growing a model should not change those probabilities
when the operator is function-preserving. def add(a, b):\n    return a + b\n
In 1905, Einstein published four papers. 3.14159 is close to pi, and e is about 2.71828.
"""


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`."""

    max_abs_diff: float  # max |logit_out - logit_src| over positions and vocabulary
    kl: float  # mean over positions of KL(p_src || p_out), nats
    src_loss: float
    out_loss: float
    tokens: int
    tol: float
    logit_scale: float  # max |logit_src|, the scale the tolerance is relative to
    load_issues: list[str] = field(default_factory=list)  # missing/unexpected keys when loading OUT

    @property
    def preserved(self) -> bool:
        """max |Δlogit| <= tol · max(1, max |logit_src|) and OUT loaded without missing/unexpected keys."""
        return self.max_abs_diff <= self.tol * max(1.0, self.logit_scale) and not self.load_issues

    def report(self) -> str:
        lines = [
            f"tokens        {self.tokens}",
            f"max |dlogit|  {self.max_abs_diff:.3e}  (logit scale {self.logit_scale:.3g}, "
            f"tolerance {self.tol * max(1.0, self.logit_scale):.3e})",
            f"KL(src||out)  {self.kl:.3e} nats/token",
            f"loss src      {self.src_loss:.6f}",
            f"loss out      {self.out_loss:.6f}",
        ]
        lines += [f"load issue    {issue}" for issue in self.load_issues]
        lines.append(f"verdict       {'function-preserving' if self.preserved else 'NOT function-preserving'}")
        return "\n".join(lines)


def _token_ids(text: str, folders: list[Path], vocab_size: int, max_tokens: int):
    import torch

    from hfgrow.data.tokenization import token_stream

    for folder in folders:
        from hfgrow.io.tokenizer import load_tokenizer

        try:
            tokenizer = load_tokenizer(folder)
        except HfgrowError:  # no/unknown tokenizer in this folder: try the next
            continue
        ids = torch.tensor([token_stream(tokenizer, [text], max_tokens=max_tokens)])  # as training reads it
        if ids.numel() >= 2 and int(ids.max()) < vocab_size:
            return ids
    data = list(text.encode())[:max_tokens]
    return torch.tensor([[b % vocab_size for b in data]])


def verify(src: str, out: str, *, text: str | None = None, tol: float = 1e-4, max_tokens: int = 256,
           device: str = "cpu", revision: str | None = None, token=None) -> VerifyResult:
    """Run SRC and OUT on the same text and compare their next-token distributions.

    Example:
        >>> result = verify("./small", "./small-zero-g2")
        >>> result.preserved, f"{result.max_abs_diff:.1e}"
        (True, '3.8e-06')
    """
    import torch
    from transformers import AutoModelForCausalLM

    from hfgrow.io.source import open_source

    if tol <= 0:
        raise HfgrowError(f"--tol must be positive, got {tol}.")
    text = SAMPLE_TEXT if text is None else text
    if not text.strip():
        raise HfgrowError("the verification text is empty.")
    with open_source(src, revision=revision, token=token, progress=False) as source, \
            open_source(out, token=token, progress=False) as grown:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        with quiet_transformers():
            try:
                model_src = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32).to(device).eval()
                model_out, info = AutoModelForCausalLM.from_pretrained(
                    grown.path, dtype=torch.float32, output_loading_info=True)
            except (OSError, ValueError, RuntimeError) as exc:
                raise HfgrowError(f"cannot load the models: {str(exc).splitlines()[0][:200]}") from None
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        model_out = model_out.to(device).eval()
        issues = [f"missing {k}" for k in info.get("missing_keys", [])]
        issues += [f"unexpected {k}" for k in info.get("unexpected_keys", [])]
        issues += [f"mismatched {k[0] if isinstance(k, tuple) else k}" for k in info.get("mismatched_keys", [])]
        vocab = min(text_config(model_src.config).vocab_size, text_config(model_out.config).vocab_size)
        positions = context_length(model_src.config) or max_tokens
        ids = _token_ids(text, [source.path, grown.path], vocab, min(max_tokens, positions)).to(device)
        with torch.no_grad():
            a = model_src(ids, labels=ids)
            b = model_out(ids, labels=ids)
    la = a.logits[0, :, :vocab].double()
    lb = b.logits[0, :, :vocab].double()
    pa, pb = la.log_softmax(-1), lb.log_softmax(-1)
    kl = (pa.exp() * (pa - pb)).sum(-1).mean().item()
    return VerifyResult(
        max_abs_diff=(la - lb).abs().max().item(),
        kl=max(kl, 0.0),
        src_loss=a.loss.item(),
        out_loss=b.loss.item(),
        tokens=ids.shape[1],
        tol=tol,
        logit_scale=la.abs().max().item(),
        load_issues=issues,
    )
