"""Time the two costs of the gradient lab.

    .venv/bin/python scripts/bench_gradients.py measure --kind uni --count 250 --lengths 10,20,40,80
    .venv/bin/python scripts/bench_gradients.py penalty --steps 20

measure   `gradients.profile` on an untrained model of the default WikiText-2 shape (2 x 200 LSTM,
          33,278 words, adaptive softmax; timing does not depend on the weights), without and with
          the hidden-state gradients.
penalty   seconds per training step through bilm's Trainer, plain and with the norm-preserving
          penalty (remedies.py): that uni model on random ids (batch 64, bptt 35), and the adding
          problem at T=200 (128 units, batch 50) per cell.
"""

from __future__ import annotations

import argparse
import time

import torch

from bilm.gradients import profile
from bilm.models import Batch, ModelConfig, build_model
from bilm.synthetic import run_bench
from bilm.train import TrainConfig, Trainer

VOCAB = 33_278


def measure(args) -> None:
    lengths = [int(n) for n in args.lengths.split(",")]
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=args.kind, vocab_size=VOCAB, cell=args.cell))
    stream = torch.randint(5, VOCAB, (2_000_000,))
    for hidden in (False, True):
        start = time.perf_counter()
        profile(model, stream, lengths, args.count, args.batch_size, hidden=hidden)
        print(
            f"{args.kind} {args.cell}: {args.count * len(lengths)} windows (lengths {args.lengths}), "
            f"hidden={hidden}: {time.perf_counter() - start:.1f} s on {torch.get_num_threads()} threads"
        )


def lm_step_seconds(weight: float, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="uni", vocab_size=VOCAB))

    def batches(epoch, start):
        for _ in range(start, steps):
            ids = torch.randint(5, VOCAB, (64, 36))
            yield Batch(ids[:, :-1], ids[:, 1:])

    cfg = TrainConfig(max_steps=steps, epochs=1, norm_penalty=weight, log_every=0, device="cpu")
    trainer = Trainer(
        model, cfg, batches, steps, lambda m: {"loss": 0.0, "ppl": 1.0}, torch.device("cpu"), log=lambda line: None
    )
    return trainer.fit()["train_seconds"] / steps


def penalty(args) -> None:
    for weight in (0.0, 1.0):
        print(
            f"uni 2x200 lstm, batch 64 x 35, norm_penalty={weight:g}: {lm_step_seconds(weight, args.steps):.3f} s/step"
        )
    for cell in args.cells.split(","):
        for weight in (0.0, 1.0):
            r = run_bench(
                "adding", cell, 200, steps=args.steps, eval_every=args.steps, norm_penalty=weight, log=lambda line: None
            )
            print(f"adding T=200 {cell}, batch 50, norm_penalty={weight:g}: {r['seconds'] / r['steps']:.3f} s/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["measure", "penalty"])
    parser.add_argument("--kind", default="uni", choices=["uni", "bi"])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--count", type=int, default=250, help="windows per length")
    parser.add_argument("--lengths", default="10,20,40,80")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timing (penalty)")
    parser.add_argument("--cells", default="lstm,rnn-tanh", help="adding-problem cells (penalty)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (measure if args.what == "measure" else penalty)(args)


if __name__ == "__main__":
    main()
