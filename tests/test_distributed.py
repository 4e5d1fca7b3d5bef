"""Data-parallel training (bilm/distributed.py): two `gloo` processes on loopback, started by torchrun
from the test, against one process with twice the batch; sharding of the batches; rank 0 alone writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bilm import distributed
from bilm.checkpoint import load_checkpoint
from bilm.cli import cli
from bilm.data import DataConfig, SentenceBatches, StreamBatches
from bilm.distributed import ONE
from bilm.train import train
from tests.conftest import tiny_model, tiny_train

TESTS = Path(__file__).resolve().parent
TIMEOUT = 240  # seconds for one torchrun job; a hang fails the test instead of the suite
STEPS = dict(log_every=1, eval_every=4)  # a record of every step, validation every 4


def torchrun(args: list[str], logs: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    """torchrun with each rank's stdout in `logs/.../<rank>/stdout.log`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["--log-dir", str(logs), "--redirects", "1", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS.parent))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen) -> str:
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]
    return output


def worker(job: dict, logs: Path) -> str:
    """Two processes training through the Python API (tests/ddp_worker.py)."""
    return finish(torchrun([str(TESTS / "ddp_worker.py"), json.dumps(job)], logs))


def rank_stdout(logs: Path, rank: int) -> str:
    (path,) = logs.glob(f"**/{rank}/stdout.log")
    return path.read_text()


def records(run: Path, kind: str) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    found = [r for r in found if r["type"] == kind]
    steps = [r["step"] for r in found]
    assert len(steps) == len(set(steps)), f"{kind} records written twice: {steps}"  # one writer
    return {r["step"]: r for r in found}


def assert_same_steps(a: Path, b: Path, steps: range) -> None:
    ta, tb = records(a, "train"), records(b, "train")
    assert [ta[s]["loss"] for s in steps] == pytest.approx([tb[s]["loss"] for s in steps], rel=1e-4)
    va, vb = records(a, "valid"), records(b, "valid")
    common = sorted(set(va) & set(vb) & set(steps))
    assert common, "no validation in common"
    assert [va[s]["loss"] for s in common] == pytest.approx([vb[s]["loss"] for s in common], rel=1e-4)


# -- sharding, in this process -------------------------------------------------------------


def test_ranks_read_the_rows_of_one_process_with_their_joint_batch():
    stream = np.arange(1000, dtype=np.uint16)
    whole = list(StreamBatches(stream, 8, 5)())
    shares = [list(StreamBatches(stream, 4, 5, rank=r, world=2)()) for r in (0, 1)]
    assert len(whole) == len(shares[0]) == len(shares[1])
    for joint, a, b in zip(whole, *shares, strict=True):
        assert torch.equal(joint.inputs, torch.cat([a.inputs, b.inputs]))
        assert torch.equal(joint.targets, torch.cat([a.targets, b.targets]))
    assert np.shares_memory(StreamBatches(stream, 4, 5, rank=1, world=2).inputs, stream)  # a view, not a copy


