"""The API of ``gramx serve`` through FastAPI's test client, over a small real index (digits: audio, image, text).

Searches answer what :meth:`EmbeddingIndex.query` (the ``gramx search`` path) answers; media are
served only from the index's source folder; bad requests get the CLI's messages as JSON.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fastapi.testclient import TestClient
from fixture_digits import altered_copy

from gramx.cli import main
from gramx.cli.serve_commands import towers
from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex
from gramx.model.model import load_model
from gramx.serve.app import create_app


@pytest.fixture(scope="module")
def served(digits_index, one_thread):
    index = EmbeddingIndex.load(digits_index.index)
    model = load_model(digits_index.model, device="cpu", modalities=towers(digits_index.model, index))
    return model, index


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(*served)) as client:
        yield client


@pytest.fixture(scope="module")
def rows(digits_index):
    return [json.loads(line) for line in digits_index.manifest.read_text().splitlines()]


def expected(served, value, modality, names, k):
    """What ``gramx search`` answers: ``(score name, [(id, score)])``."""
    model, index = served
    score, hits = index.query(model, value, modality, names, k=k)
    return score, [(h.id, h.score) for h in hits]


def answered(response):
    assert response.status_code == 200, response.text
    body = response.json()
    return body["score"], [(h["id"], h["score"]) for h in body["hits"]]


def same(answer, wanted) -> bool:
    """The same score name, ids in the same order, scores equal to float precision."""
    (score, hits), (score_wanted, hits_wanted) = answer, wanted
    return (score == score_wanted and [h for h, _ in hits] == [h for h, _ in hits_wanted]
            and [s for _, s in hits] == pytest.approx([s for _, s in hits_wanted], abs=1e-5))


def test_info_describes_the_model_and_the_index(client, served, digits_index):
    model, index = served
    info = client.get("/api/info").json()
    assert info["model"]["modalities"] == ["audio", "image", "text"]
    assert info["model"]["score"] == model.score and info["model"]["dim"] == 32
    assert info["model"]["fingerprint"] == model.fingerprint
    assert info["index"]["rows"] == 16 and info["index"]["modalities"] == {"audio": 16, "image": 16, "text": 16}
    assert info["index"]["queries"] == ["audio", "image"]


def test_text_search_ranks_one_modality_by_cosine(client, served, rows):
    score, hits = answered(client.get("/api/search", params={"q": "seven", "modality": "audio", "k": 5}))
    assert same((score, hits), expected(served, "seven", "text", ["audio"], 5))
    assert score == "cosine" and len(hits) == 5
    assert {h for h, _ in hits} <= {r["id"] for r in rows}
    body = client.get("/api/search", params={"q": "seven", "modality": "audio", "k": 5}).json()
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    assert body["hits"][0]["media"] == {"audio": "audio/flac"}


def test_tuples_are_ranked_by_the_models_score(client, served):
    model, _ = served
    score, hits = answered(client.get("/api/search", params={"q": "the digit two", "modality": "audio,image", "k": 4}))
    assert score == model.score != "cosine"
    assert same((score, hits), expected(served, "the digit two", "text", ["audio", "image"], 4))
    first = client.get("/api/search", params={"q": "the digit two", "modality": "audio,image", "k": 4}).json()["hits"][0]
    assert set(first["values"]) == {"audio", "image"} and first["media"]["image"] == "image/jpeg"


@pytest.mark.parametrize("modality, candidates", [("audio", "image,text"), ("image", "audio")])
def test_an_uploaded_recording_or_photo_is_a_query(client, served, rows, digits_index, modality, candidates):
    path = digits_index.manifest.parent / rows[3][modality]
    with path.open("rb") as f:
        response = client.post("/api/search", files={"file": (path.name, f)},
                               data={"query_modality": modality, "modality": candidates, "k": "6"})
    assert same(answered(response), expected(served, str(path), modality, candidates.split(","), 6))


def test_media_are_served_with_their_content_type(client, rows, digits_index):
    row = rows[0]
    for modality, kind in (("audio", "audio/flac"), ("image", "image/jpeg")):
        response = client.get(f"/media/{row['id']}/{modality}")
        assert response.status_code == 200 and response.headers["content-type"] == kind
        assert response.content == (digits_index.manifest.parent / row[modality]).read_bytes()
    part = client.get(f"/media/{row['id']}/audio", headers={"range": "bytes=4-13"})  # a player seeking
    assert part.status_code == 206 and part.content == (digits_index.manifest.parent / row["audio"]).read_bytes()[4:14]


def test_the_page_is_served_with_its_script(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    assert "/api/search" in client.get("/static/app.js").text


@pytest.mark.parametrize("url, status, message", [
    ("/media/..%2F..%2F..%2Fetc%2Fpasswd/audio", 404, "the index has no row with id '../../../etc/passwd'"),
    ("/media/../../etc/passwd", 404, None),
    ("/media/test-0-023/smell", 404, "the index has no modality smell"),
])
def test_media_requests_name_rows_never_paths(client, url, status, message):
    response = client.get(url)
    assert response.status_code == status
    if message:
        assert response.json()["error"] == message


def test_media_outside_the_source_folder_are_refused(digits_index, served, tmp_path):
    """Rows whose files lie outside the folder the index was built from: by ``..``, by a link; a pipe; a missing file."""
    model, _ = served
    source = digits_index.manifest.parent
    collection = tmp_path / "collection"
    (collection / "audio").mkdir(parents=True)
    rows = [json.loads(line) for line in digits_index.manifest.read_text().splitlines()][:4]
    os.symlink(source / rows[1]["audio"], collection / "audio" / "linked.flac")
    for row in rows[2:]:
        shutil.copy(source / row["audio"], collection / row["audio"])
    values = [os.path.relpath(source / rows[0]["audio"], collection), "audio/linked.flac", rows[2]["audio"],
              rows[3]["audio"]]
    (collection / "m.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": "x", "audio": v}) + "\n"
                                                for i, v in enumerate(values)))
    assert main(["embed", str(digits_index.model), str(collection / "m.jsonl"), "-o", str(tmp_path / "index"),
                 "--modalities", "audio,text"]) == 0
    (collection / rows[2]["audio"]).unlink()
    os.mkfifo(collection / rows[2]["audio"])
    (collection / rows[3]["audio"]).unlink()
    index = EmbeddingIndex.load(tmp_path / "index")
    client = TestClient(create_app(model, index))
    outside = "lies outside the folders the index was built from"
    for rid, status, message in (("r0", 403, outside), ("r1", 403, outside), ("r2", 403, "is not a regular file"),
                                 ("r3", 404, "is missing")):
        response = client.get(f"/media/{rid}/audio")
        assert response.status_code == status and message in response.json()["error"], (rid, response.text)
    widened = TestClient(create_app(model, index, media=[source]))  # gramx serve --media SOURCE
    assert [widened.get(f"/media/{rid}/audio").status_code for rid in ("r0", "r1")] == [200, 200]


def test_a_huge_upload_is_refused_before_it_is_read(served):
    client = TestClient(create_app(*served, max_upload=1000))
    response = client.post("/api/search", files={"file": ("big.flac", b"\0" * 5000)}, data={"query_modality": "audio"})
    assert response.status_code == 413 and "larger than the server's limit" in response.json()["error"]
    chunked = client.post("/api/search", content=iter([b"\0" * 600] * 3),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 413  # no Content-Length: counted while read


def test_errors_carry_the_clis_messages(client, digits_index, capsys):
    assert main(["search", str(digits_index.model), "--index", str(digits_index.index), "--query", "seven",
                 "--modality", "smell"]) == 1
    cli = capsys.readouterr().err.splitlines()[0].removeprefix("gramx: error: ")
    response = client.get("/api/search", params={"q": "seven", "modality": "smell"})
    assert response.status_code == 400 and response.json()["error"] == cli == "the index has no modality smell"
    assert response.json()["hint"] == "indexed modalities: audio, image, text"


@pytest.mark.parametrize("data, message", [
    ({"query_modality": "smell"}, "this server cannot embed a smell query"),
    ({"query_modality": "text"}, "a text query is its value, not a file"),
    ({"query_modality": "audio", "k": "0"}, "k must be between 1 and 1000, got 0"),
])
def test_a_wrong_modality_or_k_is_a_clear_error(client, data, message):
    response = client.post("/api/search", files={"file": ("q.flac", b"abc")}, data=data)
    assert response.status_code == 400 and response.json()["error"] == message


def test_a_file_that_fails_to_load_is_named_as_sent(client):
    response = client.post("/api/search", files={"file": ("my-recording.flac", b"not audio at all")},
                           data={"query_modality": "audio"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "my-recording.flac" in error and "gramx-serve-" not in error and "Traceback" not in response.text


def test_a_missing_query_is_json_too(client):
    response = client.get("/api/search")
    assert response.status_code == 422 and "q" in response.json()["error"]


def test_a_model_other_than_the_indexs_is_refused(digits_index, tmp_path, served):
    other = altered_copy(digits_index.model, tmp_path / "other")
    with pytest.raises(GramxError, match="their weights differ"):
        create_app(load_model(other, device="cpu", modalities=["text"]), served[1])


def test_files_inside_shards_are_served_with_byte_ranges(digits_index, served, rows, tmp_path):
    from gramx.data.shards import write_shards

    write_shards(digits_index.manifest, tmp_path / "shards", shard_size=5, progress=False)
    assert main(["embed", str(digits_index.model), str(tmp_path / "shards"), "-o", str(tmp_path / "index"),
                 "--modalities", "audio,text"]) == 0
    client = TestClient(create_app(served[0], EmbeddingIndex.load(tmp_path / "index")))
    row = rows[7]  # in the second shard
    recording = (digits_index.manifest.parent / row["audio"]).read_bytes()
    whole = client.get(f"/media/{row['id']}/audio")
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/flac" and whole.content == recording
    for asked, part in (("bytes=-10", recording[-10:]), ("bytes=100-", recording[100:]), ("bytes=5-9", recording[5:10])):
        response = client.get(f"/media/{row['id']}/audio", headers={"range": asked})
        assert response.status_code == 206 and response.content == part, asked
        assert response.headers["content-range"].endswith(f"/{len(recording)}")
    beyond = client.get(f"/media/{row['id']}/audio", headers={"range": f"bytes={len(recording)}-"})
    assert beyond.status_code == 416


@pytest.mark.cuda
def test_on_cuda_the_queries_are_scored_on_the_gpu(digits_index, served, monkeypatch):
    index = served[1]
    model = load_model(digits_index.model, device="cuda", modalities=towers(digits_index.model, index))
    devices, top = [], EmbeddingIndex.top

    def spy(self, queries, *args, **kwargs):
        devices.append(queries.device.type)
        return top(self, queries, *args, **kwargs)

    monkeypatch.setattr(EmbeddingIndex, "top", spy)
    response = TestClient(create_app(model, index)).get("/api/search", params={"q": "seven", "modality": "audio,image",
                                                                             "k": 5})
    assert devices == ["cuda"]
    assert same(answered(response), expected(served, "seven", "text", ["audio", "image"], 5))


def test_searches_at_once_answer_as_one_at_a_time(client, served):
    """Requests run in threads on one model: it stays in eval mode (no BatchNorm statistics of a query)."""
    from concurrent.futures import ThreadPoolExecutor

    queries = ["seven", "the digit two", "nine", "a hand signs four"] * 2
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda q: answered(client.get("/api/search", params={"q": q, "k": 3})), queries))
    assert not served[0].training
    for q, answer in zip(queries, answers):
        assert same(answer, expected(served, q, "text", None, 3))
