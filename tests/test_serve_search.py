"""`POST /v1/llamavid/search`, in this process (TestClient, the tiny checkpoint): the same moments as
``llamavid.search``, files named as the client names them, only files under the media roots, and every bad
request a 4xx naming its field."""

from __future__ import annotations

import os

import pytest
from test_search import CODE, vidtok

from llamavid.core.options import SearchOptions
from llamavid.server.media_access import MediaAccess
from llamavid.tasks.search import search


@pytest.fixture
def served(tmp_path, tiny_model):
    """A media root with a library (lib/: a.vidtok, b.vidtok whose 12-14 s say the code word, sub/c.vidtok),
    an empty folder, and a .vidtok outside the root that a link inside lib/ points to."""
    from starlette.testclient import TestClient

    from llamavid.server.app import create_app

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "lib" / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    outside.mkdir()
    vidtok(root / "lib" / "a.vidtok", tiny_model, seed=1, subtitles=[(3.0, 5.0, "Remember the code word.")])
    vidtok(root / "lib" / "b.vidtok", tiny_model, seed=2, subtitles=[(12.0, 14.0, "The code word is tiger.")])
    vidtok(root / "lib" / "sub" / "c.vidtok", tiny_model, seed=3, subtitles=[(8.0, 10.0, "Now watch this.")])
    vidtok(outside / "secret.vidtok", tiny_model, seed=4, subtitles=[(1.0, 3.0, "The code word is tiger.")])
    (root / "lib" / "escape.vidtok").symlink_to(outside / "secret.vidtok")
    app = create_app(tiny_model, MediaAccess([root]), model_id="tiny")
    with TestClient(app) as client:
        yield {"client": client, "root": root, "outside": outside, "app": app}


def post(served, **body):
    return served["client"].post("/v1/llamavid/search", json=body)


def test_the_endpoint_finds_what_the_library_finds_and_names_files_as_the_client_does(served, tiny_model):
    reply = post(served, query=CODE, paths=["lib"], top=3, rerank=0)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "llamavid.search" and body["files"] == 3 and body["query"] == CODE
    library = search(tiny_model, [served["root"] / "lib" / name for name in ("a.vidtok", "b.vidtok", "sub/c.vidtok")],
                     CODE, SearchOptions(top=3, rerank=0))
    assert [(m["start"], m["end"], m["score"]) for m in body["moments"]] == \
        [m.to_json() | {} and (m.to_json()["start"], m.to_json()["end"], m.to_json()["score"]) for m in library.moments]
    assert body["moments"][0]["video"] == "lib/b.vidtok" and body["moments"][0]["start"] < 14
    assert {m["video"] for m in body["moments"]} <= {"lib/a.vidtok", "lib/b.vidtok", "lib/sub/c.vidtok"}
    # the link out of the root is left out, and said so, without the path it points to
    assert body["skipped"] == ["lib/escape.vidtok: skipped: a link out of the server's media roots"]
    assert str(served["root"]) not in reply.text and str(served["outside"]) not in reply.text


def test_a_damaged_file_is_skipped_by_its_name_and_answers_come_with_moments(served):
    (served["root"] / "lib" / "junk.vidtok").write_bytes(b"not a vidtok" * 20)
    reply = post(served, query=CODE, paths=["lib", "lib/b.vidtok"], top=2, rerank=2, answer=True, max_tokens=2,
                 temperature=0)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["files"] == 3 and len(body["moments"]) == 2
    assert all(isinstance(m["answer"], str) for m in body["moments"])
    assert any(s.startswith("lib/junk.vidtok: skipped: ") for s in body["skipped"]), body["skipped"]
    assert str(served["root"]) not in reply.text


