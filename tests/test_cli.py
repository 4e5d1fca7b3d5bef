import json

import pytest
from click.testing import CliRunner

from bilm.cli import cli


@pytest.fixture
def run(data_dir):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], env={"BILM_DATA_DIR": str(data_dir)})

    return invoke


def test_prepare_train_predict_and_fill_end_to_end(run, corpus, tmp_path):
    result = run("prepare", corpus)
    assert result.exit_code == 0, result.output
    assert "vocabulary" in result.output and "valid" in result.output
    for kind in ("uni", "bi"):
        result = run(
            "train",
            "--model",
            kind,
            "--corpus",
            corpus,
            "--out",
            tmp_path / kind,
            "--max-steps",
            300,
            "--layers",
            1,
            "--hidden",
            32,
            "--emb",
            16,
            "--dropout",
            0,
            "--lr",
            0.01,
            "--batch-size",
            16,
            "--bptt",
            12,
        )
        assert result.exit_code == 0, result.output
        label = "valid pseudo-ppl" if kind == "bi" else "valid ppl"  # bi's figure is not comparable with uni's
        assert label in result.output and (tmp_path / kind / "best" / "model.safetensors").is_file()
        assert ("pseudo" in result.output) == (kind == "bi")
        assert {p.name for p in (tmp_path / kind / "last").iterdir()} >= {
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "metrics.json",
            "trainer.json",
            "trainer.safetensors",
        }
    result = run("predict", tmp_path / "uni", "the dog then again", "-k", 3, "--json")
    assert result.exit_code == 0, result.output
    [pred] = json.loads(result.output)
    assert pred["method"] == "next" and pred["candidates"][0]["word"] == "barks"
    assert len(pred["candidates"]) == 3 and 0 < pred["candidates"][0]["prob"] <= 1
    result = run("fill", tmp_path / "bi", "the ___ softly later hoots .", "-k", 2)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[0] == "owl"
    # Both models together: a third ranking, bi's shortlist scored by both.
    result = run("fill", tmp_path / "bi", "the ___ softly later hoots .", "--uni", tmp_path / "uni", "--json")
    assert result.exit_code == 0, result.output
    preds = json.loads(result.output)
    assert [p["method"] for p in preds] == ["bi", "bi-rescore", "uni+bi"]
    assert preds[2]["candidates"][0]["word"] == "owl"
    result = run("fill", tmp_path / "bi", "the ___ then then moos .", "--choices", "cat,cow,zebra", "--json")
    bi, voted = json.loads(result.output)
    assert (bi["method"], voted["method"]) == ("bi", "bi-rescore")
    assert [c["word"] for c in bi["candidates"]] == [c["word"] for c in voted["candidates"]] == ["cow", "cat", "zebra"]
    zebra = {"word": "zebra", "prob": None, "known": False, "sequence": "the zebra then then moos .", "tokens": 1}
    assert bi["candidates"][2] == zebra
    assert bi["candidates"][0]["sequence"] == "the cow then then moos ."
    result = run("fill", tmp_path / "uni", "the ___ then then moos .", "--choices", "cat,zebra", "--json")
    left, rescored = json.loads(result.output)
    assert (left["method"], rescored["method"]) == ("uni-left", "uni-rescore")
    assert rescored["candidates"] == [
        {"word": "cat", "prob": 1.0, "known": True, "sequence": "the cat then then moos .", "tokens": 1},
        {"word": "zebra", "prob": None, "known": False, "sequence": "the zebra then then moos .", "tokens": 1},
    ]
    result = run("fill", tmp_path / "bi", "the ___ then purrs .")
    assert "not in the vocabulary (read as <unk>): purrs" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("fill", "{bi}", "the cat then barks ."), "no blank in the text"),
        (("fill", "{bi}", "the ___ then ___ ."), "2 blanks"),
        (("fill", "{bi}", "the ___ hoots .", "--uni", "{bi}"), "uni+bi needs a bi checkpoint and a uni one"),
        (("fill", "{uni}", "the ___ hoots .", "--uni", "{uni}"), "uni+bi needs a bi checkpoint and a uni one"),
        (("predict", "{missing}", "the cat"), "not found"),
        (("prepare", "{missing}"), "not found"),
        (("prepare", "{empty}"), "is empty"),
        (("train", "--resume", "--out", "{missing}"), "not found"),
    ],
)
def test_bad_input_gives_a_one_line_error(run, trained, tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    for split in ("train", "valid", "test"):
        (empty / f"{split}.txt").write_text("words here .\n" if split != "train" else "")
    paths = dict(bi=trained["bi"], uni=trained["uni"], missing=tmp_path / "missing", empty=empty)
    result = run(*[a.format(**paths) for a in args])
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_preset_sets_the_model_size_and_explicit_options_override_it(run, corpus, tmp_path):
    sizes = {}
    for name, extra in (("large-bi", []), ("large-bi-narrow", ["--hidden", 24, "--lr", 1e-3])):
        args = ["train", "--model", "bi", "--corpus", corpus, "--out", tmp_path / name, "--max-steps", 1]
        result = run(*args, "--preset", "large", "--batch-size", 4, "--precision", "fp32", *extra)
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / name / "last" / "config.json").read_text())
        model = config["model"]
        sizes[name] = (
            model["layers"],
            model["hidden_size"],
            model["emb_size"],
            model["dropout"],
            config["train"]["lr"],
        )
    assert sizes == {"large-bi": (2, 400, 400, 0.25, 3e-3), "large-bi-narrow": (2, 24, 400, 0.25, 1e-3)}
    result = run("train", "--corpus", corpus, "--out", tmp_path / "small", "--max-steps", 1, "--batch-size", 4)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "small" / "last" / "config.json").read_text())
    model, lr = config["model"], config["train"]["lr"]
    assert (model["layers"], model["hidden_size"], lr) == (1, 200, 7e-3)  # the small preset's own depth and lr
    result = run("train", "--resume", "--out", tmp_path / "large-bi", "--preset", "small")
    assert result.exit_code != 0 and "hidden" in result.output  # the run was not trained at the small preset's size


def test_fill_and_predict_take_device_auto(run, trained):
    for command, text in (("fill", "the ___ then again hoots ."), ("predict", "the owl then")):
        result = run(command, trained["bi"], text, "--device", "auto", "-k", 2)
        assert result.exit_code == 0, result.output
