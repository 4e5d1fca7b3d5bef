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

A directory is written under a temporary name, flushed to disk and renamed into
place, so a crash, a kill or a full disk mid-write leaves the previous checkpoint
intact (a kill between the two renames leaves it as `.last.old`, which the next
read or save puts back). `run/.lock` keeps a second trainer out of a running run.
Before a model is built, its config is checked against the tensor shapes in the
`model.safetensors` header, so a config that disagrees with its weights is a
one-line error, never a huge allocation.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from . import textnorm
from .cells import CELLS
from .errors import BilmError
from .machine import resolve_device
from .models import LanguageModel, ModelConfig, build_model
from .tokenizer import Tokenizer

FORMAT = 1
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
MAX_HEADER = 100_000_000  # bytes: safetensors' own limit for the JSON header


class SaveError(BilmError):
    """A checkpoint could not be written (disk full, quota, I/O error); the previous one is intact."""


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
    recover(path)
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "last"):
        recover(path / sub)
        if (path / sub / "config.json").is_file():
            return path / sub
    raise BilmError(f"{path} is not a bilm checkpoint (no config.json, best/ or last/)")


def _on_cpu(model: LanguageModel) -> LanguageModel:
    """The model itself on CPU; a CPU copy elsewhere, since cuDNN packs RNN weights into one shared buffer
    that safetensors refuses to save as separate tensors."""
    if all(p.device.type == "cpu" for p in model.parameters()):
        return model
    return copy.deepcopy(model).cpu()


