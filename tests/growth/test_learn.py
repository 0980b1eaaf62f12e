"""G↑learn (LiGO, depth and width): init equals Gstack / the direct widening, the math of the
combinations and expansions, learning helps, replay, and big-model placement with disk offload."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import hfgrow
from hfgrow.io.checkpoint import Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.io.executor import materialize
from hfgrow.arch.layout import open_model
from hfgrow.growth.ligo.fit import FitSettings, learn_growth, read_sequences, split_sequences
from hfgrow.growth.ligo.operator import learn
from hfgrow.growth.ligo.placement import Placement, parse_device_map, parse_max_memory, source_devices
from hfgrow.growth.recipe import Recipe
from hfgrow.growth.ops.depth import stack_plan
from hfgrow.growth.ops.learn import SIDECAR, WidthExpansion, initial_coefficients, learned_plan, learned_width_plan
from hfgrow.growth.ops.width import resolve_sizes, width_plan
from hfgrow.arch.roles import derive_roles
from hfgrow.eval.tiny import make_model, make_tokenizer, pretrain_tiny, python_docs_corpus, tiny_llama_config

from helpers.cli import run_cli
from helpers.families import OPERATOR_CONFIGS as CONFIGS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer Llama (GQA) trained briefly on the pydoc topics, plus a text file to learn on."""
    root = tmp_path_factory.mktemp("ligo")
    docs = python_docs_corpus(max_chars=150_000)
    src = root / "src"
    make_model(src, tiny_llama_config(layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                      num_key_value_heads=2), tokenizer=False)
    make_tokenizer(src, text="\n".join(docs[:40]), vocab_size=256)
    pretrain_tiny(src, docs, steps=120)
    data = root / "train.txt"
    data.write_text("\n\n".join(docs[: len(docs) // 2]))
    return src, data, root


def same_tensors(a_folder, b_folder, atol: float = 0.0) -> None:
    a, b = Checkpoint.open(a_folder), Checkpoint.open(b_folder)
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        if atol:
            torch.testing.assert_close(a.load(name), b.load(name), rtol=0, atol=atol, msg=name)
        else:
            assert torch.equal(a.load(name), b.load(name)), name


def held_out_loss(model_folder, src, data, seq_len: int = 64, batch: int = 4) -> float:
    """The held-out loss learn_growth reports, computed independently on a saved model."""
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    eval_set, _ = split_sequences(read_sequences(src, [str(data)], seq_len), seed=0)
    with torch.no_grad():
        return sum(model(eval_set[i:i + batch], labels=eval_set[i:i + batch]).loss.item() * len(eval_set[i:i + batch])
                   for i in range(0, len(eval_set), batch)) / len(eval_set)


def note_losses(result) -> tuple[float, float]:
    note = next(n for n in result.plan.notes if n.startswith("LiGO:"))
    before, after = note.split("held-out loss ")[1].split(" at step 0 -> ")
    return float(before), float(after.split()[0])


# ---------------------------------------------------------------- depth


def test_initial_coefficients_are_gstack(trained, tmp_path):
    src, data, _ = trained
    ligo = learn(str(src), tmp_path / "ligo", data=[str(data)], factor=2, learn_steps=0, seq_len=64, quiet=True)
    gstack = hfgrow.stack(str(src), tmp_path / "gstack", factor=2, quiet=True)
    same_tensors(tmp_path / "ligo", tmp_path / "gstack")
    assert ligo.plan.layer_map == gstack.plan.layer_map
    # the parametrised grown model at D = stacking map computes exactly Gstack's loss
    before, after = note_losses(ligo)
    assert before == after == pytest.approx(held_out_loss(tmp_path / "gstack", src, data), abs=1e-4)


def test_combination_math(trained):
    src, _, _ = trained
    checkpoint, layout = open_model(src)
    layer_map = [0, 1, 0, 1]
    coefficients = initial_coefficients(layout, layer_map)
    rest = "self_attn.q_proj.weight"
    coefficients[rest][2] = [0.25, 0.75]
    plan = learned_plan(layout, checkpoint.tensors, layer_map, coefficients)
    target = next(t for t in plan.tensors if t.name == f"model.layers.2.{rest}")
    got = materialize(target, checkpoint)
    w0, w1 = checkpoint.load(f"model.layers.0.{rest}"), checkpoint.load(f"model.layers.1.{rest}")
    torch.testing.assert_close(got, 0.25 * w0 + 0.75 * w1, rtol=0, atol=1e-7)
    untouched = next(t for t in plan.tensors if t.name == f"model.layers.3.{rest}")
    assert untouched.transform is None and untouched.sources == (f"model.layers.1.{rest}",)


def test_depth_learning_lowers_held_out_loss_and_replays(trained, tmp_path):
    src, data, _ = trained
    result = learn(str(src), tmp_path / "out", data=[str(data)], factor=2, learn_steps=30, learn_lr=1e-2,
                   seq_len=64, batch_size=8, seed=0, quiet=True)
    before, after = note_losses(result)
    assert after < before - 0.01
    assert after == pytest.approx(held_out_loss(tmp_path / "out", src, data), abs=1e-4)  # what was learned is written
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    coefficients = Recipe.read(tmp_path / "out").operation.coefficients
    assert any(row != [1.0, 0.0] and row != [0.0, 1.0] for rows in coefficients.values() for row in rows)
    hfgrow.replay(tmp_path / "out", tmp_path / "replay", source=str(src), quiet=True)
    same_tensors(tmp_path / "out", tmp_path / "replay")


# ---------------------------------------------------------------- width


@pytest.mark.parametrize("family", list(CONFIGS))
def test_width_expansion_at_direct_init_is_the_direct_widening(family, tmp_path):
    """B_out·W·B_inᵀ with B at the direct init gives every tensor of `grow --op direct` (fused qkv, Conv1D, MoE...)."""
    src = tmp_path / "src"
    make_model(src, CONFIGS[family]())
    checkpoint, layout = open_model(src)
    roles = derive_roles(layout, checkpoint.tensors)
    sizes = resolve_sizes(roles, hidden_size=64)
    base = stack_plan(layout, checkpoint.tensors, list(range(layout.num_layers)))
    direct = width_plan(base, roles, sizes, op="direct", seed=3)
    learned = learned_width_plan(base, roles, sizes, WidthExpansion(roles, sizes, init="direct", seed=3), "direct")
    assert learned.config == direct.config
    assert [(t.name, t.shape) for t in learned.tensors] == [(t.name, t.shape) for t in direct.tensors]
    for a, b in zip(direct.tensors, learned.tensors):
        torch.testing.assert_close(materialize(b, checkpoint), materialize(a, checkpoint), rtol=0, atol=1e-6,
                                   msg=a.name)


def test_width_expansion_math_is_b_out_w_b_in(trained):
    """Perturbed matrices: o_proj' = B_hidden,write · W · (B_q,read ⊗ I_head_dim)ᵀ, k_proj' uses the kv heads."""
    src, _, _ = trained
    checkpoint, layout = open_model(src)
    roles = derive_roles(layout, checkpoint.tensors)
    sizes = resolve_sizes(roles, hidden_size=128, op="zero")
    expansion = WidthExpansion(roles, sizes, init="identity", seed=0)
    with torch.no_grad():
        for p in expansion.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    hd = sizes.head_dim
    o = checkpoint.load("model.layers.0.self_attn.o_proj.weight")
    got = expansion.expand(o, roles.role("model.layers.0.self_attn.o_proj.weight"))
    expected = expansion.matrix("hidden", "write") @ o @ torch.kron(expansion.matrix("q", "read"), torch.eye(hd)).T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    k = checkpoint.load("model.layers.0.self_attn.k_proj.weight")
    got = expansion.expand(k, roles.role("model.layers.0.self_attn.k_proj.weight"))
    expected = torch.kron(expansion.matrix("kv", "write"), torch.eye(hd)) @ k @ expansion.matrix("hidden", "read").T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # identity init: source units are copied exactly (before the perturbation above)
    fresh = WidthExpansion(roles, sizes, init="identity", seed=0)
    assert torch.equal(fresh.matrix("hidden", "write")[:64], torch.eye(64))
    assert fresh.matrix("hidden", "write")[64:].abs().max() > 0  # small random new units


def test_width_learning_starts_at_direct_and_lowers_loss_and_replays(trained, tmp_path):
    src, data, _ = trained
    kwargs = dict(data=[str(data)], factor=2, hidden_size=128, seq_len=64, batch_size=8, seed=0, quiet=True)
    start = learn(str(src), tmp_path / "start", learn_steps=0, **kwargs)
    hfgrow.grow(str(src), tmp_path / "direct", factor=2, hidden_size=128, seed=0, quiet=True)
    same_tensors(tmp_path / "start", tmp_path / "direct", atol=1e-6)
    before, _ = note_losses(start)
    assert before == pytest.approx(held_out_loss(tmp_path / "direct", src, data), abs=1e-4)

    result = learn(str(src), tmp_path / "out", learn_steps=30, learn_lr=3e-3, **kwargs)
    before, after = note_losses(result)
    assert after < before - 0.01
    assert after == pytest.approx(held_out_loss(tmp_path / "out", src, data), abs=1e-4)
    assert (tmp_path / "out" / SIDECAR).is_file()
    recipe = Recipe.read(tmp_path / "out")
    assert recipe.operation.width.matrices == SIDECAR and recipe.params["hidden_size"] == 128
    hfgrow.replay(tmp_path / "out", tmp_path / "replay", source=str(src), quiet=True)
    same_tensors(tmp_path / "out", tmp_path / "replay")
    # a model grown from a LiGO output does not mistake the matrices for weights
    assert all(info.file.name != SIDECAR for info in Checkpoint.open(tmp_path / "out").tensors.values())


# ---------------------------------------------------------------- placement (accelerate big-model tools)


def test_device_map_with_disk_offload_gives_the_same_result(trained, tmp_path):
    src, data, _ = trained
    checkpoint, layout = open_model(src)
    # accelerate's auto map with a CPU budget smaller than the model: some blocks go to disk
    auto = Placement("auto", max_memory=parse_max_memory("cpu=300KB"), offload_folder=tmp_path / "offload")
    devices = source_devices(sorted(checkpoint.tensors), layout.skeleton, auto)
    assert "disk" in devices.values() and torch.device("cpu") in devices.values()

    kwargs = dict(data=[str(data)], factor=2, hidden_size=128, learn_steps=4, learn_lr=3e-3, seq_len=64,
                  batch_size=4, seed=0, quiet=True)
    plain = learn(str(src), tmp_path / "plain", **kwargs)
    placed = learn(str(src), tmp_path / "placed", placement=auto, **kwargs)
    everything_on_disk = learn(str(src), tmp_path / "disk", **kwargs,
                               placement=Placement("disk", offload_folder=tmp_path / "offload"))
    # the blocks compute the same arithmetic wherever the source lives (combine with D, then widen with B), so
    # placement changes nothing, bit for bit
    assert note_losses(placed) == note_losses(plain) == note_losses(everything_on_disk)
    same_tensors(tmp_path / "plain", tmp_path / "placed")
    same_tensors(tmp_path / "plain", tmp_path / "disk")
    assert list((tmp_path / "offload").iterdir()) == []  # offloaded copies are removed


def test_placement_errors(trained, tmp_path, capsys):
    src, data, _ = trained
    with pytest.raises(HfgrowError, match="give --offload-folder"):
        learn(str(src), tmp_path / "x", data=[str(data)], factor=2, learn_steps=1, seq_len=64, quiet=True,
              placement=Placement("disk"))
    assert not (tmp_path / "x").exists()
    assert parse_device_map('{"": "cpu"}') == {"": "cpu"} and parse_device_map("auto") == "auto"
    with pytest.raises(HfgrowError, match="DEVICE=SIZE"):
        parse_max_memory("cpu:8GiB")
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "y"), "--op", "learn", "--factor", "2", "--data",
                            str(data), "--device-map", "{not json"], capsys)
    assert code != 0 and "--device-map is not valid JSON" in err and "Traceback" not in err
    code, _, err = run_cli(["grow", str(src), str(tmp_path / "y"), "--factor", "2", "--device-map", "auto"], capsys)
    assert code != 0 and "--device-map is for --op learn" in err


