from pathlib import Path

import pytest

from bilm.corpus import default_corpus_dir, iter_lines, open_corpus, split_sentences, words
from bilm.errors import BilmError

SHARED = default_corpus_dir()


def _book(path: Path, body: list[str], header: int = 3) -> None:
    lines = [f"header {i}" for i in range(header - 1)] + ["*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*END*"]
    lines += body + ["End of the Project Gutenberg Etext", "after the trailer"]
    path.write_bytes("\r\n".join(lines).encode("latin-1"))


def _gutenberg(root: Path, n_books: int = 6) -> Path:
    root.mkdir()
    rows = ["file\ttitle\tauthor\tbytes\tlines\twords\tsha256\theader_end_line\tfooter_line"]
    for i in range(n_books):
        body = [f"Mr. Book{i} opened the door.", 'He said "Hello." Then he left!', "", f"Caf\u00e9 number {i}."]
        _book(root / f"B{i}.TXT", body)
        rows.append(f"B{i}.TXT\tT\tA\t0\t0\t0\tx\t3\t{3 + len(body) + 1}")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_gutenberg_strips_header_and_footer_and_splits_by_book(tmp_path):
    corpus = open_corpus("gutenberg", _gutenberg(tmp_path / "gutenberg").parent)
    splits = {s: [d.path.name for d in corpus.documents[s]] for s in ("train", "valid", "test")}
    assert sum(len(v) for v in splits.values()) == 6
    assert len(splits["valid"]) == len(splits["test"]) == 1
    assert splits == {s: [d.path.name for d in open_corpus("gutenberg", tmp_path).documents[s]] for s in splits}
    text = [" ".join(tokens) for s in splits for tokens, _ in corpus.units(s)]
    assert not any("header" in t or "SMALL PRINT" in t or "trailer" in t or "Etext" in t for t in text)
    assert "mr. book0 opened the door ." in [t.lower() for t in text]  # "Mr." does not end the sentence
    assert 'he said " hello . "' in [t.lower() for t in text]
    assert any("café" in t.lower() for t in text)  # a Latin-1 byte, read without error


def test_real_gutenberg_manifest_strips_every_header():
    if SHARED is None or not (SHARED / "gutenberg").is_dir():
        pytest.skip("shared corpora not present")
    corpus = open_corpus("gutenberg", SHARED)
    assert sum(len(docs) for docs in corpus.documents.values()) == 60
    for docs in corpus.documents.values():
        for doc in docs:
            first = next(doc.paragraphs())
            assert "SMALL PRINT" not in first and "Project Gutenberg" not in first, doc.path


def test_wikitext_lines_keep_headings_in_the_stream_but_not_as_sentences(tmp_path):
    root = tmp_path / "wikitext-2"
    root.mkdir()
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text(" \n = Title = \n \n A b c . D e ! \n")
    units = list(open_corpus("wikitext-2", tmp_path).units("train"))
    assert [u[0] for u in units] == [[], ["=", "Title", "="], [], ["A", "b", "c", ".", "D", "e", "!"]]
    assert [u[1] for u in units] == [[], [], [], [(0, 4), (4, 7)]]


def test_sentence_splitter_keeps_closing_quotes_with_their_sentence():
    tokens = words('He said "Stop!" She ran. And')
    assert [tokens[a:b] for a, b in split_sentences(tokens)] == [
        ["He", "said", '"', "Stop", "!", '"'],
        ["She", "ran", "."],
        ["And"],
    ]


def test_crlf_and_latin1_lines_are_read(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"caf\xe9\r\nna\xc3\xafve\r\n")
    assert list(iter_lines(f)) == ["café", "naïve"]


def test_missing_corpus_gives_a_clear_error(tmp_path):
    with pytest.raises(BilmError, match="not found"):
        open_corpus("wikitext-2", tmp_path)
    with pytest.raises(BilmError, match="not found"):
        open_corpus(str(tmp_path / "nowhere"))


def test_empty_corpus_file_gives_a_clear_error(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("some words .\n")
    (tmp_path / "valid.txt").write_text("")
    with pytest.raises(BilmError, match="empty"):
        open_corpus(str(tmp_path))
