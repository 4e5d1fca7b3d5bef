"""Peak memory of `bilm fill` / `predict` against the length of the text: flat, whatever the length.

    python scripts/bench_long_input.py --quick       # 1,000 and 20,000 words, both model kinds
    python scripts/bench_long_input.py               # 1,000 / 5,000 / 20,000 words, and the unbounded code

Each measurement runs in a fresh process: a model of the README's size (2x200 LSTM, 10,000-word
vocabulary, adaptive softmax; untrained: memory does not depend on the weights) answers one
text with a blank in the middle (fill: bi, or uni-left + uni-rescore of 50 candidates) and
one without (predict). The figure is the growth of the peak resident memory (ru_maxrss)
during those calls. The full run also measures the code without the bound (MAX_CONTEXT and
MAX_BATCH_TOKENS lifted) on 1,000 words only: it grows with length x shortlist (3.5 GB there),
and 20,000 words would need ~70 GB.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VOCAB = 10_000


def make_checkpoint(folder: Path, kind: str) -> Path:
    import torch

    from bilm.checkpoint import save_checkpoint
    from bilm.models import ModelConfig, build_model
    from bilm.tokenizer import Tokenizer

    words = [f"w{i}" for i in range(VOCAB - 5)]
    tok = Tokenizer.train([words])
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=len(tok), emb_size=200, hidden_size=200, layers=2)
    model = build_model(cfg)
    config = dict(data=dict(corpus=str(folder)), model=cfg.to_dict(), train={})
    return save_checkpoint(folder / kind, model, tok, config, {})


def measure(path: Path, words: int, unbounded: bool) -> dict:
    """In this process: peak memory growth (MB) while filling and predicting in a text of `words` words."""
    import torch

    import bilm
    from bilm import choices, predict

    torch.set_num_threads(1)
    if unbounded:
        predict.MAX_CONTEXT = choices.MAX_BATCH_TOKENS = 10**12  # read at call time
    p = bilm.load(path)
    rng = random.Random(0)
    text = [f"w{rng.randrange(VOCAB - 5)}" for _ in range(words)]
    blanked = list(text)
    blanked[words // 2] = "___"
    p.fill("w1 w2 ___ w3 .", k=5)  # warm up: allocator pools, kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    preds = p.fill(" ".join(blanked), k=5) + [p.predict(" ".join(text), k=5)]
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(growth_mb=(after - before) / 1024, peak_mb=after / 1024, seconds=seconds, notes=[x.note for x in preds])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 20,000 words only, bounded code only.")
    ap.add_argument("--measure", nargs=3, metavar=("CHECKPOINT", "WORDS", "UNBOUNDED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        path, words, unbounded = args.measure
        print(json.dumps(measure(Path(path), int(words), unbounded == "1")))
        return 0
    lengths = [1_000, 20_000] if args.quick else [1_000, 5_000, 20_000]
    modes = [False] if args.quick else [False, True]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'model':<5} {'code':<10} {'words':>7} {'peak growth':>12} {'peak':>9} {'seconds':>8}")
        for kind in ("uni", "bi"):
            ckpt = make_checkpoint(Path(tmp), kind)
            for unbounded in modes:
                for words in lengths if not unbounded else lengths[:1]:
                    cmd = [sys.executable, __file__, "--measure", str(ckpt), str(words), "1" if unbounded else "0"]
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode != 0:
                        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                        print(f"{kind:<5} {'unbounded' if unbounded else 'bounded':<10} {words:>7,} failed: {tail}")
                        continue
                    r = json.loads(done.stdout)
                    print(
                        f"{kind:<5} {'unbounded' if unbounded else 'bounded':<10} {words:>7,} "
                        f"{r['growth_mb']:>9.0f} MB {r['peak_mb']:>6.0f} MB {r['seconds']:>8.2f}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
