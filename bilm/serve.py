"""`bilm serve`: the fill-in page and a JSON API over the loaded checkpoints.

    GET  /          one self-contained page (bilm/serve.html: no CDN, works offline)
    POST /fill      {"text": "the ___ sat .", "k": 10, "choices": ["cat", "dog"], "model": "demo-bi"}
    POST /predict   the same body; the next word after the text
    GET  /models    what is loaded: kind, corpus, size, training minutes, validation figure
    GET  /health    {"status": "ok", ...}
    GET  /docs      OpenAPI docs (FastAPI's; Swagger's script comes from its CDN)

/fill and /predict answer exactly what `bilm fill --json` / `bilm predict --json` print:
the same `Predictor`, the same `Prediction.to_dict()`. The app itself is in serve_app.py;
this module loads the models, runs inference and the command.

One model instance per checkpoint, used by one inference thread (`Batcher`): requests that
arrive while it is busy are answered together, one padded forward pass per model and
setting (`Predictor.fill_many`). `--max-batch 1` serialises them; scripts/bench_serve.py
measures both.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from .errors import BilmError
from .options import device_option
from .threads import threads_option

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .predict import Predictor

MAX_K = 1000
MAX_WORDS = 1000  # a sentence, a paragraph: longer texts are refused with 413
MAX_CHARS = 20 * MAX_WORDS
DEFAULT_BATCH = 8


@dataclass
class Served:
    """A loaded checkpoint under the name the API and the page use."""

    name: str
    predictor: Predictor
    info: dict = field(default_factory=dict)


def model_info(name: str, p: Predictor) -> dict:
    """What the page's line under a model says: kind, corpus, size, training time, validation figure."""
    cfg, m, data = p.model.cfg, p.ckpt.metrics, p.ckpt.config.get("data", {})
    valid = m.get("best_valid_ppl") or m.get("valid_ppl")
    return {
        "name": name,
        "kind": p.kind,
        "path": str(p.ckpt.path),
        "methods": ["bi", "bi-rescore"] if p.kind == "bi" else ["uni-left", "uni-rescore"],
        "corpus": data.get("corpus"),
        "cell": cfg.cell,
        "layers": cfg.layers,
        "hidden": cfg.hidden_size,
        "parameters": sum(x.numel() for x in p.model.parameters()),
        "vocabulary": len(p.tokenizer),
        "steps": m.get("step"),
        "train_tokens": m.get("train_tokens"),
        "minutes": round(m["wall_seconds"] / 60, 1) if "wall_seconds" in m else None,
        "valid": valid,
        # the bi figure predicts each word from both sides: not comparable with uni's perplexity
        "valid_label": "valid pseudo-perplexity" if p.kind == "bi" else "valid perplexity",
    }


def load_models(paths: list[str], device: str = "cpu") -> list[Served]:
    """Load each checkpoint once; named after its run folder (`checkpoints/demo-bi` -> demo-bi)."""
    from .checkpoint import resolve
    from .machine import resolve_device
    from .predict import Predictor

    device = str(resolve_device(device))  # auto: CUDA when available
    served, names = [], set()
    for path in paths:
        folder = resolve(path)
        base = folder.parent.name if folder.name in ("best", "last") else folder.name
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.add(name)
        p = Predictor.load(folder, device)
        served.append(Served(name, p, model_info(name, p)))
    return served


@dataclass
class Job:
    model: Served
    op: str  # fill | predict
    text: str
    k: int
    choices: tuple[str, ...] | None
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> tuple:
        return (self.model.name, self.op, self.k, self.choices)


class Batcher:
    """The one thread that runs the models: it takes every job waiting (up to `max_batch`)
    and answers each group with the same model, endpoint, k and choices in one call."""

    def __init__(self, max_batch: int = DEFAULT_BATCH):
        self.max_batch = max_batch
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.batches = 0  # how many calls were made, and for how many jobs: a batching test reads these
        self.answered = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="bilm-inference", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None

    def submit(self, job: Job) -> Future:
        self.jobs.put(job)
        return job.future

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while (first := self.jobs.get()) is not None:
                batch, stop = [first], False
                while len(batch) < self.max_batch:
                    try:
                        job = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                groups: dict[tuple, list[Job]] = {}
                for job in batch:
                    if job.future.set_running_or_notify_cancel():  # False: its client has gone
                        groups.setdefault(job.group, []).append(job)
                for jobs in groups.values():
                    self._answer(jobs)
                if stop:
                    return

    def _answer(self, jobs: list[Job]) -> None:
        head = jobs[0]
        p, choices = head.model.predictor, list(head.choices) if head.choices else None
        run = p.fill_many if head.op == "fill" else p.predict_many
        try:
            results = run([j.text for j in jobs], head.k, choices)
        except Exception as e:
            if len(jobs) > 1:  # one bad text must not fail the others: answer each alone
                for job in jobs:
                    self._answer([job])
                return
            head.future.set_exception(e)
            return
        self.batches += 1
        self.answered += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)


def check_port(host: str, port: int) -> None:
    """A one-line error now, rather than uvicorn's log line after the models have loaded."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise BilmError(
            f"cannot listen on {host}:{port} ({e.strerror or e}): choose another --port or --host"
        ) from None


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread (tests, screenshots); yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="bilm-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise BilmError("the server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path())
@click.option("--compare", type=click.Path(), multiple=True, help="More checkpoints to show side by side (repeat).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default lets only this machine connect; 0.0.0.0 opens it to the network.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 256),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Requests answered in one forward pass when they arrive together (1: one at a time).",
)
@device_option("cpu")
@threads_option()
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(checkpoint, compare, host, port, max_batch, device, access_log):
    """Serve the fill-in page and a JSON API (POST /fill, /predict) for CHECKPOINT [--compare ...].

    Example: bilm serve checkpoints/demo-bi --compare checkpoints/demo-uni, then open http://127.0.0.1:8000
    """
    import uvicorn

    from .serve_app import create_app

    check_port(host, port)
    app = create_app(load_models([checkpoint, *compare], device), max_batch)
    shown = f"[{host}]" if ":" in host else host
    where = (
        "only this machine can connect (--host 0.0.0.0 to open it to the network)"
        if host in ("127.0.0.1", "localhost", "::1")
        else "open to the network: anyone who can reach this machine can use it"
    )
    names = ", ".join(f"{m.name} ({m.predictor.kind})" for m in app.state.models)
    click.echo(f"bilm serve: {names}")
    click.echo(f"  http://{shown}:{port}/  (API docs at /docs); {where}. Ctrl-C stops.")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log, lifespan="on")
    click.echo("bilm serve: stopped")
