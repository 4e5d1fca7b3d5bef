"""`bilm repl`: type a sentence with a blank, see what each loaded model believes.

A thin loop over `Predictor.fill` / `Predictor.predict`: this module only routes a
line to them and lays the answers out, one row per model, ranks aligned in columns:

    bilm> the boys went to the ___ and then got out of the pool .
      bi    pool 0.214  beach    0.120  lake 0.080
      uni   city 0.041  hospital 0.030  town 0.020
      uni+  pool 0.112  beach    0.090  lake 0.050

Torch is imported only when a checkpoint is loaded, so `bilm --help` stays fast.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from .errors import BilmError
from .options import device_option
from .threads import threads_option

if TYPE_CHECKING:
    from .predict import Prediction, Predictor

PROMPT = "bilm> "
LABELS = {"bi": "bi", "bi-rescore": "bi+", "uni+bi": "uni+bi", "uni-left": "uni", "uni-rescore": "uni+", "next": "uni"}
HISTORY_LENGTH = 1000
MAX_K = 1000

HELP = """\
Type a sentence with one blank (___, _____, [MASK] or <mask>) to see the candidates for it:
  bi    the bidirectional model, p(w | left, right)
  bi+   the bi model's top 5 (or your :choices), each also scored by how well the other
        words are predicted with it in the blank
  uni+bi  with a bi model and a uni one (--compare) of the same vocabulary: the bi+
        shortlist, each also scored by the uni model on the whole sentence
  uni   the unidirectional model, p(w | left): it cannot see the right context
  uni+  the uni model's top 50 (or your :choices), each scored on the whole sentence
A line without a blank shows the next word after it.
A line with several blanks is not filled: bilm fills one blank at a time, so keep
one ___ and write words in the others.
Words the model does not know are read as <unk> and listed above the table.

Commands
  :k N                  show the top N candidates (now {k})
  :choices a,b,c        rank only these candidates (as --choices; also :choices a b c);
                        a choice of several words fills the blank whole; :choices alone clears
  :model                the loaded checkpoints, their configuration and metrics
  :help                 this text
  :quit                 leave (also Ctrl-D); Ctrl-C cancels the line being typed
