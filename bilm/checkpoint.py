"""Checkpoints: a plain directory, written atomically, loaded without unpickling.

    run/                 what `bilm train --out run` writes
      metrics.jsonl      one JSON record per log interval and per validation
      best/              the best validation so far
      last/              the latest state, with everything `--resume` needs
        config.json      data + model + train config, format version, command line
        model.safetensors
        tokenizer.json
        metrics.json     summary figures at save time
        trainer.json     counters, scheduler, optimizer hyper-parameters (last/ only)
        trainer.safetensors  optimizer moments, RNG state, carried hidden state (last/ only)

A directory is written under a temporary name and renamed into place, so a crash
or Ctrl-C mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from .errors import BilmError
from .models import LanguageModel, ModelConfig, build_model
from .tokenizer import Tokenizer

FORMAT = 1
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


@dataclass
class Checkpoint:
    path: Path
    model: LanguageModel
    tokenizer: Tokenizer
    config: dict
    metrics: dict


def resolve(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its `best/`, else its `last/`)."""
    path = Path(path)
    if not path.exists():
        raise BilmError(f"checkpoint {path} not found")
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "config.json").is_file():
            return path / sub
    raise BilmError(f"{path} is not a bilm checkpoint (no config.json, best/ or last/)")


def save_checkpoint(
    path: str | Path,
    model: LanguageModel,
    tokenizer: Tokenizer,
    config: dict,
    metrics: dict,
    trainer_state: dict | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(dict(config, format=FORMAT), indent=2))
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save(tmp / "tokenizer.json")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if trainer_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            (tmp / "trainer.json").write_text(json.dumps(_flatten(trainer_state, "s", tensors)))
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "trainer.safetensors"))
        _publish_mode(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _publish_mode(directory: Path) -> None:
    """mkdtemp makes 0700: give the checkpoint the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for f in directory.iterdir():
        f.chmod(0o666 & ~umask)


def read_config(path: str | Path) -> dict:
    path = resolve(path)
    for name in REQUIRED:
        if not (path / name).is_file():
            raise BilmError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BilmError(f"checkpoint {path}: config.json is corrupt ({e})") from None
    if config.get("format") != FORMAT:
        raise BilmError(f"checkpoint {path} has format {config.get('format')!r}; this bilm reads format {FORMAT}")
    return config


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    path = resolve(path)
    config = read_config(path)
    tokenizer = Tokenizer.load(path / "tokenizer.json")
    try:
        cfg = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError) as e:
        raise BilmError(f"checkpoint {path}: config.json has no valid model section ({e})") from None
    if cfg.vocab_size != len(tokenizer):
        raise BilmError(
            f"checkpoint {path}: tokenizer has {len(tokenizer)} words but the model expects {cfg.vocab_size}"
        )
    model = build_model(cfg)
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise BilmError(
            f"checkpoint {path}: model.safetensors is corrupt or does not match config.json ({e})"
        ) from None
    if missing or unexpected:
        raise BilmError(f"checkpoint {path}: weights do not match config.json (missing {missing}, extra {unexpected})")
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    model.to(device).eval()
    return Checkpoint(path, model, tokenizer, config, metrics)


def load_trainer_state(path: str | Path) -> dict:
    path = Path(path)
    if not (path / "trainer.json").is_file() or not (path / "trainer.safetensors").is_file():
        raise BilmError(f"{path} holds no trainer state to resume from")
    try:
        tensors = load_file(str(path / "trainer.safetensors"))
        return _unflatten(json.loads((path / "trainer.json").read_text()), tensors)
    except (SafetensorError, json.JSONDecodeError, KeyError) as e:
        raise BilmError(f"checkpoint {path}: trainer state is corrupt ({e})") from None


def _flatten(obj, key: str, tensors: dict):
    """JSON-able copy of nested state with tensors moved into `tensors` (no pickle anywhere)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    return obj


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj
