"""Byte ranges of a file part (:mod:`gramx.serve.ranges`): what a browser's player asks for to seek."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient

from gramx.serve import ranges
from gramx.serve.ranges import part_response

DATA = bytes(range(256)) * 5  # 1,280 bytes; the part is the 1,000 bytes at offset 100


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setattr(ranges, "BLOCK", 64)  # many blocks per answer
    path = tmp_path / "shard.tar"
    path.write_bytes(DATA)
    app = FastAPI()

    @app.get("/part")
    def part(range: str | None = Header(default=None)):
        return part_response(path, "audio/flac", 100, 1000, range)

    return TestClient(app)


def test_without_a_range_the_whole_part_is_sent(client):
    response = client.get("/part")
    assert response.status_code == 200 and response.content == DATA[100:1100]
    assert response.headers["accept-ranges"] == "bytes" and response.headers["content-type"] == "audio/flac"


@pytest.mark.parametrize("asked, start, stop", [("bytes=10-19", 10, 20), ("bytes=990-", 990, 1000),
                                                ("bytes=-5", 995, 1000), ("bytes=900-5000", 900, 1000)])
def test_one_range_is_sent_as_206_with_its_place(client, asked, start, stop):
    response = client.get("/part", headers={"Range": asked})
    assert response.status_code == 206 and response.content == DATA[100 + start:100 + stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/1000"


def test_a_range_past_the_end_is_416(client):
    response = client.get("/part", headers={"Range": "bytes=1000-"})
    assert response.status_code == 416 and response.headers["content-range"] == "bytes */1000"


@pytest.mark.parametrize("asked", ["bytes=-", "items=0-9", "bytes=0-9,20-29"])
def test_a_range_it_does_not_serve_gets_the_whole_part(client, asked):
    response = client.get("/part", headers={"Range": asked})
    assert response.status_code == 200 and response.content == DATA[100:1100]