After :k or :choices the last sentence is shown again with the new setting.
History (up-arrow) is kept in {history}."""


@dataclass
class Answer:
    """Everything one REPL line shows: a row per model output, and a note on how the line was read."""

    rows: list[tuple[str, Prediction]]
    note: str = ""
    unknown: dict[str, list[str]] = field(default_factory=dict)  # row label -> input words read as <unk>


def history_path() -> Path | None:
    """`BILM_HISTORY` (empty: no history), else ~/.bilm_history: kept out of any repository."""
    env = os.environ.get("BILM_HISTORY")
    if env is not None:
        return Path(env).expanduser() if env else None
    return Path.home() / ".bilm_history"


def answer(predictors: list[Predictor], text: str, k: int = 10, choices: list[str] | None = None) -> Answer:
    """Ask every model about `text`: fill its blank, or predict the next word when it has none.

    Several blanks raise the `BilmError` of `split_blank`: one blank at a time.
    """
    from .predict import BLANK_RE

    blank = bool(BLANK_RE.search(text))
    rows = []
    for i, p in enumerate(predictors):
        suffix = str(i + 1) if sum(q.kind == p.kind for q in predictors) > 1 else ""
        preds = p.fill(text, k, choices) if blank else [p.predict(text, k, choices)]
        rows += [(LABELS.get(pred.method, pred.method) + suffix, pred) for pred in preds]
    unknown = {label: pred.unknown for label, pred in rows if pred.unknown}
    note = "" if blank else "no blank: the next word after the text; mark a blank with ___ to fill it"
    return Answer(rows, note, unknown)


def format_prob(p: float | None) -> str:
    if p is None:
        return "oov"
    return f"{p:.3f}" if p >= 0.0005 else f"{p:.0e}"


def format_answer(ans: Answer, width: int = 100) -> str:
    """The answer as aligned rows: ranks in columns, wrapped into blocks that fit `width`."""
    lines = []
    if ans.note:
        lines.append(f"  ({ans.note})")
    unknown = {tuple(words) for words in ans.unknown.values()}
    if len(unknown) == 1:
        lines.append(f"  <unk>: {', '.join(next(iter(unknown)))} (not in the vocabulary)")
    else:
        lines += [f"  <unk> for {label}: {', '.join(words)}" for label, words in ans.unknown.items()]
    labels = [label for label, _ in ans.rows]
    cells = [[(c.word, format_prob(c.prob)) for c in pred.candidates] for _, pred in ans.rows]
    n = max((len(row) for row in cells), default=0)
    columns = []
    for j in range(n):
        words = [row[j] for row in cells if j < len(row)]
        columns.append((max(len(w) for w, _ in words), max(len(p) for _, p in words)))
    head = max(map(len, labels), default=0) + 2
    for b, (start, end) in enumerate(_blocks([w + 1 + p for w, p in columns], width - head - 2)):
        if b:
            lines.append("")
        for label, row in zip(labels, cells, strict=True):
            parts = [f"{w:<{columns[j][0]}} {p:>{columns[j][1]}}" for j, (w, p) in enumerate(row[start:end], start)]
            lines.append(f"  {label:<{head}}" + "  ".join(parts).rstrip())
    notes = [f"{label}: {pred.note}" for label, pred in ans.rows if pred.note]
    if any(c.prob is None for _, pred in ans.rows for c in pred.candidates):
        notes.append("oov: not in the vocabulary, not ranked")
    lines += [f"  {note}" for note in notes]
    return "\n".join(lines)


def _blocks(widths: list[int], room: int) -> list[tuple[int, int]]:
    """Runs of columns (start, end) that fit side by side in `room`, at least one column each."""
    blocks, start, used = [], 0, 0
    for j, w in enumerate(widths):
        if j > start and used + 2 + w > room:
            blocks.append((start, j))
            start, used = j, 0
        used += w if j == start else 2 + w
    return blocks + [(start, len(widths))] if widths else []


def describe(predictors: list[Predictor]) -> str:
    """`:model`: what is loaded, so a surprising answer can be traced to its checkpoint."""
    from .models import adaptive_cutoffs

    lines = []
    for p in predictors:
        cfg, m, data = p.model.cfg, p.ckpt.metrics, p.ckpt.config.get("data", {})
        output = "adaptive" if adaptive_cutoffs(cfg) else "full"
        lines.append(f"  {p.kind:<4}{p.ckpt.path}")
        lines.append(
            f"        {cfg.cell} {cfg.layers}x{cfg.hidden_size} (emb {cfg.emb_size}), {output} softmax, "
            f"{sum(x.numel() for x in p.model.parameters()):,} parameters, vocabulary {len(p.tokenizer):,}"
        )
        ppl = m.get("best_valid_ppl") or m.get("valid_ppl")
        label = "valid pseudo-perplexity" if p.kind == "bi" else "valid ppl"  # bi sees both sides: not comparable
        lines.append(
            f"        corpus {data.get('corpus')}, {m.get('step', 0):,} steps, "
            f"{m.get('train_tokens', 0):,} tokens, {label} {'?' if ppl is None else f'{ppl:.2f}'}"
        )
    return "\n".join(lines)


def parse_choices(arg: str) -> list[str] | None:
    """`a,b,c` as `--choices` (a choice may hold spaces), else `a b c`; nothing clears the choices."""
    from .choices import split_choices

    return split_choices(arg, spaces=True)


class Repl:
    """The REPL's state (models, k, choices, last sentence) and what one line does to it."""

    def __init__(self, predictors: list[Predictor], out: TextIO, k: int = 10, width: int | None = None):
        self.predictors, self.out, self.k = predictors, out, k
        self.width = width  # None: the terminal's width at each answer, so a resize is followed
        self.choices: list[str] | None = None
        self.last: str | None = None
        self.errors = 0  # lines answered with an error (a piped session then exits with status 1)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def show(self, text: str) -> None:
        width = self.width or shutil.get_terminal_size((100, 24)).columns
        ans = format_answer(answer(self.predictors, text, self.k, self.choices), width)
        self.say(f"{self.choices_line()}\n{ans}" if self.choices else ans)

    def choices_line(self) -> str:
        """Shown above every answer while :choices is on, so a sticky setting is never forgotten."""
        return f"  choices: {', '.join(self.choices)} (:choices alone shows the top k again)"

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the user asks to leave."""
        line = line.strip()
        if not line:
            return True
        try:
            if line.startswith(":"):
                return self.command(line)
            self.show(line)
            self.last = line
        except BilmError as e:
            self.errors += 1
            self.say(f"  error: {e}")
        return True

    def command(self, line: str) -> bool:
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("q", "quit", "exit"):
            return False
        if name in ("h", "help", "?"):
            self.say(HELP.format(k=self.k, history=history_path() or "no file (BILM_HISTORY is empty)"))
        elif name == "model":
            self.say(describe(self.predictors))
        elif name == "k":
            if not arg:
                self.say(f"  k = {self.k}")
                return True
            if not arg.isdigit() or not 1 <= int(arg) <= MAX_K:
                raise BilmError(f":k takes a whole number from 1 to {MAX_K}, not {arg!r}")
            self.k = int(arg)
            self.say(f"  k = {self.k}")
            self.again()
        elif name == "choices":
            self.choices = parse_choices(arg)
            if not self.choices:
                self.say("  choices cleared: top k")
            elif self.last is None:
                self.say(self.choices_line())
            self.again()
        else:
            raise BilmError(f"unknown command :{name} (:help lists the commands)")
        return True

    def again(self) -> None:
        if self.last is not None:
            self.show(self.last)


def _lines_with_readline(repl: Repl):
    """Prompted lines from the terminal, with editing and a persistent history; Ctrl-C cancels a line."""
    try:
        import readline
    except ImportError:
        readline = None
    path = history_path()
    if readline is not None and path is not None:
        try:
            readline.read_history_file(path)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LENGTH)
    try:
        while True:
            try:
                yield input(PROMPT)
            except KeyboardInterrupt:
                repl.say("^C")
            except EOFError:
                repl.say("")
                return
    finally:
        if readline is not None and path is not None:
            try:
                readline.write_history_file(path)
            except OSError as e:
                repl.say(f"  note: history not saved to {path} ({e.strerror})")


def run_repl(
    predictor: Predictor,
    compare: Predictor | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    k: int = 10,
    echo: bool | None = None,
    width: int | None = None,
) -> int:
    """Read lines until :quit or end of input; return how many lines were answered with an error.

    On a terminal: a prompt, readline editing and history. From a pipe or a file: no
    history, and with `echo` (the default there) each line is written after the prompt,
    so that the output reads as a transcript of the session.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    predictors = [predictor] + ([compare] if compare is not None else [])
    repl = Repl(predictors, stdout, k, width)
    interactive = stdin is sys.stdin and stdin.isatty()
    echo = not interactive if echo is None else echo
    names = ", ".join(f"{p.kind} {p.ckpt.path}" for p in predictors)
    repl.say(f"bilm repl: {names}. A sentence with ___ fills the blank; :help for commands, Ctrl-D to leave.")
    lines = _lines_with_readline(repl) if interactive else (line.rstrip("\n") for line in stdin)
    try:
        for line in lines:
            if echo:
                repl.say(PROMPT + line)
            try:
                if not repl.handle(line):
                    break
            except KeyboardInterrupt:
                if not interactive:
                    raise
                repl.say("  (cancelled)")
    finally:
        lines.close()  # now, not at garbage collection: the history file is written on close
    return repl.errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path())
