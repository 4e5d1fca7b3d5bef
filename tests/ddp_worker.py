"""One process of a data-parallel test run, started by torchrun from tests/test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py '{"out": ..., ...}'

It trains the tests' tiny models through the Python API (`bilm.train.train`), so that the test can
ask for what the CLI does not offer (a record of every step).
"""

import json
import sys

from bilm.data import DataConfig
from bilm.train import train
from tests.conftest import tiny_model, tiny_train

if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    train(
        DataConfig(job["corpus"]),
        tiny_model(job["kind"], **job.get("model", {})),
        tiny_train(**job.get("train", {})),
        job["out"],
        data_dir=job["data_dir"],
        resume=job.get("resume", False),
        budget=job.get("budget"),
        log=print,
    )