def test_learn_needs_data(trained, tmp_path):
    src, _, _ = trained
    with pytest.raises(HfgrowError, match="needs --data"):
        learn(str(src), tmp_path / "x", factor=2, quiet=True)
    with pytest.raises(HfgrowError, match="fewer than two sequences"):
        tiny = tmp_path / "tiny.txt"
        tiny.write_text("too short")
        learn(str(src), tmp_path / "y", data=[str(tiny)], factor=2, quiet=True)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_learn_growth_reports_init_loss(trained):
    """learn_growth on its own: zero steps leave D at the stacking map and the loss unchanged."""
    src, data, _ = trained
    checkpoint, layout = open_model(src)
    layer_map = [0, 1, 0, 1]
    config = stack_plan(layout, checkpoint.tensors, layer_map).config
    report = learn_growth(checkpoint, layout, config, layer_map, [str(data)], FitSettings(steps=0, seq_len=64),
                          progress=False)
    assert report.coefficients == initial_coefficients(layout, layer_map)
    assert report.eval_before == report.eval_after and report.losses == []


@pytest.mark.parametrize("family", ["gpt2", "neox", "phi3", "gemma", "falcon"])
def test_learn_end_to_end_writes_the_model_it_trained(family, tmp_path):
    """Depth+width LiGO on families with fused q|k|v, Conv1D, tied or renamed heads, (1 + w) norms: the written
    model's held-out loss is the loss the learning phase reports."""
    config = CONFIGS[family]()
    config.vocab_size = 300  # room for the byte-level tokenizer
    src = tmp_path / "src"
    make_model(src, config, tokenizer=False)
    docs = python_docs_corpus(max_chars=60_000)
    make_tokenizer(src, text="\n".join(docs[:20]), vocab_size=300)
    data = tmp_path / "data.txt"
    data.write_text("\n\n".join(docs))
    result = learn(str(src), tmp_path / "out", data=[str(data)], factor=2, hidden_size=48, learn_steps=2,
                   learn_lr=1e-2, seq_len=32, batch_size=4, quiet=True)
    _, after = note_losses(result)
    assert after == pytest.approx(held_out_loss(tmp_path / "out", src, data, seq_len=32), abs=2e-4)


