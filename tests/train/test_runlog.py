"""A run's records: fresh runs start fresh logs, resumed runs keep what their checkpoint saw; one reader."""

from __future__ import annotations

import json

import pytest

from hfgrow.errors import HfgrowError
from hfgrow.train.runlog import LOG_FILE, OBSERVATIONS_FILE, RunLog, plot_run, read_run


def write_steps(folder, steps, resume_step=None, cut=False):
    with RunLog(folder, resume_step=resume_step, write=True) as log:
        log.start({"model": "grown", "n_params": 1000})
        if resume_step is None:  # evaluated before training
            log.eval(0, 0, {"web": 9.0, "code": 8.0}, mixture={"web": 1.0, "code": 0.0})
        for step in steps:
            log.train({"step": step, "loss": 10.0 - step, "tokens": 100 * step})
            if step % 2 == 0:
                log.eval(step, 100 * step, {"web": 9.0 - step, "code": 8.0 - step}, mixture={"web": 1.0, "code": 0.0})
    if cut:  # a kill in the middle of a line
        with open(folder / LOG_FILE, "a") as fh:
            fh.write('{"type": "train", "st')


def test_a_fresh_run_starts_fresh_logs(tmp_path):
    write_steps(tmp_path, [1, 2, 3], cut=True)  # killed before its first checkpoint
    write_steps(tmp_path, [1, 2])  # a new run in the same folder
    run = read_run(tmp_path)
    assert [r["step"] for r in run.train] == [1, 2] and [r["step"] for r in run.evals] == [0, 2]
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert len(lines) == 4  # no leftover of the first run: 2 steps + 2 evals
    # BiMix observations: trained domains only, after training steps only (L(r, s) has no value at s = 0)
    observations = [json.loads(line) for line in (tmp_path / OBSERVATIONS_FILE).read_text().splitlines()]
    assert observations == [{"mixture": {"web": 1.0}, "step": 2, "domain": "web", "loss": 7.0}]


def test_a_resumed_run_keeps_the_records_up_to_its_checkpoint(tmp_path):
    write_steps(tmp_path, [1, 2, 3, 4, 5], cut=True)  # killed after step 5; the checkpoint is at step 2
    write_steps(tmp_path, [3, 4], resume_step=2)
    run = read_run(tmp_path)
    assert [r["step"] for r in run.train] == [1, 2, 3, 4] and [r["step"] for r in run.evals] == [0, 2, 4]
    assert len((tmp_path / LOG_FILE).read_text().splitlines()) == 4 + 3  # each step and eval once
    assert [json.loads(line)["step"] for line in (tmp_path / OBSERVATIONS_FILE).read_text().splitlines()] == [2, 4]
    assert run.trained_tokens == 400 and run.n_params == 1000
    # the mean over the two domains: web 9 - step, code 8 - step
    assert run.eval_curve() == [(0, (9.0 + 8.0) / 2), (200, (7.0 + 6.0) / 2), (400, (5.0 + 4.0) / 2)]


def test_plot_needs_a_run_folder(tmp_path):
    with pytest.raises(HfgrowError, match="has no log.jsonl"):
        plot_run(tmp_path)
    write_steps(tmp_path, [1, 2])
    assert plot_run(tmp_path, x="flops").read_bytes()[:4] == b"\x89PNG"


def test_a_line_longer_than_any_record_is_skipped_whole(tmp_path):
    """The log is streamed line by line: a 3 MiB line (no record is that long) is skipped to its end, even where
    its tail would parse as a record, and the records around it are read; a resume's truncation keeps them."""
    write_steps(tmp_path, [1, 2])
    with open(tmp_path / LOG_FILE, "a") as fh:
        fh.write('{"junk": "' + "x" * (3 << 20) + '", "tail": ' + json.dumps({"type": "train", "step": 9}) + "}\n")
    write_steps(tmp_path, [3, 4], resume_step=2)
    run = read_run(tmp_path)
    assert [r["step"] for r in run.train] == [1, 2, 3, 4] and [r["step"] for r in run.evals] == [0, 2, 4]
    assert max(len(line) for line in (tmp_path / LOG_FILE).read_bytes().splitlines()) < 1000  # truncation: gone
