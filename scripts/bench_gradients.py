"""Time the gradient measurement: N windows of each length through a default-sized model.

    .venv/bin/python scripts/bench_gradients.py --kind uni --cell lstm --count 250 --lengths 10,20,40,80

The model is untrained (timing does not depend on the weights) with the default
WikiText-2 shape: 2 x 200 LSTM, 33,278 words, adaptive softmax. Prints seconds per
configuration, with and without the hidden-state gradients.
"""

from __future__ import annotations

import argparse
import time

import torch

from bilm.gradients import profile
from bilm.models import ModelConfig, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="uni", choices=["uni", "bi"])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--count", type=int, default=250, help="windows per length")
    parser.add_argument("--lengths", default="10,20,40,80")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(n) for n in args.lengths.split(",")]
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=args.kind, vocab_size=33_278, cell=args.cell))
    stream = torch.randint(5, 33_278, (2_000_000,))
    for hidden in (False, True):
        start = time.perf_counter()
        profile(model, stream, lengths, args.count, args.batch_size, hidden=hidden)
        seconds = time.perf_counter() - start
        print(
            f"{args.kind} {args.cell}: {args.count * len(lengths)} windows (lengths {args.lengths}), "
            f"hidden={hidden}: {seconds:.1f} s on {torch.get_num_threads()} threads"
        )


if __name__ == "__main__":
    main()
