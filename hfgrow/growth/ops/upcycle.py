"""Dense to mixture-of-experts upcycling: every MLP becomes E experts and a router.

The output is the MoE sibling of the source's family that transformers ships (Llama/Mistral -> Mixtral,
Qwen2 -> Qwen2-MoE, Qwen3 -> Qwen3-MoE, OLMo/OLMo 2 -> OLMoE), written as the Hub stores such checkpoints:
one tensor per expert and projection (``model.layers.i.block_sparse_moe.experts.j.w1.weight`` for Mixtral,
``model.layers.i.mlp.experts.j.gate_proj.weight`` for the others); transformers 5 fuses them on load. Its config is
built by the target's config class from the source config's values. Attention, norms and embeddings are copied
byte for byte.

The variants, each by its paper's rule:

* sparse upcycling (Komatsuzaki et al., ICLR 2023): every expert is a copy of the dense MLP, the router new;
* Drop-Upcycling (Nakamura et al., ICLR 2025; Taishi-N324/Drop-Upcycling ``conversions/drop_upcycling.py``):
  per expert, a seeded fraction ``drop_rate`` of the intermediate units -- their rows of gate and up, their
  columns of down -- is drawn again from a normal with the mean and standard deviation of the weights it
  replaces (each matrix's own statistics). The reference also permutes each expert's units first; a permutation
  of units does not change what an expert computes, so hfgrow leaves it out;
* fine-grained experts (Megatron-Core ``moe/upcycling_utils.py``, "granular" upcycling): the MLP is cut into
  ``granularity`` G slices of intermediate units; expert e holds slice e mod G (each slice repeated E/G times)
  and router row e is row e // G of a fresh router (a group of G experts -- one of each slice -- shares a row,
  so the top-k picks whole groups). Megatron scales the experts so the routed slices sum to the dense output:
  by G where the top-k weights are renormalised and by E*G/k where they are not (a uniform router gives each
  expert 1/E). Megatron spreads that factor over both projections (its cube root on each, exact for ReLU-type
  activations); hfgrow puts it on the down projection alone, which is exact for SiLU too;
* shared experts (Qwen2-MoE): a shared expert of ``shared_experts`` slices (a multiple of G: the dense MLP
  repeated, down projection divided by the repeats) behind a zero sigmoid gate (0.5), and the routed part
  halved, so both halves add up to the dense MLP.

Function preservation at step 0 (``Operation.function_preserving``): where the target renormalises the top-k
weights (Mixtral; Qwen2-MoE, Qwen3-MoE and OLMoE with ``norm_topk_prob``) copies give the dense output for any
router (fine-grained: with a grouped random router and k a multiple of G); where it does not, a zero router
(uniform softmax, top-k weights k/E each) and the E/k rescale do it for G = 1. Drop-Upcycling, noise and a
source whose block differs from the target's (OLMo's weightless LayerNorm, OLMo 2's norms after each sublayer,
OLMoE's norms before) do not preserve.

Example:
    >>> spec = UpcycleSpec(experts=8, top_k=2)
    >>> plan = spec.plan(layout, checkpoint)          # a Llama source
    >>> plan.config["model_type"], plan.operation.function_preserving
    ('mixtral', True)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from hfgrow.arch.layout import Layout
from hfgrow.errors import HfgrowError
from hfgrow.growth.ops.common import compute_dtype, constant, generator, normal, replace, then
from hfgrow.growth.plan import Plan, rounding_cast
from hfgrow.growth.recipe import Operation
from hfgrow.io import dtypes
from hfgrow.io.plan import TensorPlan

ROUTERS = ("zero", "random")


@dataclass(frozen=True)
class Target:
    """A transformers MoE model type hfgrow writes, and how its checkpoints name things."""

    model_type: str
    architecture: str
    moe: str  # the MoE block's module within a decoder layer
    projections: tuple[str, str, str]  # an expert's gate, up and down projections
    experts_key: str  # config field: number of routed experts
    size_key: str  # config field: intermediate size of one expert
    renormalises: bool | None  # True: always; None: when norm_topk_prob is set
    default_norm_topk: bool = False  # hfgrow's default for norm_topk_prob (as the family's Hub checkpoints ship)
    shared: bool = False  # has a shared expert behind a sigmoid gate

    @property
    def label(self) -> str:
        return {"mixtral": "Mixtral", "qwen2_moe": "Qwen2-MoE", "qwen3_moe": "Qwen3-MoE", "olmoe": "OLMoE"}.get(
            self.model_type, self.model_type)


TARGETS = {t.model_type: t for t in (
    Target("mixtral", "MixtralForCausalLM", "block_sparse_moe", ("w1", "w3", "w2"), "num_local_experts",
           "intermediate_size", True),
    Target("qwen2_moe", "Qwen2MoeForCausalLM", "mlp", ("gate_proj", "up_proj", "down_proj"), "num_experts",
           "moe_intermediate_size", None, shared=True),
    Target("qwen3_moe", "Qwen3MoeForCausalLM", "mlp", ("gate_proj", "up_proj", "down_proj"), "num_experts",
           "moe_intermediate_size", None, default_norm_topk=True),
    Target("olmoe", "OlmoeForCausalLM", "mlp", ("gate_proj", "up_proj", "down_proj"), "num_experts",
           "intermediate_size", None),
)}
#: source model type -> its MoE sibling in transformers
SIBLINGS = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen2_moe", "qwen3": "qwen3_moe", "olmo": "olmoe",
            "olmo2": "olmoe"}
#: (source, target) pairs whose blocks compute the same thing apart from the MLP (upcycling can preserve)
SAME_BLOCK = {("llama", "mixtral"), ("mistral", "mixtral"), ("llama", "qwen2_moe"), ("qwen2", "qwen2_moe"),
              ("qwen3", "qwen3_moe")}
#: norms that move to another name: (source, target) -> {target tensor within a layer: source tensor}
NORM_MOVES = {("olmo2", "olmoe"): {"input_layernorm.weight": "post_attention_layernorm.weight",
                                   "post_attention_layernorm.weight": "post_feedforward_layernorm.weight"}}
_MLP = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
# source config fields that differ in name in a target's config class
_CONFIG_ALIASES = {"qkv_bias": "attention_bias"}


def exact_factor(factor: float, dtype: str) -> bool:
    """Whether multiplying ``dtype`` weights by ``factor`` is exact (a power of two, or a float32/64 output
    whose rounding is far below verify's tolerance)."""
    return factor == 1 or dtype in ("F32", "F64") or math.frexp(factor)[0] == 0.5


def drop_indices(units: int, rate: float, seed: int, layer: int, expert: int) -> torch.Tensor:
    """The intermediate units Drop-Upcycling draws again in one expert: int(units * rate) of them, seeded per
    (seed, layer, expert), in increasing order (the same units for the expert's gate, up and down).

    Example:
        >>> drop_indices(8, 0.5, 0, layer=0, expert=1).tolist()
        [0, 3, 5, 6]
    """
    count = int(units * rate)
    order = torch.randperm(units, generator=generator(seed, "drop-upcycling", layer, expert))
    return order[:count].sort().values


def redraw_units(weight: torch.Tensor, units: torch.Tensor, seed: int, name: str, dim: int) -> torch.Tensor:
    """``weight`` with the ``units`` (indices along ``dim``) drawn again from N(mean, std²) of the values they
    replace (Drop-Upcycling's rule; std as torch computes it, unbiased).

    Example:
        >>> redraw_units(w, torch.tensor([1, 4]), 0, "w", dim=0)[[0, 2, 3]].equal(w[[0, 2, 3]])
        True
    """
    if units.numel() == 0:
        return weight
    cdt = compute_dtype(weight.dtype)
    out = weight.to(cdt).clone()
    part = out.index_select(dim, units)
    mean, std = part.mean(), part.std() if part.numel() > 1 else torch.tensor(0.0, dtype=cdt)
    drawn = torch.randn(part.shape, generator=generator(seed, "drop-values", name), dtype=cdt) * std + mean
    out.index_copy_(dim, units, drawn)
    return out.to(weight.dtype)


@dataclass(frozen=True)
class UpcycleSpec:
    """One upcycling: ``experts`` E routed experts per layer, ``top_k`` k of them per token, into ``to`` (the
    target model type; default the source's sibling), with the variants of the module docstring. Options left
    None take the target's default (``router``: random where the target renormalises, zero where it does not;
    ``shared_experts``: G for Qwen2-MoE; ``norm_topk_prob``: Qwen3-MoE's True, else False)."""

    experts: int = 8
    top_k: int = 2
    to: str | None = None
    granularity: int = 1
    drop_rate: float = 0.0
    shared_experts: int | None = None
    router: str | None = None
    router_std: float | None = None
    norm_topk_prob: bool | None = None
    noise: float | None = None
    seed: int = 0
    dtype: str = "keep"
    router_logits: bool = False  # in a run: output_router_logits on, so training adds the load-balancing loss

    command = "upcycle"

    def __post_init__(self) -> None:
        if self.experts < 2:
            raise HfgrowError(f"--experts must be at least 2, got {self.experts}.")
        if not 1 <= self.top_k <= self.experts:
            raise HfgrowError(f"--top-k must be between 1 and --experts ({self.experts}), got {self.top_k}.")
        if self.to is not None and self.to not in TARGETS:
            raise HfgrowError(f"unknown --to '{self.to}'; hfgrow upcycles into {', '.join(TARGETS)}.")
        if self.granularity < 1 or self.experts % self.granularity:
            raise HfgrowError(f"--granularity must divide --experts ({self.experts}), got {self.granularity}.")
        if not 0.0 <= self.drop_rate < 1.0 or math.isnan(self.drop_rate):
            raise HfgrowError(f"--drop-rate must be in [0, 1), got {self.drop_rate}.")
        if self.router is not None and self.router not in ROUTERS:
            raise HfgrowError(f"unknown --router '{self.router}'; use zero or random.")
        if self.router == "zero" and self.granularity > 1:
            raise HfgrowError("--router zero ties every expert, so the top-k would not pick whole groups of "
                              "fine-grained slices; fine-grained upcycling uses a random router (--router random).")
        if self.router_std is not None and (self.router_std <= 0 or self.router == "zero"):
            raise HfgrowError("--router-std must be positive and is for --router random.")
        if self.shared_experts is not None and self.shared_experts < 0:
            raise HfgrowError(f"--shared-experts must be 0 or more, got {self.shared_experts}.")
        if self.noise is not None and not 0.0 <= self.noise < 1.0:
            raise HfgrowError(f"--noise must be in [0, 1), got {self.noise}.")
        dtypes.from_option(self.dtype)

    # ------------------------------------------------------------------ what the options resolve to

    def target(self, source: dict[str, Any]) -> Target:
        """The target for a source config (a config.json dict)."""
        model_type = source.get("model_type")
        if model_type not in SIBLINGS:
            raise HfgrowError(f"'{model_type}' has no mixture-of-experts sibling in transformers that hfgrow "
                              f"writes; hfgrow upcycles {', '.join(SIBLINGS)}.")
        return TARGETS[self.to or SIBLINGS[model_type]]

    def settings(self, source: dict[str, Any], intermediate: int) -> dict[str, Any]:
        """Every choice of this upcycling, defaults resolved for the ``source`` config (what the recipe records)."""
        target, G, E, k = self.target(source), self.granularity, self.experts, self.top_k
        if intermediate % G:
            raise HfgrowError(f"--granularity {G} does not divide the MLP's {intermediate} intermediate units.")
        shared = self.shared_experts if self.shared_experts is not None else (G if target.shared else 0)
        if shared and not target.shared:
            raise HfgrowError(f"{target.label} has no shared experts; --shared-experts is for qwen2_moe.")
        if target.shared and not shared:
            raise HfgrowError("Qwen2-MoE always has a shared expert; give --shared-experts 1 or more.")
        if shared % G:
            raise HfgrowError(f"--shared-experts {shared} must be a multiple of --granularity {G} (the shared expert "
                              "is the dense MLP repeated).")
        if self.norm_topk_prob is not None and target.renormalises is True:
            raise HfgrowError(f"{target.label} always renormalises its top-k weights; --norm-topk-prob is for the "
                              "others.")
        norm_topk = target.default_norm_topk if self.norm_topk_prob is None else self.norm_topk_prob
        renormalises = target.renormalises is True or norm_topk
        router = self.router or ("random" if renormalises or G > 1 else "zero")
        factor = float(G) if renormalises else E * G / k  # Megatron-Core's activation scale
        if shared:
            factor /= 2  # the shared expert's sigmoid(0) = 1/2 gives the other half
        std = (self.router_std or float(source.get("initializer_range") or 0.02)) if router == "random" else None
        return {"target": target.model_type, "experts": E, "top_k": k, "granularity": G,
                "expert_size": intermediate // G, "shared_experts": shared, "router": router,
                "router_std": std, "drop_rate": self.drop_rate,
                "norm_topk_prob": None if target.renormalises is True else norm_topk, "renormalises": renormalises,
                "down_scale": factor}

    def preserves(self, source: dict[str, Any], settings: dict[str, Any], dtype: str) -> tuple[bool, str]:
        """Whether step 0 computes the dense function, and why (not)."""
        G, k, target = settings["granularity"], settings["top_k"], settings["target"]
        if (source["model_type"], target) not in SAME_BLOCK:
            return False, (f"a {source['model_type']} block is not a {target} block apart from its MLP (norms differ), "
                           "so the upcycled model does not compute the dense function")
        if self.drop_rate:
            return False, "Drop-Upcycling draws part of every expert again"
        if self.noise:
            return False, "noise changes every weight matrix"
        if settings["renormalises"] and G > 1 and k % G:
            return False, f"top-k {k} is not a multiple of --granularity {G}, so it cannot pick whole slice groups"
        if not settings["renormalises"] and not (G == 1 and settings["router"] == "zero"):
            return False, ("the target does not renormalise its top-k weights, and only a zero router (uniform "
                           "weights k/E) with whole-MLP experts gives the dense output then")
        if not exact_factor(settings["down_scale"], dtype) or (settings["shared_experts"] and not exact_factor(
                G / settings["shared_experts"], dtype)):
            return False, (f"the down projections are scaled by {settings['down_scale']:g}, which {dtype} rounds; "
                           "--dtype float32 keeps the function")
        return True, "the experts' weighted sum is the dense MLP at step 0"

    # ------------------------------------------------------------------ the plan

    def config(self, source_config: dict[str, Any], settings: dict[str, Any], intermediate: int) -> dict[str, Any]:
        """The target config, built by the target's config class from the source config's values."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        from hfgrow.arch.layout import hf_config_from_dict, quiet_transformers

        source = hf_config_from_dict(source_config)
        target = TARGETS[settings["target"]]
        cls = CONFIG_MAPPING[target.model_type]
        fields = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "architectures",
                                                                    "transformers_version"}
        values = source.to_dict()
        kwargs = {key: values[key] for key in fields if key in values}
        for key, alias in _CONFIG_ALIASES.items():
            if key in fields and key not in values and alias in values:
                kwargs[key] = values[alias]
        if values.get("head_dim"):
            kwargs["head_dim"] = values["head_dim"]  # read by the attention of every target (getattr)
        kwargs.update({target.experts_key: settings["experts"], "num_experts_per_tok": settings["top_k"],
                       target.size_key: settings["expert_size"], "output_router_logits": self.router_logits})
        if "decoder_sparse_step" in fields:
            kwargs.update(decoder_sparse_step=1, mlp_only_layers=[])
        if target.shared:
            kwargs["shared_expert_intermediate_size"] = settings["shared_experts"] * settings["expert_size"]
        if settings["norm_topk_prob"] is not None:
            kwargs["norm_topk_prob"] = settings["norm_topk_prob"]
        if target.size_key != "intermediate_size" and "intermediate_size" in fields:
            kwargs["intermediate_size"] = intermediate  # dense layers' size (none here; kept as the source's)
        try:
            with quiet_transformers():
                config = cls(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the target's validation refuses a value
            raise HfgrowError(f"{target.label}'s config does not accept this model's values: "
                              f"{' '.join(str(exc).split())[:200]}.") from None
        data = config.to_diff_dict()  # what save_pretrained writes
        data["architectures"] = [target.architecture]
        return data

    def grown_config(self, source: dict[str, Any]) -> dict[str, Any]:
        """The config of the upcycled model, from the source config alone (a training run's stage plan)."""
        self.target(source)  # a family with no MoE sibling says so first
        intermediate = source.get("intermediate_size")
        if not isinstance(intermediate, int):
            raise HfgrowError(f"the '{source.get('model_type')}' config has no intermediate_size to upcycle.")
        return self.config(source, self.settings(source, intermediate), intermediate)

    def plan(self, layout: Layout, checkpoint) -> Plan:
        from hfgrow.growth.ops.depth import assemble, config_dtype

        tensors = checkpoint.tensors
        if layout.extra_layers:
            raise HfgrowError("hfgrow does not upcycle models with blocks after the decoder stack.")
        mlp = [self._mlp(layout, tensors, i) for i in range(layout.num_layers)]
        intermediate = mlp[0][0].shape[0]
        settings = self.settings(layout.config, intermediate)
        target = TARGETS[settings["target"]]
        self._check_source(layout)
        dtype_option = dtypes.from_option(self.dtype)
        dtype = dtypes.float_output(mlp[0][0].dtype, dtype_option)
        blocks: list[TensorPlan] = []
        moved = {old: new for new, old in NORM_MOVES.get((layout.model_type, target.model_type), {}).items()}
        for i, names in enumerate(layout.layers):
            for rest in names:
                if rest in _MLP:
                    continue
                info = tensors[layout.layer_tensor(i, rest)]
                blocks.append(TensorPlan(layout.layer_tensor(i, moved.get(rest, rest)),
                                         dtypes.float_output(info.dtype, dtype_option), info.shape, (info.name,)))
            blocks += self._moe(layout, i, mlp[i], settings, target, dtype)
        config = config_dtype(self.config(layout.config, settings, intermediate), dtype_option)
        planned = assemble(layout, tensors, blocks, dtype_option)
        planned, filled = self._fill_norms(planned, layout, config)
        preserving, why = self.preserves(layout.config, settings, dtype)
        caveat = rounding_cast(Plan(planned), checkpoint) if preserving else None
        if caveat:
            preserving, why = False, caveat
        settings["variant"] = self.variant(settings)
        operation = Operation(op="upcycle", direction="experts", seed=self.seed, function_preserving=preserving,
                              experts=settings)
        notes = [f"{layout.num_layers} MLPs -> {settings['experts']} experts each ({settings['expert_size']} units), "
                 f"top-{settings['top_k']}, {settings['router']} router; down projections x{settings['down_scale']:g}",
                 ("function-preserving: " if preserving else "not function-preserving: ") + why]
        if filled:
            notes.append(f"{target.label} has norms {layout.model_type} lacks ({', '.join(filled)}): set to 1")
        warnings = [why] if caveat or (layout.model_type, target.model_type) not in SAME_BLOCK else []
        plan = Plan(tensors=planned, config=config, layer_map=None, notes=notes, warnings=warnings,
                    operation=operation)
        if self.noise:
            from hfgrow.arch.roles import derive_roles
            from hfgrow.growth.ops.noise import noise_plan

            plan = noise_plan(plan, derive_roles(layout, tensors), self.noise, seed=self.seed,
                              num_layers=layout.num_layers)
            plan.operation = plan.operation.replace(function_preserving=False)
        return plan

    def variant(self, settings: dict[str, Any]) -> str:
        parts = ["sparse upcycling" if not self.drop_rate else f"Drop-Upcycling (r = {self.drop_rate:g})"]
        if settings["granularity"] > 1:
            parts.append(f"fine-grained (G = {settings['granularity']})")
        if settings["shared_experts"]:
            parts.append(f"{settings['shared_experts']} shared")
        label = TARGETS[settings["target"]].label
        return f"{label}, {settings['experts']} experts, top-{settings['top_k']}, " + ", ".join(parts)

    def params(self, plan: Plan) -> dict[str, Any]:
        """The keyword arguments of :func:`hfgrow.growth.pipeline.upcycle` that rebuild ``plan`` (defaults resolved
        where they depend on the source)."""
        s = plan.operation.experts or {}
        target = TARGETS[s["target"]]
        params: dict[str, Any] = {"experts": s["experts"], "top_k": s["top_k"], "to": s["target"],
                                  "granularity": s["granularity"] if s["granularity"] > 1 else None,
                                  "drop_rate": s["drop_rate"] or None,
                                  "shared_experts": s["shared_experts"] if target.shared else None,
                                  "router": s["router"], "router_std": s["router_std"],
                                  "norm_topk_prob": s["norm_topk_prob"]
                                  if s["norm_topk_prob"] not in (None, target.default_norm_topk) else None,
                                  "noise": self.noise or None, "seed": self.seed,
                                  "router_logits": self.router_logits or None,
                                  "dtype": self.dtype if self.dtype != "keep" else None}
        return {k: v for k, v in params.items() if v is not None}

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _mlp(layout: Layout, tensors, layer: int) -> tuple[Any, Any, Any]:
        names = [layout.layer_tensor(layer, rest) for rest in _MLP]
        missing = [name for name in names if name not in tensors]
        if missing:
            raise HfgrowError(f"layer {layer} has no {missing[0]}; hfgrow upcycles gated MLPs stored as "
                              "mlp.gate_proj/up_proj/down_proj (Llama, Mistral, Qwen2/3, OLMo, OLMo 2).")
        biases = [rest for rest in layout.layers[layer] if rest.startswith("mlp.") and rest not in _MLP]
        if biases:
            raise HfgrowError(f"layer {layer} has {biases[0]}; the MoE targets' experts have no biases.")
        return tuple(tensors[name] for name in names)

    def _check_source(self, layout: Layout) -> None:
        config = layout.config
        if config.get("attention_bias") and self.target(config).model_type == "mixtral":
            raise HfgrowError("the source's attention has biases and Mixtral's has none; choose --to qwen2_moe.")
        if config.get("mlp_bias"):
            raise HfgrowError("the source's MLP has biases; the MoE targets' experts have none.")

    def _moe(self, layout: Layout, layer: int, mlp, settings: dict[str, Any], target: Target,
             dtype: str) -> list[TensorPlan]:
        gate, up, down = mlp
        E, G, m = settings["experts"], settings["granularity"], settings["expert_size"]
        H = down.shape[0]
        base = layout.layer_tensor(layer, target.moe)
        out = [self._router(f"{base}.gate.weight", (E, H), G, settings, dtype)]
        for j in range(E):
            s = j % G  # Megatron-Core: the G slices repeated E/G times; expert j holds slice j mod G
            units = drop_indices(m, self.drop_rate, self.seed, layer, j) if self.drop_rate else None
            for info, proj, dim in ((gate, target.projections[0], 0), (up, target.projections[1], 0),
                                    (down, target.projections[2], 1)):
                name = f"{base}.experts.{j}.{proj}.weight"
                scale = settings["down_scale"] if dim == 1 else 1.0
                out.append(self._slice(TensorPlan(name, dtype, info.shape, (info.name,)), dim, s, G, m, units,
                                       scale))
        if settings["shared_experts"]:
            repeats = settings["shared_experts"] // G
            for info, proj, dim in ((gate, "gate_proj", 0), (up, "up_proj", 0), (down, "down_proj", 1)):
                tensor = TensorPlan(f"{base}.shared_expert.{proj}.weight", dtype, info.shape, (info.name,))
                out.append(self._repeat(tensor, dim, repeats))
            out.append(replace(TensorPlan(f"{base}.shared_expert_gate.weight", dtype, (1, H), ()),
                               lambda shape=(1, H): constant(shape, dtype, 0.0),
                               "zeros (shared-expert gate: sigmoid(0) = 1/2)"))
        return out

    def _router(self, name: str, shape: tuple[int, int], G: int, settings: dict[str, Any], dtype: str) -> TensorPlan:
        E, H = shape
        if settings["router"] == "zero":
            return replace(TensorPlan(name, dtype, shape, ()), lambda: constant(shape, dtype, 0.0),
                           "zeros (router: uniform softmax)")
        std = settings["router_std"]

        def make() -> torch.Tensor:
            rows = normal((E // G, H), dtype, std, self.seed, "router", name)
            return rows.repeat_interleave(G, dim=0)

        text = f"N(0, {std:g}^2) router" + (f", each row shared by a group of {G} experts" if G > 1 else "")
        return replace(TensorPlan(name, dtype, shape, ()), make, text)

    def _slice(self, tensor: TensorPlan, dim: int, s: int, G: int, m: int, units, scale: float) -> TensorPlan:
        """Slice ``s`` of G along the intermediate dimension ``dim``, Drop-Upcycling's redraw, the down scale."""
        shape = list(tensor.shape)
        shape[dim] = m
        if G == 1 and units is None and scale == 1.0:
            return tensor  # a copy: the executor copies its bytes
        seed, name = self.seed, tensor.name

        def fn(x: torch.Tensor) -> torch.Tensor:
            part = x.narrow(dim, s * m, m)
            if units is not None:
                part = redraw_units(part, units, seed, name, dim)
            if scale != 1.0:
                part = (part.to(compute_dtype(part.dtype)) * scale).to(x.dtype)
            return part.contiguous()

        what = [f"slice {s + 1}/{G}"] if G > 1 else []
        what += [f"{units.numel()} units redrawn (Drop-Upcycling)"] if units is not None else []
        what += [f"x{scale:g}"] if scale != 1.0 else []
        return then(tensor, fn, "expert: " + ", ".join(what), tuple(shape))

    @staticmethod
    def _repeat(tensor: TensorPlan, dim: int, repeats: int) -> TensorPlan:
        """The dense projection repeated ``repeats`` times along the intermediate dimension (down divided by it)."""
        if repeats == 1:
            return tensor
        shape = list(tensor.shape)
        shape[dim] *= repeats

        def fn(x: torch.Tensor) -> torch.Tensor:
            tiled = torch.cat([x] * repeats, dim=dim)
            return (tiled.to(compute_dtype(x.dtype)) / repeats).to(x.dtype) if dim == 1 else tiled

        return then(tensor, fn, f"shared expert: dense MLP x{repeats}" + (f", /{repeats}" if dim == 1 else ""),
                    tuple(shape))

    @staticmethod
    def _fill_norms(planned: list[TensorPlan], layout: Layout, config: dict[str, Any]
                    ) -> tuple[list[TensorPlan], list[str]]:
        """Norm weights the target has and the source lacks (OLMo's weightless LayerNorm, q/k norms) start at 1."""
        from hfgrow.arch.check import load_report
        from hfgrow.arch.layout import grown_skeleton

        model = grown_skeleton(layout, config)  # the target's meta skeleton (the pipeline's output check reuses it)
        report = load_report(model, {t.name: t.shape for t in planned})
        filled, kinds = [], []
        params = dict(model.state_dict())
        for name in report.missing:
            if "norm" not in name.split(".")[-2] or name not in params:
                continue
            shape, dtype = tuple(params[name].shape), next(t.dtype for t in planned)
            filled.append(replace(TensorPlan(name, dtype, shape, ()), lambda s=shape, d=dtype: constant(s, d, 1.0),
                                  "ones (a norm the source lacks)"))
            kind = name.split(".")[-2]
            if kind not in kinds:
                kinds.append(kind)
        return planned + filled, kinds

