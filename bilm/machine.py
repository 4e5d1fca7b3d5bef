"""What machine this is: every figure bilm prints or writes names the CPU it came from."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .errors import BilmError


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), or what `platform` knows elsewhere."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU (empty where `/proc/cpuinfo` is missing)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def describe(device: torch.device | None = None) -> str:
    """The processor a figure came from: the GPU's name on CUDA, else the CPU's model and logical CPUs."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` is CUDA when present, else the CPU; asking for CUDA without it is a one-line error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BilmError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)
