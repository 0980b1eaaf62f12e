"""hfgrow: grow Hugging Face causal language models, keep pre-training them, publish them.

The package is laid out along the pipeline::

    io/       resolve SRC (folder, Hub, adapter), read checkpoints, the write plan, the executor, Hub push
    arch/     what a model is: block layout and tensor roles, derived from checkpoint + config
    growth/   operators (ops/), the growth pipeline, recipe, card, LiGO (ligo/), growth timing
    data/     text files, data specs, mixtures, packing
    train/    (continued) pre-training on accelerate, MSG masks, checkpoints, export
    mix/      BiMix entropy mixtures and the mixing law
    eval/     held-out loss, lm-eval hand-off, grow-vs-scratch comparison
    cli/      the `hfgrow` command

``import hfgrow`` is cheap: the functions below are imported (with torch) on first use.

Example:
    >>> import hfgrow
    >>> hfgrow.inspect("./small")["num_layers"]
    6
    >>> hfgrow.stack("./small", "./big", factor=4).out
    PosixPath('/abs/big')
    >>> hfgrow.grow("./small", "./wide", hidden_size=4096).recipe.function_preserving
    True
    >>> hfgrow.verify("./small", "./wide").preserved
    True
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hfgrow.errors import HfgrowError

_LAZY = {
    "stack": "hfgrow.growth.pipeline",
    "grow": "hfgrow.growth.pipeline",
    "upcycle": "hfgrow.growth.pipeline",
    "replay": "hfgrow.growth.replay",
    "GrowResult": "hfgrow.growth.pipeline",
    "inspect": "hfgrow.growth.describe",
    "verify": "hfgrow.growth.verify",
    "VerifyResult": "hfgrow.growth.verify",
}

__all__ = ["HfgrowError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hfgrow' has no attribute {name!r}")