@pytest.mark.parametrize("body, status, param, words", [
    ({"query": CODE, "paths": ["lib"], "top": 0}, 400, "top", '"top": 0 must be at least 1'),
    ({"query": CODE, "paths": ["lib"], "top": "5"}, 400, "top", '"top": "5" must be a whole number'),
    ({"query": CODE, "paths": ["lib"], "rerank": -1}, 400, "rerank", '"rerank": -1 must be at least 0'),
    ({"query": CODE, "paths": ["lib"], "closer": 2.5}, 400, "closer", '"closer": 2.5 must be a whole number'),
    ({"query": CODE, "paths": ["lib"], "answer": "yes"}, 400, "answer", '"answer"'),
    ({"query": CODE, "paths": ["lib"], "max_tokens": 10**6}, 400, "max_tokens", "more than this server allows"),
    ({"query": "   ", "paths": ["lib"]}, 400, "query", '"query" is empty'),
    ({"query": 3, "paths": ["lib"]}, 400, "query", '"query" must be text'),
    ({"paths": ["lib"]}, 400, "query", '"query" is required'),
    ({"query": CODE}, 400, "paths", '"paths" must be a non-empty list'),
    ({"query": CODE, "paths": []}, 400, "paths", '"paths" must be a non-empty list'),
    ({"query": CODE, "paths": [7]}, 400, "paths[0]", "paths[0] must be a non-empty string"),
    ({"query": CODE, "paths": ["empty"]}, 400, "paths[0]", "empty: holds no .vidtok files or videos"),
    ({"query": CODE, "paths": ["lib", "missing.vidtok"]}, 404, "paths[1]", "missing.vidtok: no such file"),
    ({"query": CODE, "paths": ["../outside"]}, 403, "paths[0]", "outside the server's media roots"),
    ({"query": CODE, "paths": ["lib"], "model": "other"}, 404, "model", "is not served here"),
    ({"query": CODE, "paths": ["lib"], "messages": []}, 400, "messages", 'unknown field "messages"'),
])
def test_bad_requests_are_4xx_naming_the_field(served, body, status, param, words):
    reply = served["client"].post("/v1/llamavid/search", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert str(served["root"]) not in reply.text and "Traceback" not in reply.text


def test_files_of_another_encoder_are_refused_naming_the_file(served, tiny_model):
    vidtok(served["root"] / "lib" / "foreign.vidtok", tiny_model, seed=5, fingerprint="eva-something-else")
    reply = post(served, query=CODE, paths=["lib"])
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "paths" and error["message"].startswith("lib/foreign.vidtok: made with vision encoder")
    assert "cannot be searched together" in error["message"] and str(served["root"]) not in reply.text
    assert served["app"].state.searcher.stats().failed == 1


def test_a_server_without_media_roots_searches_nothing(tmp_path, tiny_model):
    from starlette.testclient import TestClient

    from llamavid.server.app import create_app

    vidtok(tmp_path / "a.vidtok", tiny_model, seed=1)
    with TestClient(create_app(tiny_model, MediaAccess([]), model_id="tiny")) as client:
        reply = client.post("/v1/llamavid/search", json={"query": CODE, "paths": [os.fspath(tmp_path / "a.vidtok")]})
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "media_access_denied"
    assert str(tmp_path) not in reply.text


def test_a_cancelled_search_stops_and_is_counted(tmp_path, tiny_model):
    import threading

    from llamavid.core.errors import LlamaVidError
    from llamavid.server.protocol import parse_search_request
    from llamavid.server.service import SearchService

    root = tmp_path / "root"
    root.mkdir()
    for i in range(6):
        vidtok(root / f"v{i}.vidtok", tiny_model, seed=i)
    request = parse_search_request({"query": CODE, "paths": ["."], "rerank": 0}, model_id="tiny",
                                   media=MediaAccess([root]))
    service = SearchService(tiny_model)
    gate = threading.Event()
    blocker = service._pool.submit(gate.wait)  # holds the search thread: the search below waits its turn
    try:
        waiting = service.submit(request)
        assert service.cancel(waiting) and waiting.cancelled()
    finally:
        gate.set()
    blocker.result()
    running = service.submit(request)
    running.result(timeout=60)
    assert not service.cancel(running)  # finished: nothing to cancel
    stats = service.stats()
    assert (stats.searches, stats.found, stats.cancelled, stats.failed) == (2, 1, 1, 0)
    service.close()
    with pytest.raises(LlamaVidError, match="shutting down"):
        service.submit(request)


def test_a_running_search_stops_at_its_next_file_when_cancelled(tmp_path, tiny_model, monkeypatch):
    import threading

    from llamavid.server import service as service_module
    from llamavid.server.protocol import parse_search_request
    from llamavid.server.service import Cancelled, SearchService

    root = tmp_path / "root"
    root.mkdir()
    vidtok(root / "v.vidtok", tiny_model, seed=1)
    started, files_done = threading.Event(), []

    def slow_search(model, files, query, options, *, callbacks):  # a file a tenth of a second, 100 files
        for i in range(100):
            started.set()
            threading.Event().wait(0.1)
            files_done.append(i)
            callbacks.advance(i + 1, 100)

    monkeypatch.setattr(service_module, "search", slow_search)
    service = SearchService(tiny_model)
    future = service.submit(parse_search_request({"query": CODE, "paths": ["v.vidtok"]}, model_id="tiny",
                                                 media=MediaAccess([root])))
    assert started.wait(10)
    assert service.cancel(future)
    with pytest.raises(Cancelled, match="disconnected"):
        future.result(timeout=10)
    assert len(files_done) <= 2 and service.stats().cancelled == 1
    service.close()
