"""Click option types shared by the commands: one definition, the same values and checks everywhere.

Every value is checked by click while the command line is parsed, so a typo or an
out-of-range number is a usage error (exit 2) before any corpus or checkpoint is read.
"""

from __future__ import annotations

import click

DEVICES = ("auto", "cpu", "cuda")


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter(f"CUDA is not available here (torch {torch.__version__}); use auto or cpu")
    return value


def device_option(default: str = "auto"):
    """`--device auto|cpu|cuda` for every command that runs a model; auto: CUDA when available, else the CPU."""
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=default,
        show_default=True,
        callback=_check_device,
        help="auto: CUDA when available, else the CPU.",
    )


positive = click.IntRange(min=1)
count = click.IntRange(min=0)
non_negative = click.FloatRange(min=0)
rate = click.FloatRange(min=0, min_open=True)  # learning rates, minutes: > 0
probability = click.FloatRange(min=0, max=1, max_open=True)  # dropout
vocab_size = click.IntRange(min=6)  # the five special tokens and at least one word


def comma_list(parse):
    """A click callback: `parse(text)` -> value, its BilmError a usage error (exit 2) at parse time."""
    from .errors import BilmError

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            parse(value)
        except BilmError as e:
            raise click.BadParameter(str(e)) from None
        return value

    return callback
