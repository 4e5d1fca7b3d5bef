"""bilm: predict words from both sides.

From Python (or a notebook):

    import bilm
    model = bilm.load("checkpoints/wt2-bi")
    model.fill("the boys went to the ___ and then got out of the pool .", k=5)
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load a checkpoint (or run directory) as a `Predictor` with `.predict()` and `.fill()`."""
    from .predict import Predictor

    return Predictor.load(path, device)
