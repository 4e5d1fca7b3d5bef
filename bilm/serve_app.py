"""The ASGI app of `bilm serve`: the page, the JSON API and its one-line errors.

FastAPI (on Starlette, served by uvicorn) rather than bare Starlette: request bodies are
validated from the schemas below (a wrong `k` is a 422 naming the field, no hand-written
checks), and the OpenAPI schema and /docs come with it. Imported only by `bilm serve`,
so the other commands never load it.
"""

import asyncio
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .errors import BilmError
from .predict import Prediction
from .serve import DEFAULT_BATCH, MAX_CHARS, MAX_K, MAX_WORDS, Batcher, Job, Served

EXAMPLE = "the boys went to the ___ and then got out of the pool ."


class TextIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": EXAMPLE, "k": 5}]})
    text: str = Field(description="A sentence; for /fill with one blank: ___ (3 or more underscores) or [MASK].")
    k: int = Field(10, ge=1, le=MAX_K, description="How many candidates.")
    choices: list[str] | None = Field(None, max_length=MAX_K, description="Rank only these words.")
    model: str | None = Field(None, description="A name from /models (default: the first checkpoint).")


ERRORS = {
    code: {"description": what, "content": {"application/json": {"example": {"detail": "one line"}}}}
    for code, what in (
        (400, "no blank, two blanks, an empty text, or a body that is not JSON"),
        (404, "unknown model"),
        (413, f"more than {MAX_WORDS:,} words or {MAX_CHARS:,} characters"),
        (422, "a field missing, unknown, of the wrong type or out of range"),
    )
}


def one_line(message) -> str:
    return " ".join(str(message).split())


def validation_message(errors: list[dict]) -> tuple[int, str]:
    """FastAPI's list of request errors as (status, one line): 400 for a body that is not JSON, 422 otherwise."""
    e = errors[0] if errors else {"msg": "invalid request"}
    if e.get("type") == "json_invalid":
        why = e.get("ctx", {}).get("error", "")
        return 400, one_line(f"the body is not valid JSON ({why})" if why else "the body is not valid JSON")
    if tuple(e.get("loc", ())) == ("body",):  # no body, or JSON that is not an object
        shape = 'a JSON object like {"text": "the ___ sat on the mat ."}'
        return (400, f"the body is empty: send {shape}") if e.get("type") == "missing" else (422, f"send {shape}")
    loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, one_line(f"{loc}: {e.get('msg')}{more}" if loc else f"{e.get('msg')}{more}")


def check_length(text: str) -> None:
    """Empty: 400; longer than MAX_WORDS words or MAX_CHARS characters: 413. Before any tokenizing."""
    if not text.strip():
        raise BilmError("the text is empty")
    words = len(text.split())
    if words > MAX_WORDS or len(text) > MAX_CHARS:
        raise HTTPException(
            413,
            f"the text is too long ({words:,} words, {len(text):,} characters): "
            f"the limit is {MAX_WORDS:,} words and {MAX_CHARS:,} characters",
        )


def create_app(models: list[Served], max_batch: int = DEFAULT_BATCH) -> FastAPI:
    """The app over loaded models; inference runs on one `Batcher` thread started and stopped with it."""
    if not models:
        raise BilmError("no model to serve")
    by_name = {m.name: m for m in models}
    batcher = Batcher(max_batch)
    page = resources.files("bilm").joinpath("serve.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(
        title="bilm",
        summary="Fill in the blank with bidirectional and unidirectional LSTM language models.",
        lifespan=lifespan,
    )
    app.state.batcher, app.state.models = batcher, models

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        status, message = validation_message(list(exc.errors()))
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(BilmError)
    async def bilm_error(request: Request, exc: BilmError):
        return JSONResponse({"detail": one_line(exc)}, status_code=400)

    async def answer(op: str, body: TextIn) -> JSONResponse:
        served = by_name.get(body.model or models[0].name)
        if served is None:
            raise HTTPException(404, f"unknown model {body.model!r}: loaded are {', '.join(by_name)}")
        check_length(body.text)
        if op == "fill":
            served.predictor.query(body.text)  # no blank or two: the one-line error now, not in a batch
        job = Job(served, op, body.text, body.k, tuple(body.choices) if body.choices else None)
        result = await asyncio.wrap_future(batcher.submit(job))
        return JSONResponse([p.to_dict() for p in (result if op == "fill" else [result])])

    @app.post("/fill", response_model=list[Prediction], responses=ERRORS)
    async def fill(body: TextIn):
        """Candidates for the one blank: what `bilm fill CKPT TEXT --json` prints.

        A bi model answers [bi, bi-rescore]; a uni model [uni-left, uni-rescore]."""
        return await answer("fill", body)

    @app.post("/predict", response_model=list[Prediction], responses=ERRORS)
    async def predict(body: TextIn):
        """The next word after the text: what `bilm predict CKPT TEXT --json` prints."""
        return await answer("predict", body)

    @app.get("/models")
    async def list_models() -> list[dict]:
        """The loaded checkpoints in the order given: name, kind, corpus, size, minutes, validation figure."""
        return [m.info for m in models]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": [m.name for m in models]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    return app
