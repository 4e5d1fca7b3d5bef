"""Statistics by document: corpora record where documents start, and the bootstrap resamples them."""

import numpy as np

from bilm.corpus import open_corpus
from bilm.data import DataConfig, prepare
from bilm.evaluate import FillConfig, FillResult, resampling_units, summarize
from bilm.tokenizer import Tokenizer

ARTICLE = " = {title} = \n \n {body} \n \n = = Section = = \n \n {body} \n"


def write_wikitext(root, articles):
    root.mkdir(parents=True, exist_ok=True)
    text = "".join(ARTICLE.format(title=t, body=b) for t, b in articles)
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text(text)
    return root


def test_wikitext_articles_start_at_top_level_headings_not_sections(tmp_path):
    write_wikitext(tmp_path / "wikitext-2", [("A", "x y . z ."), ("B", "u v .")])
    units = list(open_corpus("wikitext-2", tmp_path).documented_units("test"))
    assert [doc for doc, (_, spans) in units for _ in spans] == [0, 0, 0, 0, 1, 1]


def test_prepare_stores_the_document_of_each_sentence(tmp_path):
    write_wikitext(tmp_path / "wikitext-2", [("A", "x y . z ."), ("B", "u v .")])
    data = prepare(DataConfig("wikitext-2"), tmp_path, tmp_path / "cache", log=lambda s: None)
    assert data.document_unit == "article" and data.meta["splits"]["test"]["documents"] == 2
    assert data.documents("test").tolist() == [0, 0, 0, 0, 1, 1]
    assert data.tokenizer.style == "wikitext" and data.meta["text_style"] == "wikitext"


def test_a_folder_corpus_of_files_has_files_as_documents(tmp_path):
    root = tmp_path / "books"
    root.mkdir()
    for i in range(4):
        (root / f"book{i}.txt").write_text(f"Book {i} starts . It \u201cends\u201d here .\n")
    data = prepare(DataConfig(str(root)), None, tmp_path / "cache", log=lambda s: None)
    assert data.document_unit == "file" and set(data.documents("train").tolist()) == {0, 1}
    assert data.tokenizer.is_known('"') and not data.tokenizer.is_known("\u201c")  # NFKC + ASCII quotes


def two_documents(sentences_each: int = 30) -> tuple[FillResult, np.ndarray]:
    """Two documents: every blank of the first is right, every blank of the second wrong."""
    n_sent = 2 * sentences_each
    sentence = np.repeat(np.arange(n_sent), 2)
    result = FillResult(
        sentence=sentence,
        index=np.tile([0, 1], n_sent),
        length=np.full(len(sentence), 2),
        target=np.full(len(sentence), 5),
        n_sentences=n_sent,
        excluded_unk=0,
    )
    documents = np.repeat([0, 1], sentences_each)
    result.ranks = {"bi": np.where(documents[sentence] == 0, 1.0, 50.0)}
    result.log_probs = {"bi": np.zeros(len(sentence))}
    result.seconds, result.passes = {"bi": 1.0}, {"bi": n_sent}
    return result, documents


def test_resampling_two_documents_shows_what_resampling_sentences_hides():
    result, documents = two_documents()
    tok = Tokenizer.train([["cat"]])
    by_doc = summarize(result, tok, FillConfig(rescore_sample=0, bootstrap=400, min_documents=2), documents, "book")
    by_sentence = summarize(result, tok, FillConfig(rescore_sample=0, bootstrap=400), None)
    assert by_doc["resampled"]["unit"] == "book" and by_doc["resampled"]["units"] == 2
    assert by_sentence["resampled"]["unit"] == "sentence"
    assert "no document boundaries" in by_sentence["resampled"]["note"]
    lo_d, hi_d = by_doc["methods"]["bi"]["all"]["all"]["top1_ci"]
    lo_s, hi_s = by_sentence["methods"]["bi"]["all"]["all"]["top1_ci"]
    assert by_doc["methods"]["bi"]["all"]["all"]["top1"] == 0.5
    # Two documents: a resample holds 0, 1 or 2 copies of the good one -> the interval spans [0, 1].
    assert (lo_d, hi_d) == (0.0, 1.0)
    assert hi_s - lo_s < 0.35


def test_too_few_documents_fall_back_to_sentences_and_say_so():
    result, documents = two_documents()
    units = resampling_units(result, documents, "book")  # the default minimum: 20 documents
    assert units["unit"] == "sentence" and "only 2 book(s)" in units["note"]
