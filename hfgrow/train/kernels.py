"""Training speed on a GPU: fused kernels (Liger-Kernel), float8 matmuls (torchao) and torch.compile, in one place.

:func:`resolve` turns ``--kernels``, ``--float8``, ``--compile`` and ``--compile-backend`` into a :class:`Speed`
(refusing, in one sentence, what this machine cannot do); :func:`prepare_model` applies it to a freshly loaded
model. The training loop calls :func:`prepare_model` for every model it trains: the one it starts with and each
model a growth builds (``hfgrow.train.loop.load_model``), so a grown model gets the kernels re-applied and is
compiled again for its own shapes.

* ``--kernels liger``: Liger-Kernel's Triton kernels (RMSNorm, RoPE, SwiGLU and the fused linear cross-entropy,
  which never materialises the float32 logits of the whole vocabulary) patched into the model instance through
  ``liger_kernel.transformers._apply_liger_kernel_to_instance``, the entry point the Hugging Face Trainer's
  ``use_liger_kernel=True`` uses. Needs CUDA, triton and ``pip install 'hfgrow[gpu]'``. ``auto`` (the default)
  picks liger when those are present and Liger knows the model type, else none.
* ``--float8``: torchao's float8 training (``convert_to_float8_training``, dynamic tensorwise scaling) on every
  linear layer but the LM head and layers whose sizes are not multiples of 16; needs a GPU of compute capability
  8.9 or newer (H100-class) and torchao. Meant with ``--compile``, which fuses its casts.
* ``--compile``: ``torch.compile`` of the whole model, last, so it traces the patched kernels.

Example:
    >>> speed = resolve(TrainConfig(model="m", data=["d.txt"], output_dir="run", max_steps=1, kernels="none"))
    >>> speed.describe()
    'kernels none (asked), no float8, eager'
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hfgrow.console import log
from hfgrow.errors import HfgrowError

if TYPE_CHECKING:
    from hfgrow.train.config import TrainConfig

KERNEL_CHOICES = ("auto", "liger", "none")


@dataclass(frozen=True)
class Speed:
    """What :func:`prepare_model` does to a model: ``kernels`` liger or none (``why``: how it was chosen),
    ``float8`` on or off, ``compile`` (and its backend, None: torch's default, inductor)."""

    kernels: str
    why: str
    float8: bool = False
    compile: bool = False
    compile_backend: str | None = None

    def describe(self) -> str:
        """One line: ``kernels liger (auto: CUDA and liger-kernel present), float8, compiled``."""
        compiled = ("compiled" + (f" ({self.compile_backend})" if self.compile_backend else "")) if self.compile \
            else "eager"
        return f"kernels {self.kernels} ({self.why}), {'float8' if self.float8 else 'no float8'}, {compiled}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve(cfg: TrainConfig) -> Speed:
    """The speed settings of a run from its config.

    Raises:
        HfgrowError: ``--kernels liger`` without CUDA or without liger-kernel/triton installed; ``--float8``
            without a CUDA GPU of compute capability >= 8.9 or without torchao.
    """
    asked = cfg.kernels
    if asked not in KERNEL_CHOICES:
        raise HfgrowError(f"--kernels {asked!r} is not one of {', '.join(KERNEL_CHOICES)}.")
    cuda = _cuda()
    have_liger = _have("liger_kernel") and _have("triton")
    if asked == "liger":
        if not cuda:
            raise HfgrowError("--kernels liger needs a CUDA GPU (Liger's kernels are written in Triton) and none is "
                              "visible; use --kernels none.")
        if not have_liger:
            raise HfgrowError("--kernels liger needs liger-kernel and triton: pip install 'hfgrow[gpu]' (or use "
                              "--kernels none).")
        kernels, why = "liger", "asked"
    elif asked == "none":
        kernels, why = "none", "asked"
    elif cuda and have_liger:
        kernels, why = "liger", "auto: CUDA and liger-kernel present"
    else:
        kernels, why = "none", "auto: " + ("no CUDA GPU" if not cuda else "liger-kernel not installed")
    float8 = cfg.float8
    if float8:
        if not cuda:
            raise HfgrowError("--float8 needs a CUDA GPU of compute capability 8.9 or newer (H100-class) and none is "
                              "visible.")
        import torch

        capability = torch.cuda.get_device_capability()
        if capability < (8, 9):
            raise HfgrowError(f"--float8 needs a GPU of compute capability 8.9 or newer (H100-class); this one is "
                              f"{capability[0]}.{capability[1]}.")
        if not _have("torchao"):
            raise HfgrowError("--float8 needs torchao: pip install 'hfgrow[gpu]' torchao.")
    return Speed(kernels, why, float8, cfg.compile, cfg.compile_backend or None)


def _liger_supports(model) -> bool:
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    return getattr(model.config, "model_type", None) in MODEL_TYPE_TO_APPLY_LIGER_FN


def _float8_filter(module, fqn: str) -> bool:
    """torchao converts a linear layer when this is True: not the LM head (its output feeds the loss in full
    precision), and only sizes float8 matmuls take (multiples of 16)."""
    import torch

    if not isinstance(module, torch.nn.Linear) or fqn.split(".")[-1] == "lm_head":
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def prepare_model(model, speed: Speed):
    """``model`` made fast as ``speed`` says: Liger kernels patched into the instance, float8 linear layers, then
    ``torch.compile``. Returns the model to train (the compiled wrapper when compiling). Called for the first model
    of a run and again for every grown one (see the module docstring)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a LoRA (peft) wrapper
    if speed.kernels == "liger":
        if _liger_supports(base):
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(model=base)
        else:
            log.warning(f"Liger-Kernel has no kernels for model type {base.config.model_type!r}; training it "
                        "without fused kernels.")
    if speed.float8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(base, module_filter_fn=_float8_filter)
    if speed.compile:
        import torch

        model = torch.compile(model, backend=speed.compile_backend) if speed.compile_backend else torch.compile(model)
    return model
