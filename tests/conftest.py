"""Tiny corpora that the tests write themselves, and tiny models trained on them once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from bilm.data import DataConfig
from bilm.models import ModelConfig
from bilm.train import TrainConfig, train

# Tiny models run fastest on one thread, and a busy 2-core machine makes more threads much slower.
torch.set_num_threads(1)

# In every sentence the animal (position 1) is decided only by its sound, four words later:
# a left-to-right model can only guess (1 in 4), a bidirectional one can know.
ANIMALS = {"cat": "meows", "dog": "barks", "cow": "moos", "owl": "hoots"}
FILLERS = ["then", "later", "again", "loudly", "softly"]


def animal_sentence(rng: random.Random) -> str:
    animal = rng.choice(sorted(ANIMALS))
    return f"the {animal} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {ANIMALS[animal]} ."


def write_corpus(root: Path, n_train: int = 600, n_held: int = 60, seed: int = 0) -> Path:
    """A folder corpus with train/valid/test.txt, one sentence per paragraph."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_held), ("test", n_held)):
        (root / f"{split}.txt").write_text("\n\n".join(animal_sentence(rng) for _ in range(n)) + "\n")
    return root


def run_records(run: Path, kind: str) -> list[dict]:
    """The records of one type ("train", "valid") in a run's metrics.jsonl."""
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def tiny_model(kind: str, **overrides) -> ModelConfig:
    return ModelConfig(**dict(dict(kind=kind, emb_size=16, hidden_size=32, layers=1, dropout=0.0), **overrides))


def tiny_train(**overrides) -> TrainConfig:
    # plateau: 300 steps leave a tiny model no room for a warmdown tail (the schedules have their own tests)
    cfg = dict(batch_size=16, bptt=12, lr=1e-2, max_steps=300, log_every=25, early_stop=0, epochs=1000)
    cfg["schedule"] = "plateau"
    cfg["precision"] = "fp32"  # the same numbers on every CPU; bf16 has its own tests (test_train_speed.py)
    cfg.update(overrides)
    return TrainConfig(**cfg)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("animals"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def trained(corpus, data_dir, tmp_path_factory) -> dict[str, Path]:
    """A uni and a bi run on the animal corpus (a few seconds each)."""
    runs = tmp_path_factory.mktemp("runs")
    out = {}
    for kind in ("uni", "bi"):
        out[kind] = runs / kind
        train(DataConfig(str(corpus)), tiny_model(kind), tiny_train(), out[kind], data_dir=data_dir, log=lambda s: None)
    return out
