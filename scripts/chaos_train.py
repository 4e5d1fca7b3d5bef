"""Kill a real `bilm train` with SIGKILL at random moments, resume it each time, and check nothing is lost.

    python scripts/chaos_train.py                       # 10 kills of a small WikiText-2 uni model
    python scripts/chaos_train.py --quick               # 3 kills, fewer steps (well under a minute of training)
    python scripts/chaos_train.py --model bi --kills 5

Each round starts `bilm train` (the first fresh, then `--resume`), waits until it has made
progress, then sleeps a random part of two save intervals (so kills land in training
steps, validations and saves alike) and sends SIGKILL. After every kill it checks that
`last/` loads (config, weights, trainer state): a "corrupt" checkpoint is one that does not.
Then it checks that the next resume starts from that checkpoint's step, and that the
work lost (steps trained after that save) is within one save interval. The last round runs
to the end; then the final checkpoint must load and `metrics.jsonl` must hold every step
1..N exactly once (`--log-every 1`), as strict JSON.

Prints one line per kill and a summary line:
    chaos: 10 kills, 10 resumes, 0 corrupt checkpoints; ...
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bilm.train import SAVE_COST  # noqa: E402

ANIMALS = {"cat": "meows", "dog": "barks", "cow": "moos", "owl": "hoots", "duck": "quacks", "lion": "roars"}
FILLERS = ["then", "later", "again", "loudly", "softly", "often", "never", "twice"]


def bilm(*args: str) -> list[str]:
    return [sys.executable, "-m", "bilm", *args]


def records(run: Path) -> list[dict]:
    """Complete lines of metrics.jsonl (a torn last line is not yet a record)."""
    f = run / "metrics.jsonl"
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def write_corpus(root: Path, sentences: int, seed: int) -> Path:
    """A small folder corpus (the tests' animals, more of them): a real training, seconds per epoch."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", sentences), ("valid", sentences // 20), ("test", sentences // 20)):
        lines = []
        for _ in range(n):
            animal = rng.choice(sorted(ANIMALS))
            lines.append(f"the {animal} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {ANIMALS[animal]} .")
        (root / f"{split}.txt").write_text("\n\n".join(lines) + "\n")
    return root


def resumed_at(log: Path, proc: subprocess.Popen) -> int | None:
    """The step a resumed run starts from, from its log line `resuming RUN at step N`; None if it never says."""
    while True:
        for line in log.read_text().splitlines():
            if line.startswith("resuming "):
                return int(line.split(" at step ")[1].split()[0])
        if proc.poll() is not None:
            print(f"  the resume did not start: see {log}")
            return None
        time.sleep(0.1)


def last_step(run: Path) -> int:
    return max((r["step"] for r in records(run) if r.get("type") == "train"), default=0)


def saved_state(run: Path) -> tuple[int, float, float] | None:
    """(step, elapsed, seconds a save takes) of `run/last`, loaded as --resume loads it; None if it does not load."""
    from bilm.checkpoint import load_checkpoint, load_trainer_state

    try:
        ckpt = load_checkpoint(run / "last")
        counters = load_trainer_state(run / "last")["counters"]
        return counters["step"], counters["elapsed"], ckpt.metrics.get("save_seconds", 0.0)
    except Exception as e:  # noqa: BLE001 - any failure here is what the script counts
        print(f"  last/ does not load: {type(e).__name__}: {e}")
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--model", choices=["uni", "bi"], default="uni")
    ap.add_argument("--corpus", default=None, help="A corpus name or folder [default: a generated one in OUT].")
    ap.add_argument("--steps", type=int, default=3000, help="The run's --max-steps.")
    ap.add_argument("--save-every-minutes", type=float, default=0.05, help="3 s: a kill lands between saves.")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bilm-chaos"))
    ap.add_argument("--data-dir", type=Path, default=None, help="Cache folder [default: OUT/data].")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 kills, 1000 steps.")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.steps = 3, 1000
    rng = random.Random(args.seed)
    run = args.out / "run"
    data_dir = args.data_dir or args.out / "data"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    env = dict(os.environ, OMP_NUM_THREADS="1", BILM_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    args.corpus = args.corpus or str(write_corpus(args.out / "corpus", 40_000, args.seed))
    subprocess.run(bilm("prepare", args.corpus), env=env, check=True, stdout=subprocess.DEVNULL)
    interval = args.save_every_minutes * 60
    train = [
        "train", "--model", args.model, "--corpus", args.corpus, "--out", str(run), "--max-steps", str(args.steps),
        "--layers", "1", "--hidden", "64", "--emb", "64", "--batch-size", "16", "--bptt", "20",
        "--eval-every", "500", "--log-every", "1", "--save-every-minutes", str(args.save_every_minutes),
        "--precision", "fp32", "--threads", "1",
    ]  # fmt: skip
    kills = resumes = corrupt = failures = 0
    worst_steps, worst_seconds, slowest_save = 0, 0.0, 0.0
    started = time.perf_counter()
    for round_ in range(args.kills + 1):
        resume = round_ > 0
        cmd = bilm(*train, *(["--resume"] if resume else []))
        log = (args.out / f"round{round_}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if round_ == args.kills:  # the last round runs to the end
            code = proc.wait()
            log.close()
            if code != 0:
                print(f"final run failed ({code}): see {log.name}")
                failures += 1
            resumes += resumed_at(Path(log.name), proc) is not None
            break
        begin = resumed_at(Path(log.name), proc) if resume else 0
        resumes += resume and begin is not None
        while begin is not None and last_step(run) <= begin + 1 and proc.poll() is None:  # training
            time.sleep(0.1)
        if proc.poll() is not None:
            print(f"round {round_}: the run ended before the kill ({proc.returncode}); see {log.name}")
            failures += 1
            break
        time.sleep(rng.uniform(0, 2 * interval))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        kills += 1
        killed_at = last_step(run)
        killed_elapsed = max((r["elapsed"] for r in records(run)), default=0.0)
        state = saved_state(run)
        if state is None:
            corrupt += 1
            continue
        step, elapsed, save_seconds = state
        lost_steps, lost_seconds = killed_at - step, killed_elapsed - elapsed
        worst_steps, worst_seconds = max(worst_steps, lost_steps), max(worst_seconds, lost_seconds)
        slowest_save = max(slowest_save, save_seconds)
        print(
            f"kill {kills:>2}: at step {killed_at:>5}, last/ at step {step:>5}: "
            f"{lost_steps} steps ({lost_seconds:.1f} s of training) to redo"
        )
    # the whole run, checked
    from bilm.checkpoint import load_checkpoint

    def refuse(token):
        raise ValueError(f"non-JSON token {token}")

    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    strict = [json.loads(line, parse_constant=refuse) for line in lines]
    steps = [r["step"] for r in strict if r["type"] == "train"]
    curve_ok = steps == list(range(1, args.steps + 1))
    failures += not curve_ok
    try:
        final = load_checkpoint(run / "last")
        final_ok = final.metrics.get("step") == args.steps
        slowest_save = max(slowest_save, final.metrics.get("save_seconds", 0.0))
    except Exception as e:  # noqa: BLE001
        print(f"final checkpoint does not load: {e}")
        final_ok = False
    failures += not final_ok
    failures += corrupt
    every = max(interval, SAVE_COST * slowest_save)  # the trainer's own interval: saves take at most 2 % of the time
    within = worst_seconds <= every + 2  # one interval (+ a validation or a save in progress)
    failures += not within
    print(
        f"chaos: {kills} kills, {resumes} resumes, {corrupt} corrupt checkpoints; at most {worst_steps} steps "
        f"({worst_seconds:.1f} s) redone per kill, {'within' if within else 'MORE THAN'} one save interval "
        f"({every:.1f} s: --save-every-minutes {args.save_every_minutes:g}, a save {slowest_save:.2f} s); "
        f"loss curve steps 1..{args.steps} {'each once' if curve_ok else 'BROKEN'}; final checkpoint "
        f"{'loads' if final_ok else 'BROKEN'}; {time.perf_counter() - started:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
