"""WikiText without a local copy (bilm/hub.py): from the hub, offline here, through `datasets` reading a
folder laid out as the hub repository `Salesforce/wikitext` is; and from a prepared cache alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bilm import hub
from bilm.corpus import SPLITS, default_corpus_dir, open_corpus
from bilm.data import DataConfig, prepare
from bilm.errors import BilmError

# Lines as wiki.*.tokens has them: a leading space, headings, blank lines, <unk>, @-@.
LINES = [
    " ",
    " = Valkyria Chronicles = ",
    " ",
    " The game began development in 2010 , carrying over a large portion of the work . ",
    " It met with <unk> reviews @-@ mostly positive . ",
    " ",
    " = = Gameplay = = ",
    " The cat sat on the mat . The dog did not . ",
]
README = """---
configs:
{configs}
---
"""


def hub_copy(root: Path, config: str = "wikitext-2-v1") -> Path:
    """A folder laid out as the hub repository: README configs + <config>/<split>-00000-of-00001.parquet.

    The hub's rows are the lines of the original files: text ending in a newline, blank lines as ""."""
    import datasets

    rows = [line + "\n" if line.strip() else "" for line in LINES]
    files = "\n".join(f"  - split: {s}\n    path: {config}/{s}-*" for s in hub.SPLITS.values())
    (root / config).mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(README.format(configs=f"- config_name: {config}\n  data_files:\n{files}"))
    for split in hub.SPLITS.values():
        datasets.Dataset.from_dict({"text": rows}).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
    return root


def local_copy(root: Path, names: str = "{split}.txt") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (root / names.format(split=split)).write_text("\n".join(LINES) + "\n")
    return root.parent


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_wikitext_without_a_local_copy_comes_from_the_hub_and_reads_as_the_local_files(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(hub, "REPO", str(hub_copy(tmp_path / "Salesforce-wikitext")))
    logs = []
    fetched = prepare(DataConfig("wikitext-2"), tmp_path / "no-corpora", tmp_path / "data", log=logs.append)
    assert any("Hugging Face hub" in line for line in logs)
    assert sorted(p.name for p in (tmp_path / "data" / "hub" / "wikitext-2").iterdir()) == sorted(
        f"{s}.txt" for s in SPLITS
    )  # the text alone: datasets' own cache is gone
    local = prepare(DataConfig("wikitext-2"), local_copy(tmp_path / "corpora" / "wikitext-2"), tmp_path / "data")
    assert fetched.path != local.path
    assert fetched.tokenizer.to_str() == local.tokenizer.to_str()
    for split in SPLITS:
        assert np.array_equal(fetched.stream(split), local.stream(split))
        assert np.array_equal(fetched.spans(split), local.spans(split))
    monkeypatch.setattr(hub, "REPO", str(tmp_path / "gone"))  # fetched once: the copy in data/hub/ is used
    again = prepare(DataConfig("wikitext-2", min_freq=2), tmp_path / "no-corpora", tmp_path / "data", log=logs.append)
    assert again.meta["splits"]["train"]["tokens"] == fetched.meta["splits"]["train"]["tokens"]


def test_no_local_copy_and_no_hub_is_a_one_line_error_that_says_where_to_put_the_files(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(hub, "REPO", str(tmp_path / "no-such-dataset"))
    with pytest.raises(BilmError) as e:
        prepare(DataConfig("wikitext-103"), tmp_path / "corpora", tmp_path / "data", log=lambda s: None)
    message = str(e.value)
    assert "\n" not in message and "unreachable" in message
    assert f"put train.txt, valid.txt and test.txt in {tmp_path / 'corpora' / 'wikitext-103'}" in message
    assert not (tmp_path / "data" / "hub" / "wikitext-103").exists()


def test_a_machine_given_only_the_prepared_cache_finds_it_without_the_text(tmp_path, monkeypatch, offline):
    made = prepare(DataConfig("wikitext-2"), local_copy(tmp_path / "corpora" / "wikitext-2"), tmp_path / "data")
    monkeypatch.setattr(hub, "REPO", str(tmp_path / "no-such-dataset"))  # never asked: the cache answers first
    logs = []
    found = prepare(DataConfig("wikitext-2"), tmp_path / "elsewhere", tmp_path / "data", log=logs.append)
    assert found.path == made.path and "no text here" in logs[0]
    with pytest.raises(BilmError, match="unreachable"):  # other settings: that cache does not fit
        prepare(DataConfig("wikitext-2", max_vocab=10), tmp_path / "elsewhere", tmp_path / "data", log=logs.append)


def test_wikitext_103_is_a_named_corpus_read_like_wikitext_2(tmp_path):
    corpus = open_corpus("wikitext-103", local_copy(tmp_path / "wikitext-103", names="wiki.{split}.tokens"))
    units = list(corpus.units("train"))
    assert corpus.style == "wikitext" and corpus.pretokenized and len(units) == len(LINES)
    assert units[3][0][:3] == ["The", "game", "began"]


SHARED_WT2 = (default_corpus_dir() or Path("/nonexistent")) / "wikitext-2"


@pytest.mark.skipif(os.environ.get("BILM_HUB_ONLINE") != "1", reason="downloads from the hub: set BILM_HUB_ONLINE=1")
@pytest.mark.skipif(not SHARED_WT2.is_dir(), reason="needs the local WikiText-2 to compare with")
def test_the_hub_wikitext_2_holds_the_tokens_of_the_local_files(tmp_path):
    fetched = prepare(DataConfig("wikitext-2"), tmp_path / "no-corpora", tmp_path / "data", log=print)
    local = prepare(DataConfig("wikitext-2"), SHARED_WT2.parent, tmp_path / "data")
    assert fetched.tokenizer.to_str() == local.tokenizer.to_str()
    for split in SPLITS:
        assert np.array_equal(fetched.stream(split), local.stream(split)), split