def save_checkpoint(
    path: str | Path,
    model: LanguageModel,
    tokenizer: Tokenizer,
    config: dict,
    metrics: dict,
    trainer_state: dict | None = None,
) -> Path:
    """Write the checkpoint folder `path` atomically; `SaveError` (previous checkpoint intact) if the disk fails."""
    path = Path(path)
    recover(path)
    old = path.with_name(f".{path.name}.old")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}-*"):  # a killed save's half-written folder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    except OSError as e:
        raise SaveError(_save_failed(path, e)) from None
    try:
        config = dict(config, format=FORMAT, text_style=tokenizer.style)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(_on_cpu(model), str(tmp / "model.safetensors"))
        tokenizer.save(tmp / "tokenizer.json")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if trainer_state is not None:
            tensors: dict[str, torch.Tensor] = {}
            (tmp / "trainer.json").write_text(json.dumps(_flatten(trainer_state, "s", tensors)))
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "trainer.safetensors"))
        _publish_mode(tmp)
        _sync(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        _sync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        recover(path)
        if isinstance(e, OSError):
            raise SaveError(_save_failed(path, e)) from None
        raise
    return path


def _save_failed(path: Path, e: OSError) -> str:
    why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    kept = f"; the previous {path} is intact" if (path / "config.json").is_file() else ""
    return f"could not save {path}: {why}{kept}"


def recover(path: Path) -> None:
    """Put back `.NAME.old` when a kill came between the two renames of a save (no `NAME` left)."""
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and (old / "config.json").is_file():
        try:
            old.rename(path)
        except OSError:
            pass


def _sync(directory: Path) -> None:
    """Flush a folder's files, then the folder itself: after a power cut the renamed checkpoint has its data."""
    for f in [*(f for f in directory.iterdir() if f.is_file()), directory]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def text_style(config: dict) -> str:
    """How the checkpoint's corpus was tokenized (textnorm); checkpoints before styles: by the corpus name."""
    return config.get("text_style") or textnorm.style_for_corpus(config.get("data", {}).get("corpus", ""))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    device = resolve_device(device)
    path = resolve(path)
    config = read_config(path)
    tokenizer = Tokenizer.load(path / "tokenizer.json", text_style(config))
    cfg = model_config(path, config)
    if cfg.vocab_size != len(tokenizer):
        raise BilmError(
            f"checkpoint {path}: tokenizer has {len(tokenizer)} words but config.json says vocab_size={cfg.vocab_size}"
        )
    check_weights(path, cfg)
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


def model_config(path: Path, config: dict) -> ModelConfig:
    """The model section of a checkpoint's config.json, or a one-line error."""
    try:
        return ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise BilmError(f"checkpoint {path}: config.json has no valid model section ({e})") from None


# -- config vs weights, from the safetensors header alone ---------------------------------


def read_header(file: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (8-byte length, then JSON); no tensor is read."""
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(size - 8, MAX_HEADER):
                raise ValueError(f"header length {n} in a file of {size} bytes")
            header = json.loads(f.read(n))
        return {k: [int(d) for d in v["shape"]] for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BilmError(f"checkpoint {file.parent}: {file.name} is corrupt ({e})") from None


def expected_shapes(cfg: ModelConfig) -> list[tuple[list[str], list[int]]]:
    """(names, shape) of every tensor the model of `cfg` holds; tied tensors share one entry.

    Built on the meta device: nothing is allocated, whatever sizes the config names.
    """
    with torch.device("meta"):
        model = build_model(cfg)
    groups: dict[int, tuple[list[str], list[int]]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), ([], list(t.shape)))[0].append(name)
    return list(groups.values())


def weight_mismatch(header: dict[str, list[int]], cfg: ModelConfig) -> str | None:
    """How the weights in `header` disagree with the model `cfg` describes; None when they match."""
    try:
        expected = expected_shapes(cfg)
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        return f"config.json describes no valid model ({e})"
    known = set()
    for names, shape in expected:
        known.update(names)
        present = [n for n in names if n in header]
        if not present:
            return f"{names[0]} is missing from model.safetensors"
        for n in present:
            if header[n] != shape:
                return f"{n} has shape {header[n]} in model.safetensors, but config.json implies {shape}"
    extra = sorted(set(header) - known)
    return f"model.safetensors holds {extra[0]}, which config.json's model has no place for" if extra else None


def check_weights(path: Path, cfg: ModelConfig) -> None:
    """A one-line error naming the config field when config.json and model.safetensors disagree."""
    header = read_header(path / "model.safetensors")
    problem = weight_mismatch(header, cfg)
    if problem is None:
        return
    for field, value in _single_field_fixes(header, cfg):
        if weight_mismatch(header, replace(cfg, **{field: value})) is None:
            raise BilmError(
                f"checkpoint {path}: config.json says {field}={getattr(cfg, field)!r} but model.safetensors "
                f"holds the weights of {field}={value!r}; the two files do not belong together"
            )
    raise BilmError(f"checkpoint {path}: config.json does not match model.safetensors: {problem}")


def _single_field_fixes(header: dict[str, list[int]], cfg: ModelConfig) -> Iterator[tuple[str, object]]:
    """Candidate (field, value) pairs that could explain a mismatch, each to be tried alone."""
    dims = sorted({d for shape in header.values() for d in shape})
    for field in ("vocab_size", "emb_size", "hidden_size"):
        yield from ((field, d) for d in dims if d != getattr(cfg, field))
    yield from (("layers", n) for n in range(1, 9) if n != cfg.layers)
    yield from (("kind", k) for k in ("uni", "bi") if k != cfg.kind)
    yield from (("cell", c) for c in CELLS if c != cfg.cell)
    yield from (("output", o) for o in ("adaptive", "full") if o != cfg.output)
    yield ("adaptive_input", not cfg.adaptive_input)
    yield ("tie_weights", not cfg.tie_weights)
    yield ("unigram_bias", not cfg.unigram_bias)


# -- one writer per run folder ------------------------------------------------------------


@contextmanager
def lock_run(out: Path) -> Iterator[None]:
    """Hold `out/.lock` while training: a second `bilm train` on `out` is refused with a one-line error.

    An advisory `flock`: the kernel drops it when its process dies, so a crashed or killed
    run never leaves the folder locked (its stale file is simply locked again).
    """
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise BilmError(
                f"{out} is in use by a running bilm train ({holder}): wait for it to end or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
