"""`bilm serve`: the JSON API against the CLI's --json, its errors, batching, the command itself."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from bilm.cli import cli
from bilm.errors import BilmError
from bilm.serve import MAX_WORDS, Batcher, Job, load_models
from bilm.serve_app import create_app

FILL = "the ___ then later meows ."


@pytest.fixture(scope="module")
def models(trained):
    return load_models([trained["bi"], trained["uni"]])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def cli_json(*args) -> list:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("kind", ["bi", "uni"])
def test_fill_answers_exactly_what_bilm_fill_json_prints(client, trained, kind):
    r = client.post("/fill", json={"text": FILL, "k": 3, "model": kind})
    assert r.status_code == 200
    assert r.json() == cli_json("fill", trained[kind], FILL, "-k", 3, "--json")
    assert [p["method"] for p in r.json()] == (["bi", "bi-rescore"] if kind == "bi" else ["uni-left", "uni-rescore"])


@pytest.mark.parametrize("kind", ["bi", "uni"])
def test_predict_answers_exactly_what_bilm_predict_json_prints(client, trained, kind):
    r = client.post("/predict", json={"text": "the owl", "k": 4, "model": kind})
    assert r.status_code == 200
    assert r.json() == cli_json("predict", trained[kind], "the owl", "-k", 4, "--json")


def test_choices_rank_only_those_words_and_mark_unknown_ones(client, trained):
    body = {"text": FILL, "choices": ["dog", "cat", "zebra"], "model": "uni"}
    r = client.post("/fill", json=body)
    assert r.status_code == 200
    assert r.json() == cli_json("fill", trained["uni"], FILL, "--choices", "dog,cat,zebra", "--json")
    words = {c["word"]: c for c in r.json()[0]["candidates"]}
    assert set(words) == {"dog", "cat", "zebra"} and words["zebra"]["prob"] is None


def test_without_a_model_the_first_checkpoint_answers(client):
    assert client.post("/fill", json={"text": FILL}).json()[0]["method"] == "bi"


def test_unknown_input_words_are_listed(client):
    r = client.post("/fill", json={"text": "the ___ then zebrafish meows .", "model": "bi"})
    assert r.json()[0]["unknown"] == ["zebrafish"]


def test_models_says_what_each_checkpoint_is(client, trained):
    infos = client.get("/models").json()
    assert [m["name"] for m in infos] == ["bi", "uni"]  # the run folders' names
    bi, uni = infos
    assert bi["kind"] == "bi" and bi["methods"] == ["bi", "bi-rescore"]
    assert uni["methods"] == ["uni-left", "uni-rescore"]
    assert bi["valid_label"] == "valid pseudo-perplexity" and uni["valid_label"] == "valid perplexity"
    for m in infos:
        assert m["valid"] > 1 and m["minutes"] >= 0 and m["parameters"] > 0 and 0 < m["steps"] <= 300
        assert m["corpus"] and m["layers"] == 1 and m["hidden"] == 32


def test_two_checkpoints_from_folders_of_the_same_name_get_distinct_names(trained):
    assert [m.name for m in load_models([trained["bi"], trained["bi"]])] == ["bi", "bi-2"]


def test_device_auto_loads_where_torch_can_run(trained):
    (m,) = load_models([trained["bi"]], device="auto")
    assert m.predictor.fill(FILL, 2)[0].method == "bi"


def test_health(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["bi", "uni"]}


def test_page_is_one_self_contained_file(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for external in ('src="http', "src='http", 'href="http', "@import", "url(http", "//cdn"):
        assert external not in page
    assert 'id="text"' in page and 'id="k"' in page and 'id="choices"' in page
    assert 'name="viewport"' in page  # phone widths


def test_openapi_documents_fill_and_predict(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/fill", "/predict", "/models", "/health"} <= set(paths)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "the cat meows ."}, 400, "no blank"),
        ({"text": "the ___ then ___ meows ."}, 400, "2 blanks"),
        ({"text": "the " * 10_000 + "___"}, 413, f"limit is {MAX_WORDS:,} words"),
        ({"text": ""}, 400, "empty"),
        ({"text": "   "}, 400, "empty"),
        ({"text": FILL, "model": "nope"}, 404, "unknown model 'nope': loaded are bi, uni"),
        ({"text": FILL, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"text": FILL, "k": "many"}, 422, "k: Input should be a valid integer"),
        ({"text": FILL, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"k": 3}, 422, "text: Field required"),
        ([FILL], 422, 'send a JSON object like {"text"'),
        ('{"text": "the ___', 400, "the body is not valid JSON"),
        ("", 400, "the body is empty"),
    ],
)
def test_bad_input_is_a_4xx_with_one_line_and_the_server_keeps_serving(client, body, status, message):
    if isinstance(body, str):
        r = client.post("/fill", content=body.encode(), headers={"content-type": "application/json"})
    else:
        r = client.post("/fill", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail
    assert client.post("/fill", json={"text": FILL}).status_code == 200


def test_predict_with_an_empty_text_is_refused(client):
    r = client.post("/predict", json={"text": ""})
    assert r.status_code == 400 and r.json()["detail"] == "the text is empty"


def run_batch(batcher: Batcher, jobs: list[Job]) -> list:
    """Queue every job before the thread starts, so that it finds them all waiting."""
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    try:
        return [job.future.exception(timeout=60) or job.future.result() for job in jobs]
    finally:
        batcher.stop()


def as_pairs(preds) -> list:
    return [(p.method, [(c.word, pytest.approx(c.prob, rel=1e-4, abs=1e-7)) for c in p.candidates]) for p in preds]


@pytest.mark.parametrize("kind", ["bi", "uni"])
def test_requests_waiting_together_are_answered_in_one_batch_as_if_alone(models, kind):
    served = models[0] if kind == "bi" else models[1]
    texts = [FILL, "the ___ .", "a dog ___ loudly barks .", "the cow then ___ moos", "the ___ owl"]
    jobs = [Job(served, "fill", t, 3, None) for t in texts] + [Job(served, "predict", "the owl", 3, None)]
    batcher = Batcher(max_batch=8)
    results = run_batch(batcher, jobs)
    assert (batcher.batches, batcher.answered) == (2, 6)  # the fills in one call, the predict in another
    for text, got in zip(texts, results, strict=False):
        assert as_pairs(got) == as_pairs(served.predictor.fill(text, 3))
    assert as_pairs([results[-1]]) == as_pairs([served.predictor.predict("the owl", 3)])


def test_max_batch_one_answers_one_request_at_a_time(models):
    batcher = Batcher(max_batch=1)
    run_batch(batcher, [Job(models[0], "fill", FILL, 3, None) for _ in range(3)])
    assert (batcher.batches, batcher.answered) == (3, 3)


def test_a_bad_text_in_a_batch_fails_alone(models):
    jobs = [Job(models[0], "fill", t, 3, None) for t in (FILL, "no blank here", FILL)]
    results = run_batch(Batcher(max_batch=8), jobs)
    assert isinstance(results[1], BilmError) and "no blank" in str(results[1])
    assert as_pairs(results[0]) == as_pairs(results[2]) == as_pairs(models[0].predictor.fill(FILL, 3))


def test_a_request_given_up_before_its_turn_is_skipped_and_the_rest_answered(models):
    jobs = [Job(models[0], "fill", FILL, 3, None) for _ in range(3)]
    jobs[1].future.cancel()
    batcher = Batcher(max_batch=8)
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    try:
        assert jobs[0].future.result(timeout=60) and jobs[2].future.result(timeout=60)
    finally:
        batcher.stop()
    assert jobs[1].future.cancelled() and (batcher.batches, batcher.answered) == (1, 2)


def test_port_in_use_is_a_one_line_error_before_loading(trained):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(trained["bi"]), "--port", str(port)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_binds_to_this_machine_says_so_and_stops_cleanly_on_ctrl_c(trained):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bilm",
        "serve",
        str(trained["bi"]),
        "--compare",
        str(trained["uni"]),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert health.json()["models"] == ["bi", "uni"]
        answer = httpx.post(f"http://127.0.0.1:{port}/fill", json={"text": FILL, "model": "uni"}, timeout=30)
        assert [p["method"] for p in answer.json()] == ["uni-left", "uni-rescore"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "only this machine can connect" in out
    assert out.rstrip().endswith("bilm serve: stopped")
    assert "Traceback" not in err
