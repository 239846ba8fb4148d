"""The size limit of ``gramx serve``'s requests (:mod:`gramx.serve.limits`): refused before or while read."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gramx.serve.limits import UploadLimit, UploadTooLarge


@pytest.fixture
def client():
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request):
        return {"read": len(await request.body())}

    return TestClient(UploadLimit(app, limit=1000))


def test_a_body_within_the_limit_passes(client):
    assert client.post("/echo", content=b"x" * 1000).json() == {"read": 1000}


def test_a_body_declared_too_large_is_413_before_it_is_read(client):
    response = client.post("/echo", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.json()["error"] == str(UploadTooLarge(1000)) and "--max-upload" in response.json()["hint"]


def test_a_content_length_that_is_not_a_number_is_400(client):
    response = client.post("/echo", content=b"x", headers={"content-length": "lots"})
    assert response.status_code == 400 and response.json()["error"] == "Content-Length is not a number"


def test_a_body_that_grows_past_a_false_declaration_is_stopped_while_read(client):
    def chunks():  # sent chunked: no Content-Length at all
        for _ in range(5):
            yield b"x" * 300

    with pytest.raises(UploadTooLarge):
        client.post("/echo", content=chunks())