def test_sentence_batches_are_shared_evenly_and_none_is_empty():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=203)
    ends = np.cumsum(lengths)
    spans = np.stack([ends - lengths, ends], 1)
    ids = np.arange(int(ends[-1]), dtype=np.int64)
    make = lambda B, **kw: SentenceBatches(ids, spans, B, 80, 1, 2, 0, seed=3, chunk=50, pool=2, **kw)  # noqa: E731
    whole = list(make(8)(epoch=1))
    shares = [list(make(4, rank=r, world=2)(epoch=1)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(make(4, rank=0, world=2))
    for joint, a, b in zip(whole, *shares, strict=True):
        assert sorted(joint.lengths.tolist()) == sorted(a.lengths.tolist() + b.lengths.tolist())
    # 203 pieces in batches of 3 x 4 = 12: the last holds 11, shared by 3 ranks; with 101 ranks of 2 it would
    # hold 203 - 202 = 1 piece, fewer than the ranks, and is left out so that no rank waits with an empty batch
    threes = [list(make(4, rank=r, world=3)()) for r in range(3)]
    assert len({len(t) for t in threes}) == 1 and all(len(b.lengths) > 0 for t in threes for b in t)
    assert len(make(2, rank=0, world=101)) == len(list(make(2, rank=100, world=101)())) == 1


def test_a_resumed_run_keeps_its_effective_batch_on_another_number_of_processes():
    assert distributed.per_rank_batch(32, saved_world=2, world=1) == 64
    assert distributed.per_rank_batch(64, saved_world=1, world=4) == 16
    assert distributed.per_rank_batch(64, saved_world=1, world=3) == 64  # does not divide: the per-process batch


def test_one_process_is_a_group_of_one():
    loss, t = torch.tensor(2.5), torch.ones(2, 3, 4)
    assert ONE.share(loss, 7) == (loss, 7) and ONE.mean(1.5) == 1.5 and ONE.sum(1.0, 2) == [1.0, 2]
    assert ONE.gather_rows(t) is t and ONE.rows(t) is t and ONE.is_main and not distributed.launched()


# -- two processes, started by torchrun ------------------------------------------------------


def test_two_processes_take_the_steps_of_one_with_twice_the_batch_and_resume_on_either(corpus, data_dir, tmp_path):
    """2 x 8 rows = 1 x 16 rows, step for step; a 2-process run resumes in 1 process and vice versa."""
    quiet = lambda s: None  # noqa: E731
    job = dict(corpus=str(corpus), data_dir=str(data_dir), kind="uni")
    one = tmp_path / "one"  # the reference: one process, 16 rows, 12 steps
    train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(batch_size=16, max_steps=12, **STEPS), one,
          data_dir=data_dir, log=quiet)  # fmt: skip

    two = tmp_path / "two"  # two processes of 8 rows for 6 steps, then one process (16 rows) to 12
    worker(dict(job, out=str(two), train=dict(batch_size=8, max_steps=6, **STEPS)), tmp_path / "logs-a")
    assert "uni model" in rank_stdout(tmp_path / "logs-a", 0) and rank_stdout(tmp_path / "logs-a", 1) == ""
    assert sorted(p.name for p in two.iterdir()) == [".lock", "best", "last", "metrics.jsonl"]
    assert_same_steps(two, one, range(1, 7))
    train(out=two, data_dir=data_dir, resume=True, budget=dict(max_steps=12), log=quiet)
    assert json.loads((two / "last" / "config.json").read_text())["train"]["batch_size"] == 16
    assert_same_steps(two, one, range(1, 13))

    back = tmp_path / "back"  # one process of 16 rows for 6 steps, then two processes (8 rows each) to 12
    train(DataConfig(str(corpus)), tiny_model("uni"), tiny_train(batch_size=16, max_steps=6, **STEPS), back,
          data_dir=data_dir, log=quiet)  # fmt: skip
    worker(dict(job, out=str(back), resume=True, budget=dict(max_steps=12)), tmp_path / "logs-b")
    assert_same_steps(back, one, range(1, 13))


def test_torchrun_bilm_train_bi_writes_one_checkpoint_from_rank_0(corpus, data_dir, tmp_path):
    """The CLI under torchrun: the bi model of 2 x 8 sentences validates as one process of 16 does."""
    common = ["--model", "bi", "--corpus", corpus, "--max-steps", 10, "--layers", 1, "--hidden", 32, "--emb", 16]
    common = [str(a) for a in [*common, "--dropout", 0, "--data-dir", data_dir]]
    out, logs = tmp_path / "two", tmp_path / "logs"
    finish(torchrun(["-m", "bilm", "train", *common, "--batch-size", "8", "--out", str(out)], logs))
    assert "done: 10 steps" in rank_stdout(logs, 0) and rank_stdout(logs, 1) == ""
    assert sorted(p.name for p in out.iterdir()) == [".lock", "best", "last", "metrics.jsonl"]
    assert load_checkpoint(out).config["world_size"] == 2

    one = tmp_path / "one"
    result = CliRunner().invoke(cli, ["train", *common, "--batch-size", "16", "--out", str(one)])
    assert result.exit_code == 0, result.output
    assert records(out, "valid")[10]["loss"] == pytest.approx(records(one, "valid")[10]["loss"], rel=1e-4)


def _saved_step(run: Path) -> int:
    try:
        return json.loads((run / "last" / "metrics.json").read_text())["step"]
    except (OSError, ValueError, KeyError):  # not there yet, or being replaced
        return -1


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ranks = [int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the ranks' processes in /proc (Linux)")
@pytest.mark.parametrize("stop", ["kill -9 rank 1", "ctrl-c"])
def test_killing_one_rank_or_ctrl_c_ends_the_job_and_leaves_the_last_checkpoint_intact(
    stop, corpus, data_dir, tmp_path
):
    out = tmp_path / "run"
    job = dict(corpus=str(corpus), data_dir=str(data_dir), kind="uni", out=str(out))
    job["train"] = dict(batch_size=8, max_steps=None, epochs=10_000, eval_every=20, log_every=20)
    proc = torchrun([str(TESTS / "ddp_worker.py"), json.dumps(job)], tmp_path / "logs", start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while _saved_step(out) < 20:  # last/ of the first validation
            assert proc.poll() is None and time.monotonic() < deadline, "the job did not start training"
            time.sleep(0.2)
        ranks = {_rank_of(p): p for p in _children(proc.pid)}
        if stop == "ctrl-c":  # what a terminal does: SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(ranks[1], signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    for pid in ranks.values():  # torchrun ended the other rank too
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    checkpoint = load_checkpoint(out / "last")
    assert checkpoint.metrics["step"] >= 20 and checkpoint.config["world_size"] == 2
