"""bilm: predict words from both sides.

From Python (or a notebook):

    import bilm
    model = bilm.load("checkpoints/wt2-bi")
    model.fill("the boys went to the ___ and then got out of the pool .", k=5)
"""

import os

__version__ = "0.1.0"

# Large CPU tensors on 2 MB pages. A training step allocates and frees tens of MB of activations and
# logits; on 4 kB pages each new one page-faults thousands of times, and in a virtual machine a fault can
# cost tens of microseconds (scripts/bench_hugepages.py). PyTorch reads this once, at its first large
# allocation, so it is set before torch is imported; a user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def load(path, device: str = "cpu"):
    """Load a checkpoint (or run directory) as a `Predictor` with `.predict()` and `.fill()`."""
    from .predict import Predictor

    return Predictor.load(path, device)
