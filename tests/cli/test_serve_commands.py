"""``gramx serve``: the towers it loads, the address it says it binds, a warning off localhost, errors as the CLI's."""

from __future__ import annotations

import pytest
import uvicorn
from fixture_digits import altered_copy

from gramx.cli import main
from gramx.cli.serve_commands import towers
from gramx.index.reader import EmbeddingIndex


@pytest.fixture
def started(monkeypatch):
    """``uvicorn.run`` replaced: the app and where it would listen, recorded instead of served."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    return calls


def test_it_loads_the_indexed_towers_and_text(digits_index, tmp_path, one_thread):
    assert towers(digits_index.model, EmbeddingIndex.load(digits_index.index)) == ["audio", "image", "text"]
    assert main(["embed", str(digits_index.model), str(digits_index.manifest), "-o", str(tmp_path / "images"),
                 "--modalities", "image"]) == 0
    assert towers(digits_index.model, EmbeddingIndex.load(tmp_path / "images")) == ["image", "text"]


def test_it_binds_localhost_by_default_and_says_where(digits_index, started, capsys, one_thread):
    assert main(["serve", str(digits_index.model), "--index", str(digits_index.index), "--port", "8123",
                 "--device", "cpu"]) == 0
    (app, options), = started
    assert options["host"] == "127.0.0.1" and options["port"] == 8123
    out, err = capsys.readouterr()
    assert "16 rows" in out and "http://127.0.0.1:8123/" in out and err == ""
    assert {route.path for route in app.routes} >= {"/", "/api/search", "/api/info", "/media/{rid:path}/{modality}"}


def test_it_warns_when_listening_beyond_this_machine(digits_index, started, capsys, one_thread):
    assert main(["serve", str(digits_index.model), "--index", str(digits_index.index), "--host", "0.0.0.0",
                 "--device", "cpu"]) == 0
    assert started[0][1]["host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert err.startswith("gramx: warning: listening on 0.0.0.0") and "anyone who can reach it" in err


def test_a_model_that_did_not_make_the_index_is_refused(digits_index, started, capsys, tmp_path):
    other = altered_copy(digits_index.model, tmp_path / "other")
    assert main(["serve", str(other), "--index", str(digits_index.index), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "gramx: error: the index at" in err and "their weights differ" in err and "Traceback" not in err
    assert err.splitlines()[1].startswith("hint: search with the model that made the index")
    assert not started


def test_a_folder_that_is_not_an_index_is_refused(digits_index, started, capsys, tmp_path):
    assert main(["serve", str(digits_index.model), "--index", str(tmp_path)]) == 1
    assert f"{tmp_path} is not an embedding index" in capsys.readouterr().err
    assert not started


def test_a_port_in_use_is_refused_before_the_model_loads(digits_index, started, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(digits_index.model), "--index", str(digits_index.index), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"gramx: error: cannot listen on 127.0.0.1:{port}" in err and "hint: choose another --port" in err
    assert not started
