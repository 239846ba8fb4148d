"""The web service of ``gramx serve``: a FastAPI app over one loaded model and one opened index.

::

    app = create_app(load_model(MODEL, modalities=...), EmbeddingIndex.load(INDEX))

- ``GET /api/search?q=TEXT&modality=audio,image&k=10``: a text query;
  ``POST /api/search`` (a form: ``file``, its ``query_modality``, ``modality``, ``k``): an
  uploaded recording, photo or clip, loaded by its modality's own plugin. Both answer
  ``{"score", "hits": [{"rank", "id", "score", "values", "media"}]}``: cosine for one
  candidate modality, the model's score for tuples; ``media`` gives the content type of
  each value that is a file (``GET /media/ID/MODALITY`` serves it).
- ``GET /api/info``: the model and the index.
- ``GET /media/ID/MODALITY``: a hit's file, only from the index's source folders (:mod:`gramx.serve.media`),
  with byte ranges (:mod:`gramx.serve.ranges`).
- ``GET /``: the single page (``static/``).

Errors are JSON ``{"error", "hint"}`` with the messages the CLI prints, never a traceback.
Requests run in uvicorn's thread pool on the model in eval mode: each embeds its own query,
and the queries waiting together share one pass over the index (:mod:`gramx.serve.batching`).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from gramx.embed.embedding import embed_values
from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex, Hit
from gramx.model.model import GramxModel
from gramx.serve.batching import MAX_BATCH, SearchBatcher
from gramx.serve.limits import MAX_K, MAX_UPLOAD, UploadLimit, UploadTooLarge
from gramx.serve.media import NotServed, content_type, media_file, media_roots
from gramx.serve.ranges import part_response

__all__ = ["create_app"]

STATIC = files("gramx.serve") / "static"


def _error(status: int, exc: BaseException) -> JSONResponse:
    message = str(exc) if isinstance(exc, GramxError) else f"{type(exc).__name__}: {exc}"
    return JSONResponse({"error": " ".join(message.split()), "hint": getattr(exc, "hint", None)}, status_code=status)


def _names(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _k(text: str | int | None) -> int:
    try:
        k = int(text) if text not in (None, "") else 10
    except ValueError:
        raise GramxError(f"k must be a whole number, got {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise GramxError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


def create_app(model: GramxModel, index: EmbeddingIndex, max_upload: int = MAX_UPLOAD,
               media: Sequence[str | Path] = (), max_batch: int = MAX_BATCH) -> FastAPI:
    """The app answering searches of ``index`` with ``model`` (checked to be the model that made it).

    ``max_upload``: the largest request body accepted, in bytes (larger ones get 413);
    ``media``: folders besides the index's source folders whose indexed files may be served;
    ``max_batch``: the most queries one pass over the index answers (1: a pass per request).
    """
    index.check_model(model)
    model.eval()  # once, here: requests run in threads and must not switch the mode under one another
    roots = media_roots(index, media)
    batcher = SearchBatcher(index, max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="gramx", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(UploadLimit, limit=max_upload)

    @app.exception_handler(GramxError)
    async def refused(request: Request, exc: GramxError) -> JSONResponse:
        status = 413 if isinstance(exc, UploadTooLarge) else exc.status if isinstance(exc, NotServed) else 400
        return _error(status, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request ({problems})", "hint": None}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:  # a bug: one line, the traceback in the log
        return _error(500, exc)

    def answer(value: Any, modality: str, names: list[str] | None, k: int) -> dict:
        if modality not in model.modalities:
            raise GramxError(f"this server cannot embed a {modality} query",
                             hint=f"query with one of: {', '.join(model.names)}")
        candidates = index.candidates(modality, names)
        query = embed_values(model, modality, [value]).to(model.device)[0]
        score, values, positions = batcher.top(query, candidates, k)
        hits = index.hits(values[None], positions[None], candidates)[0]
        return {"score": score, "hits": [_hit(h) for h in hits]}

    def _hit(h: Hit) -> dict:
        media = {n: content_type(v) for n, v in h.values.items()
                 if isinstance(v, str) and n in model.modalities and model.modalities[n].value_is_path}
        return {"rank": h.rank, "id": h.id, "score": h.score, "values": h.values, "media": media}

    @app.get("/api/info")
    def info() -> dict:
        made_by = index.record.model
        return {"model": {"path": str(model.source), "modalities": made_by.modalities, "loaded": model.names,
                          "score": made_by.score, "dim": made_by.dim, "fingerprint": made_by.fingerprint},
                "index": {"path": str(index.folder), "rows": len(index), "dtype": index.record.dtype,
                          "modalities": {n: index.rows_with(n) for n in index.modalities},
                          "queries": [n for n in model.names if n != "text"]}}

    @app.get("/api/search")
    def search_text(q: str, modality: str | None = None, k: str | None = None) -> dict:
        if not q.strip():
            raise GramxError("the query is empty", hint="type some text to search for")
        return answer(q, "text", _names(modality), _k(k))

    @app.post("/api/search")
    async def search_file(request: Request) -> dict:
        form = await request.form(max_files=1, max_fields=8)
        upload, query_modality = form.get("file"), str(form.get("query_modality") or "")
        if upload is None or isinstance(upload, str):
            raise GramxError("no file uploaded", hint="send a form with a file and its query_modality")
        names, k = _names(str(form.get("modality") or "")), _k(form.get("k"))
        queried = model.modalities.get(query_modality)
        if queried is not None and not queried.value_is_path and queried.resolve is None:
            raise GramxError(f"a {query_modality} query is its value, not a file",
                             hint="send it as text: GET /api/search?q=...")
        suffix = Path(upload.filename or "").suffix[:16]
        with tempfile.TemporaryDirectory(prefix="gramx-serve-") as tmp:
            path = Path(tmp) / f"query{suffix}"  # the plugin's loader reads a path; the name the client sent is not used
            path.write_bytes(await upload.read())
            try:
                return await run_in_threadpool(answer, str(path), query_modality or "(none)", names, k)
            except GramxError as exc:  # name the file as the client sent it, not where it was written
                raise GramxError(str(exc).replace(str(path), upload.filename or "the upload"), exc.hint) from None

    @app.get("/media/{rid:path}/{modality}")
    def media(rid: str, modality: str, request: Request) -> Response:
        found = media_file(index, roots, rid, modality)
        size = found.path.stat().st_size if found.size is None else found.size
        return part_response(found.path, found.content_type, found.offset, size, request.headers.get("range"))

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
