"""`--threads` (env `BILM_THREADS`): one option, shared by every command.

The default is one thread. These models are small (2 x 200 LSTM): a step is many short
matrix products, and OpenMP threads wait for each other at every one of them. When
another process holds a core, a second thread that loses its core stalls the first at
each barrier: `scripts/bench_threads.py` measures one against two side by side (see
the README's "Threads" section for the figures and the machine).
"""

from __future__ import annotations

import click

DEFAULT_THREADS = 1
HELP = "CPU threads for torch (env BILM_THREADS). More than 1 only helps on cores that nothing else uses."


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _apply(ctx, param, value):
    if value is not None and not ctx.resilient_parsing:
        set_threads(value)
    return value


def threads_option(expose_value: bool = False):
    """The `--threads` option; it sets torch's threads as it is parsed (and passes the value on if asked)."""
    return click.option(
        "--threads",
        type=click.IntRange(1),
        default=DEFAULT_THREADS,
        show_default=True,
        envvar="BILM_THREADS",
        expose_value=expose_value,
        callback=_apply,
        help=HELP,
    )