@click.option("--compare", type=click.Path(), help="A second checkpoint (e.g. the uni model next to a bi one).")
@click.option("-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True, help="Candidates shown.")
@click.option("--echo/--no-echo", default=None, help="Write each input line back [default: when stdin is not a TTY].")
@device_option("cpu")
@threads_option()
def repl(checkpoint, compare, k, echo, device):
    """Fill in blanks interactively: type a sentence with ___ and compare the models.

    Reads a pipe too: printf 'the ___ sat on the mat .\\n' | bilm repl CHECKPOINT (exit status 1 when
    a line got an error; `bilm fill CHECKPOINT -` answers many lines as JSON).
    """
    from .predict import Predictor, same_vocabulary

    try:
        main = Predictor.load(checkpoint, device)
        other = Predictor.load(compare, device) if compare else None
        if other is not None and {main.kind, other.kind} == {"bi", "uni"} and same_vocabulary(main.ckpt, other.ckpt):
            bi, uni = (main, other) if main.kind == "bi" else (other, main)
            bi.join(uni.ckpt)  # a third bi row: both models together
    except BilmError as e:
        raise click.ClickException(str(e)) from None
    errors = run_repl(main, other, k=k, echo=echo)
    if errors and not sys.stdin.isatty():
        raise click.ClickException(f"{errors} line(s) got an error (shown above)")
