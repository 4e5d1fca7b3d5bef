"""WikiText from the Hugging Face hub, for a machine that has no local copy.

`wikitext-2` and `wikitext-103` are read from a local folder when one exists (`--corpus-dir`,
BILM_CORPUS_DIR, `../shared/corpora`). Where none does, `fetch` loads the hub dataset
`Salesforce/wikitext`, configuration `wikitext-2-v1` / `wikitext-103-v1` (the tokenized files,
`<unk>` in place, one row per line of `wiki.{train,valid,test}.tokens`), with `datasets`, and
writes each split as `DATA_DIR/hub/<name>/{train,valid,test}.txt`, one row a line. That folder is
then read exactly as a local copy is (corpus.LineCorpus): the same lines, the same tokens.

`datasets` is imported here only, when a download is needed: bilm itself runs without it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import BilmError

REPO = "Salesforce/wikitext"  # a hub dataset id, or a local folder laid out as the hub repository is
CONFIGS = {"wikitext-2": "wikitext-2-v1", "wikitext-103": "wikitext-103-v1"}
SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def complete(folder: Path) -> bool:
    return all((folder / f"{split}.txt").is_file() for split in SPLITS)


def fetch(name: str, hub_dir: Path, missing: str, log=print) -> Path:
    """`hub_dir/<name>/` with the hub's splits as text files (downloaded once); `missing` says where
    a local copy was looked for, for the one-line error when the hub cannot be reached."""
    out = Path(hub_dir) / name
    if complete(out):
        return out
    hint = f"put train.txt, valid.txt and test.txt in {missing}, or pass --corpus-dir"
    try:
        import datasets
    except ImportError:
        raise BilmError(f"corpus {name!r}: {missing} does not exist and `datasets` is not installed; {hint}") from None
    log(f"{name}: no local copy; loading {REPO} ({CONFIGS[name]}) from the Hugging Face hub into {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        try:
            ds = datasets.load_dataset(REPO, CONFIGS[name], cache_dir=str(tmp / "hf"))
        except Exception as e:  # no network, hub down, a proxy: every one of them is the same advice
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise BilmError(
                f"corpus {name!r}: {missing} does not exist and the hub is unreachable ({reason}); {hint}"
            ) from None
        for split, hub_split in SPLITS.items():
            with open(tmp / f"{split}.txt", "w", encoding="utf-8") as f:
                for row in ds[hub_split]:
                    f.write(row["text"].rstrip("\n") + "\n")
        del ds
        shutil.rmtree(tmp / "hf", ignore_errors=True)  # the text files are the copy; the arrow cache would double it
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
