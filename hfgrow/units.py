"""Numbers people type and read: counts (``2T``, ``500M``, ``1e9``, ``250k``), byte sizes (``5GB``, ``2GiB``).

One vocabulary for the whole tool: every option that takes a parameter or token count goes through
:func:`parse_count`, every option that takes a size in bytes through :func:`parse_bytes`, and every
count shown to a person through :func:`format_count`. The two parsers differ on purpose and say so in
their errors: ``5B`` is five billion as a count but five *bytes* as a size, which is why a size needs
an explicit unit (``5GB``) unless it is a bare integer.

Example:
    >>> parse_count("2T"), parse_count("250k"), parse_count("1e7"), parse_count("1_000")
    (2000000000000, 250000, 10000000, 1000)
    >>> parse_bytes("5GB"), parse_bytes("2GiB"), parse_bytes(4096)
    (5000000000, 2147483648, 4096)
    >>> format_count(1_100_048_384), format_count(11.113e9, 2), format_bytes(2.13e9)
    ('1.1B', '11.11B', '2.13 GB')
"""

from __future__ import annotations

import math
import re

from hfgrow.errors import HfgrowError

_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)


def parse_count(value: str | int | float, what: str = "count", example: str = "2T", *,
                minimum: int | None = None) -> int:
    """A count such as ``"7B"``, ``"1.1b"``, ``"410M"``, ``"250k"``, ``"2T"``, ``"70e9"`` or ``1000``.

    Suffixes (any case): K = 1e3, M = 1e6, B = 1e9, T = 1e12; underscores and commas are digit
    separators. NaN and infinity are refused, and so is anything below ``minimum`` when one is given.

    Raises:
        HfgrowError: ``'x' is not a valid <what>; write a number with K/M/B/T, e.g. 2T.``

    Example:
        >>> parse_count("1.1B", "model size"), parse_count(3.0)
        (1100000000, 3)
    """
    def bad(reason: str = "write a number with K/M/B/T") -> HfgrowError:
        return HfgrowError(f"'{value}' is not a valid {what}; {reason}, e.g. {example}.")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _COUNT.match(str(value).replace("_", "").replace(",", ""))
        if not match:
            raise bad()
        number = float(match.group(1)) * _COUNT_SUFFIX[match.group(2).lower()]
    if not math.isfinite(number):
        raise bad("it must be finite")
    count = int(round(number))
    if minimum is not None and count < minimum:
        raise bad(f"it must be at least {minimum}")
    return count


def parse_bytes(value: str | int, what: str = "size") -> int:
    """A positive size in bytes: ``"5GB"`` (10^9, as transformers counts), ``"500MiB"`` (2^20) or an int.

    Raises:
        HfgrowError: not a size, or not positive.

    Example:
        >>> parse_bytes("500MB"), parse_bytes("1.5KiB")
        (500000000, 1536)
    """
    if isinstance(value, bool):
        raise HfgrowError(f"'{value}' is not a valid {what}; write e.g. 5GB, 500MB or 2GiB.")
    if isinstance(value, int):
        size = value
    else:
        match = _BYTES.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _BYTE_UNITS:
            raise HfgrowError(f"'{value}' is not a valid {what}; write e.g. 5GB, 500MB or 2GiB.")
        size = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if size <= 0:
        raise HfgrowError(f"the {what} must be positive, got {value}.")
    return size


def format_count(n: float, decimals: int | None = None) -> str:
    """A count with a K/M/B/T suffix: ``1.1B``, ``6.58B``, ``2T``, ``410M``.

    With ``decimals=None`` three significant digits are kept and trailing zeros dropped; with an
    explicit ``decimals`` at most that many decimals are shown.

    Example:
        >>> format_count(2e12, 2), format_count(410e6), format_count(999), format_count(-1500)
        ('2T', '410M', '999', '-1.5K')
    """
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            break
    else:
        suffix, value = "", n
    if decimals is None:
        text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
        if "e" in text:  # e.g. 99.96 rounds to 1e+02
            text = f"{value:.0f}"
    else:
        text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{text}{suffix}"


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1, thousands separated: ``1 step``, ``1,000 steps``.

    Example:
        >>> counted(1, "step"), counted(2000, "step")
        ('1 step', '2,000 steps')
    """
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def format_flops(x: float) -> str:
    """A FLOP count in compact scientific notation: ``3.2e21``.

    Example:
        >>> format_flops(3.2e21), format_flops(0), format_flops(12.5)
        ('3.2e21', '0', '12.5')
    """
    if x == 0:
        return "0"
    text = f"{x:.3g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def format_bytes(n: float) -> str:
    """Bytes in decimal units, as summaries and progress bars show them: ``2.13 GB``, ``640 MB``.

    Example:
        >>> format_bytes(2_130_000_000), format_bytes(640e6), format_bytes(512)
        ('2.13 GB', '640 MB', '512 B')
    """
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


#: Attention's score and value matmuls per token, in units of layers x attention width x sequence length (forward
#: and backward, 6 per multiply-add pair): all T x T positions ("full", PaLM's 12·L·H·T), the half a causal mask
#: leaves ("causal", 6·L·H·T: what flash-attention kernels compute), or not counted ("none").
ATTENTION_FLOPS = {"full": 12, "causal": 6, "none": 0}


def matmul_params(total: int, input_embedding: int, tied: bool) -> int:
    """The parameters a token meets in a matmul, N of the FLOPs count: every parameter but the input embedding (a
    table lookup), with the LM head counted even when it shares the embedding's weights (``tied``).

    Example:
        >>> matmul_params(1_100_048_384, 65_536_000, tied=False)   # TinyLlama-1.1B: non-embedding + LM head
        1034512384
    """
    return total - input_embedding + (input_embedding if tied else 0)


def training_flops_per_token(n_matmul: int, layers: int, attention_width: int, seq_len: int,
                             attention: str = "causal") -> float:
    """Training FLOPs per token by the PaLM convention (Chowdhery et al. 2022, appendix B): 6·N for the weights'
    matmuls (forward and backward) plus attention's ``ATTENTION_FLOPS[attention]``·L·H·T, with N from
    :func:`matmul_params`, H the attention width (heads x head size) and T the sequence length.

    Example:
        >>> round(training_flops_per_token(1_034_512_384, 22, 2048, 2048) / 1e9, 3)   # TinyLlama, seq 2048
        6.761
    """
    if attention not in ATTENTION_FLOPS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_FLOPS)} (got {attention!r})")
    return 6.0 * n_matmul + ATTENTION_FLOPS[attention] * layers * attention_width * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the FLOPs the model needs per second over the hardware's peak.

    Example:
        >>> round(mfu(58_672.9, training_flops_per_token(1_034_512_384, 22, 2048, 2048), 989e12), 3)
        0.401
    """
    return tokens_per_s * flops_per_token / peak_flops
