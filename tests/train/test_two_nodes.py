"""A run on two machines whose --output-dir folders are disks of their own (issue 22): growth, checkpoints, resume.

Each "machine" is one `accelerate launch --num_machines 2 --machine_rank R` on this host (CPU, gloo), with its own
--output-dir, as on nodes with local disks. In process: the byte stream that carries the weights to another node.
As subprocesses (a 2-layer tiny Llama from a config-only folder, 6 steps of 128 tokens, --grow stack:2 before step
3): DDP against 1 process with the same global batch, a kill after the growth and a resume on both nodes, and FSDP2
(the other node gets the weights from the main process). ~1-2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.errors import HfgrowError
from hfgrow.train.growth import byte_chunks, copy_pieces
from helpers.launch import launch_continue, launch_nodes

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_model, make_text  # noqa: E402  (the tiny Llama and text of the training tests)

# 4 sequences x 32 tokens = 128 tokens per step; the growth at 384 tokens comes before step 4 (after 3 steps)
RUN = ("--seq-len", "32", "--max-steps", "6", "--save-steps", "2", "--eval-steps", "3", "--eval-sequences", "2",
       "--lr", "3e-3", "--warmup-steps", "2", "--grow", "stack:2@384")


def test_weights_cross_as_chunks_of_bytes_bit_for_bit():
    """The tensors' bytes cut into chunks (7 bytes: pieces of one tensor in several chunks, several tensors in one)
    and put back give every tensor again, whatever its dtype or shape."""
    torch.manual_seed(0)
    sent = [torch.randn(3, 5), torch.randn(4).to(torch.bfloat16), torch.arange(5), torch.tensor(2.5),
            torch.empty(0, 3), torch.tensor([True, False, True])]
    got = [torch.empty_like(t) for t in sent]
    views = [[t.reshape(-1).view(torch.uint8) for t in ts] for ts in (sent, got)]
    sizes = [v.numel() for v in views[0]]
    assert [sum(p[3] for p in pieces) for pieces in byte_chunks(sizes, 7)][:-1] == [7] * (sum(sizes) // 7)
    chunk = torch.empty(7, dtype=torch.uint8)
    for pieces in byte_chunks(sizes, 7):
        chunk.zero_()
        copy_pieces(pieces, views[0], chunk, to_chunk=True)
        copy_pieces(pieces, views[1], chunk, to_chunk=False)
    for a, b in zip(sent, got):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_one_writer_for_each_disk_whatever_the_nodes_share(tmp_path, monkeypatch):
    """Five processes on four nodes (A: processes 0 and 1; B: 2; C: 3; D: 4); A and B share one folder, C and D
    another. One process writes each folder, the first of its nodes; the markers are gone after every call.
    (Threads stand for the processes; accelerate's collectives are replaced by the same exchanges between them.)"""
    import threading
    from types import SimpleNamespace

    import accelerate.utils

    from hfgrow.train.growth import writes_output

    folders = [tmp_path / "ab", tmp_path / "ab", tmp_path / "ab", tmp_path / "cd", tmp_path / "cd"]
    local_main = [True, False, True, True, True]
    barrier, slots, me = threading.Barrier(5), [None] * 5, threading.local()

    def exchange(value):  # every process's value, in rank order
        slots[me.rank] = value
        barrier.wait()
        every = list(slots)
        barrier.wait()
        return every

    monkeypatch.setattr(accelerate.utils, "gather_object", lambda obj: [x for part in exchange(obj) for x in part])
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda objs, from_process=0: exchange(objs)[0])
    found = {}

    def process(rank: int) -> None:
        me.rank = rank
        accelerator = SimpleNamespace(num_processes=5, process_index=rank, is_main_process=rank == 0,
                                      is_local_main_process=local_main[rank], wait_for_everyone=barrier.wait)
        found[rank] = [writes_output(accelerator, folders[rank]) for _ in range(2)]

    threads = [threading.Thread(target=process, args=(r,)) for r in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert found == {0: [True, True], 1: [False, False], 2: [False, False], 3: [True, True], 4: [False, False]}
    assert not list((tmp_path / "ab").iterdir()) and not list((tmp_path / "cd").iterdir())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("nodes")
    docs = make_text(300, 1)
    (root / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    make_model(root / "small", layers=2, tokenizer_text="\n".join(docs))
    (root / "base").mkdir()  # config and tokenizer, no weights: the run starts from the seeded random init
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "small" / name, root / "base" / name)
    return root


def args(env: Path, out: str, batch: int, *extra: str) -> list[str]:
    return ["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(env / out),
            "--batch-size", str(batch), *RUN, *extra]


def two_nodes(env: Path, name: str, *extra: str, config: str = "multi_cpu.yaml", env_extra: dict | None = None,
              code: int | None = 0) -> list:
    """Node R writes into ``env/name-R``; ``code``: the exit status both must end with (None: not 0)."""
    results = launch_nodes([args(env, f"{name}-{r}", 2, *extra) for r in (0, 1)], config=config,
                           env_extra=env_extra, timeout=600)
    for r in results:
        assert (r.returncode != 0) if code is None else r.returncode == code, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    return results


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def same_losses(one: Path, two: Path) -> None:
    """1 process x 4 sequences = 2 x 2 within float tolerance (the summation order differs), as the 2-process tests."""
    a, b = records(one, "train"), records(two, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    assert [r["stage"] for r in b] == [0, 0, 0, 1, 1, 1]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-5 * abs(x["loss"]) and abs(x["grad_norm"] - y["grad_norm"]) < 1e-4


def same_folder(a: Path, b: Path) -> None:
    """The same files, byte for byte; the recipe's creation time (to the second) aside."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for path in a.iterdir():
        x, y = path.read_bytes(), (b / path.name).read_bytes()
        if path.name == "hfgrow.yaml":
            x, y = ([line for line in t.splitlines() if not line.startswith(b"created:")] for t in (x, y))
        assert x == y, path.name


@pytest.fixture(scope="module")
def one(env):
    launch_continue(args(env, "one", 4), timeout=600)
    return env / "one"


@pytest.fixture(scope="module")
def nodes(env):
    two_nodes(env, "ddp")
    return env / "ddp-0", env / "ddp-1"


def test_each_node_grows_into_its_own_folder_and_trains_as_one_process(env, one, nodes):
    main, other = nodes
    same_losses(one, main)
    assert json.loads((main / "run.json").read_text())["world_size"] == 2
    (growth,) = records(main, "growth")
    assert (growth["step"], growth["layers_before"], growth["layers_after"]) == (3, 2, 4)
    # both nodes hold the stage folders, the same (the growth is seeded: each node grows its own copy)
    for name in ("stage-0", "grown-1"):
        same_folder(main / name, other / name)
    # and every checkpoint: the model, optimizer and state written by each node's process, the RNG state its own
    for step in (4, 6):  # --save-total-limit 2
        a, b = main / f"checkpoint-{step}", other / f"checkpoint-{step}"
        assert {p.name for p in a.iterdir()} ^ {p.name for p in b.iterdir()} == {"random_states_0.pkl",
                                                                                "random_states_1.pkl"}
        for name in ("model.safetensors", "optimizer.bin", "hfgrow_state.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (step, name)
    assert json.loads((other / "checkpoint-4" / "hfgrow_state.json").read_text())["stage"] == 1
    # the run's records and final/ on the main node only; each process's sample where it ran; nothing left over
    assert all((main / n).exists() for n in ("log.jsonl", "run.json", "final"))
    assert not any((other / n).exists() for n in ("log.jsonl", "run.json", "final"))
    assert [p.name for p in (main / "ranks").iterdir()] == ["rank-00000.json"]
    assert [p.name for p in (other / "ranks").iterdir()] == ["rank-00001.json"]
    assert not [p for d in nodes for p in d.iterdir() if p.name.startswith(".")]  # no markers, no .tmp-checkpoint


def test_both_nodes_resume_after_the_growth_from_their_own_folders(env, nodes):
    """Killed at step 5 (after the growth; checkpoint-4 in the grown stage), resumed on both nodes: the unbroken
    run's losses exactly. Nodes that found different checkpoints are refused in one sentence."""
    two_nodes(env, "killed", env_extra={"HFGROW_DEBUG_KILL_AT_STEP": "5"}, code=None)
    main, other = env / "killed-0", env / "killed-1"
    assert (other / "grown-1").is_dir() and not (other / "checkpoint-6").exists()
    shutil.move(other / "checkpoint-4", env / "aside")
    results = two_nodes(env, "killed", "--resume", code=1)
    assert ("error: the nodes' --output-dir folders hold different checkpoints: process 0 resumes from checkpoint-4, "
            "process 1 from checkpoint-2;") in results[0].stderr
    shutil.move(env / "aside", other / "checkpoint-4")
    two_nodes(env, "killed", "--resume")
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in records(main, "train")] == \
        [(r["loss"], r["grad_norm"], r["lr"]) for r in records(nodes[0], "train")]


def test_fsdp2_the_other_node_gets_the_weights_from_the_main_one(env, one):
    """Under FSDP2 only the main process holds the gathered weights: the other node's writer gets them over the
    process group and grows the same folder. The checkpoints stay sharded, each node holding its own processes'
    shards: reading one node's copy says so; with the nodes' files of it on both, it exports, and both resume
    from it (killed at step 5) to 1 process's losses."""
    from hfgrow.train.export import load_checkpoint_weights

    two_nodes(env, "fsdp", "--no-export", config="fsdp2_cpu.yaml", env_extra={"HFGROW_DEBUG_KILL_AT_STEP": "5"},
              code=None)
    main, other = env / "fsdp-0", env / "fsdp-1"
    for name in ("stage-0", "grown-1"):
        same_folder(main / name, other / name)
    with pytest.raises(HfgrowError, match="spread over them, each node holding its processes' shards"):
        load_checkpoint_weights(main / "checkpoint-4")
    for a, b in ((main, other), (other, main)):
        shutil.copytree(a / "checkpoint-4", b / "checkpoint-4", dirs_exist_ok=True)
    assert load_checkpoint_weights(main / "checkpoint-4").keys() >= {"model.layers.3.mlp.up_proj.weight"}
    two_nodes(env, "fsdp", "--no-export", "--resume", config="fsdp2_cpu.yaml")
    same_losses(one, main)