def test_learn_bad_inputs_fail_in_one_line(trained, tmp_path, capsys):
    src, data, _ = trained
    base = ["grow", str(src), str(tmp_path / "out"), "--op", "learn", "--data", str(data)]
    cases = [
        (["--factor", "2", "--seq-len", "0"], "--seq-len must be at least 1"),
        (["--factor", "2", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--hidden-size", "64"], "nothing to grow in width"),
        (["--layers", "1"], "would shrink the model"),
        (["--factor", "2", "--device-map", "cpu", "--max-memory", "cpu=1GB"], "a budget for --device-map auto"),
        (["--factor", "2", "--device-map", '{"": null}'], "is not a device"),
        (["--factor", "2", "--device-map", "meta"], "not supported"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--factor", "2", "--device-map", "cuda:0"], "which this machine does not have"))
    for args, words in cases:
        code, _, err = run_cli(base + args, capsys)
        assert code != 0 and words in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "out").exists()


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    src = tmp_path / "src"
    make_model(src, CONFIGS["llama"](), tokenizer=False)  # 128 embeddings
    make_tokenizer(src, vocab_size=300)
    data = tmp_path / "data.txt"
    data.write_text("\n\n".join(python_docs_corpus(max_chars=20_000)))
    with pytest.raises(HfgrowError, match="does not belong to this model"):
        learn(str(src), tmp_path / "out", data=[str(data)], factor=2, learn_steps=1, seq_len=32, quiet=True)


def test_offload_folder_is_cleaned_when_placement_fails(trained, tmp_path, monkeypatch):
    """A failure while the source is being offloaded (here: a read error half way) leaves no copies behind."""
    src, data, _ = trained
    load = Checkpoint.load

    def failing_load(self, name):
        if name == "model.norm.weight":  # read after the embedding and every block tensor
            raise HfgrowError("simulated read error")
        return load(self, name)

    monkeypatch.setattr(Checkpoint, "load", failing_load)
    with pytest.raises(HfgrowError, match="simulated read error"):
        learn(str(src), tmp_path / "out", data=[str(data)], factor=2, learn_steps=1, seq_len=64, quiet=True,
              placement=Placement("disk", offload_folder=tmp_path / "off"))
    assert (tmp_path / "off").is_dir() and list((tmp_path / "off").iterdir()) == []
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- issue 15: a learning rate that hurts, silence


def test_an_lr_that_makes_things_worse_writes_the_step_0_model(trained, tmp_path):
    """LR 30 wrecks the operator within a step (checked below: every later evaluation is worse), so the model
    written must be the step-0 one, Gstack + the direct widening, and the note must say so and why."""
    src, data, _ = trained
    kwargs = dict(data=[str(data)], factor=2, hidden_size=128, seq_len=64, batch_size=4, seed=0, quiet=True)
    result = learn(str(src), tmp_path / "out", learn_steps=4, learn_lr=30.0, **kwargs)
    note = next(n for n in result.plan.notes if n.startswith("LiGO:"))
    before, after = note_losses(result)
    assert after == before
    assert "the operator of step 0 is kept because it beat every later one on held-out text" in note
    assert "lower --learn-lr" in note
    worse = float(note.split("(step 4: ")[1].split(")")[0])
    assert worse > before + 0.1  # the LR really did make things worse
    # the written model is the step-0 operator: its held-out loss, computed independently, is step 0's, and
    # its weights are those learning 0 steps writes
    assert held_out_loss(tmp_path / "out", src, data) == pytest.approx(before, abs=1e-4)
    learn(str(src), tmp_path / "start", learn_steps=0, **kwargs)
    same_tensors(tmp_path / "out", tmp_path / "start")


def test_every_phase_of_grow_op_learn_prints_progress(trained, tmp_path, capsys):
    """Loading/placing, tokenizing, the step-0 evaluation, learning, each evaluation, the choice and the writing
    each print a line, so a long run is never silent."""
    src, data, _ = trained
    code, _, err = run_cli(["grow", src, tmp_path / "out", "--op", "learn", "--factor", "2", "--hidden-size", "128",
                            "--data", data, "--learn-steps", "4", "--seq-len", "64"], capsys)
    assert code == 0, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith(("LiGO: ", "writing "))]
    expected = [  # in this order, one line each
        f"LiGO: tokenizing {data} ...",
        "LiGO: .* tokens: .* training and .* held-out sequences of 64 \\(.* s\\)",
        "LiGO: placing the frozen source weights \\(float32\\) on the compute device ...",
        "LiGO: source placed on cpu \\(.* s\\)",
        "LiGO: held-out loss at step 0 on .* sequences ...",
        "LiGO: held-out loss at step 0: .* \\(.* s\\)",
        "LiGO: learning for 4 steps of 4 x 64 tokens: D at lr 0.015 \\(lr/2 source layers\\), 8 width matrices at "
        "lr .* \\(lr/fan-in\\); held-out "
        "loss at steps 1, 2, 3, 4",
        "LiGO: step 1/4: training loss .*, held-out .*, .* \\(.* s/step, evaluation .* s\\)",
        "LiGO: step 2/4: .*", "LiGO: step 3/4: .*", "LiGO: step 4/4: .*",
        "LiGO: kept the operator of step . \\(held-out loss .*\\)",
        f"writing .* in .* tensors to {tmp_path / 'out'} ...",
    ]
    import re

    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_width_matrices_step_by_lr_over_fan_in(trained):
    """D takes --learn-lr / L (L = 2 source layers); a width matrix [new, old] takes lr / old. The fan-ins of this
    model, by hand:
    hidden 64 units, FFN 128 units, 4 query heads, 2 key/value heads (each head matrix mixes whole heads)."""
    from hfgrow.growth.ligo.fit import GrownModel, param_groups

    src, _, _ = trained
    checkpoint, layout = open_model(src)
    roles = derive_roles(layout, checkpoint.tensors)
    sizes = resolve_sizes(roles, hidden_size=128)
    config = learned_width_plan(stack_plan(layout, checkpoint.tensors, [0, 1, 0, 1]), roles, sizes,
                                WidthExpansion(roles, sizes), "direct").config
    model = GrownModel.build(checkpoint, layout, config, [0, 1, 0, 1], roles=roles,
                             expansion=WidthExpansion(roles, sizes))
    try:
        lrs = {group["name"]: group["lr"] for group in param_groups(model, FitSettings(lr=0.01))}
        fan_in = {"hidden": 64, "ffn__intermediate_size": 128, "q": 4, "kv": 2}
        assert lrs == {"D": 0.01 / 2, **{f"B {space}__{side}": pytest.approx(0.01 / n) for space, n in fan_in.items()
                                         for side in ("write", "read")}}  # D: each row mixes the 2 source layers
        same = {group["name"]: group["lr"] for group in param_groups(
            model, FitSettings(lr=0.01, fan_in_scaling=False, depth_fan_in=False))}
        assert set(same.values()) == {0.01}  # the old rules: one LR for every matrix
    finally:
        model.close()


def test_the_cli_default_lr_is_the_library_default():
    from hfgrow.cli.grow import grow as grow_command
    from hfgrow.growth.ligo.fit import DEFAULT_LR

    option = next(p for p in grow_command.params if p.name == "learn_lr")
    assert option.default == DEFAULT_LR == FitSettings().lr


def test_every_file_of_a_ligo_folder_has_the_same_mode(trained, tmp_path):
    """safetensors wrote hfgrow_ligo.safetensors 0600 beside 0644 files; every file now has the umask's mode."""
    import os
    import stat

    src, data, _ = trained
    (src / "tokenizer.json").chmod(0o600)  # a private source file keeps no say over the published folder
    old = os.umask(0o022)
    try:
        learn(str(src), tmp_path / "out", data=[str(data)], factor=2, hidden_size=128, learn_steps=1, seq_len=64,
              quiet=True)
    finally:
        os.umask(old)
        (src / "tokenizer.json").chmod(0o644)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert SIDECAR in modes and "tokenizer.json" in modes
    assert set(modes.values()) == {0o644}, modes


def test_default_ligo_beats_gstack_on_a_deep_trained_source(tmp_path):
    """Issue 25: on deep sources the old rule (D at --learn-lr, whatever the number of source layers L it mixes)
    moved each grown weight by up to L x lr per step. With D at lr / L, 20 steps at the default lower the held-out
    loss of a trained 24-layer Llama grown to 48 below Gstack's (step 0 is exactly Gstack)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and the test is not slowed by other processes
    try:
        docs = python_docs_corpus(max_chars=120_000)
        src = tmp_path / "src"
        make_tokenizer(src, text="\n".join(docs[:40]), vocab_size=256)
        make_model(src, tiny_llama_config(layers=24, hidden_size=16, intermediate_size=32, num_attention_heads=1,
                                          num_key_value_heads=1), tokenizer=False)
        pretrain_tiny(src, docs, steps=60, seq_len=32, batch_size=8, lr=1e-2)
        data = tmp_path / "train.txt"
        data.write_text("\n\n".join(docs))
        checkpoint, layout = open_model(src)
        gstack = list(range(24)) * 2
        config = stack_plan(layout, checkpoint.tensors, gstack).config
        settings = FitSettings(steps=20, seq_len=32, batch_size=4, eval_sequences=32, evals=1)
        report = learn_growth(checkpoint, layout, config, gstack, [str(data)], settings, progress=False)
        checkpoint.close()
    finally:
        torch.set_num_threads(threads)
    assert set(report.evals) == {0, 20}
    assert report.evals[20] < report.evals[0] - 0.01, report.evals  # Gstack is step 0
    assert report.kept_step == 20
