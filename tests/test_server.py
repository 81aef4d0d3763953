"""The HTTP service over a real uvicorn server, SQLite and FAISS files, with the fake encoder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import FakeEncoder, run_server
from typer.testing import CliRunner

from bindindex.cli.app import app as cli_app
from bindindex.index import LOCK_FILE, Index
from bindindex.server import ServerSettings, Service, create_app
from bindindex.server.service import THUMBNAIL_FOLDER

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, paired: Path) -> Path:
    """An index of the paired corpus, read in place, built with the fake encoder."""
    folder = tmp_path_factory.mktemp("served") / "index"
    with Index.open(folder, model="fake") as index:
        index._encoder = FakeEncoder()
        report = index.add_paths([paired])
    assert report.failed == 0
    return folder


@contextlib.contextmanager
def serving(settings: ServerSettings, encoder: Any = None) -> Iterator[httpx.Client]:
    service = Service.open(settings)
    service.index._encoder = encoder or FakeEncoder()
    with (
        run_server(create_app(service)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def client(index_dir: Path, paired: Path) -> Iterator[httpx.Client]:
    settings = ServerSettings(index=index_dir, model="fake", roots=(paired,))
    with serving(settings) as http:
        yield http


def first_file(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def item_id_of(index_dir: Path, path: Path) -> int:
    with Index.open(index_dir, create=False) as index:
        for item in index.catalog.items(status="indexed"):
            if item.fs_path == path:
                return item.id
    raise AssertionError(f"{path} is not indexed")


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]
    assert "Traceback" not in response.text
    return error


# -- health and documentation ------------------------------------------------


def test_health_ok(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_lists_every_endpoint(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/search",
        "/items/{item_id}",
        "/items/{item_id}/media",
        "/items/{item_id}/thumbnail",
        "/clusters",
        "/clusters/{run_id}",
        "/cluster",
        "/index",
        "/jobs/{job_id}",
        "/health",
    ):
        assert path in paths
    body = paths["/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


def test_info_counts_items(client: httpx.Client, paired: Path) -> None:
    info = client.get("/info").json()
    total = sum(1 for p in paired.rglob("*") if p.is_file())
    assert info["vectors"] == total
    assert info["model_name"] == "fake"


def test_page_and_static_files(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# -- search ------------------------------------------------------------------


def test_search_text(client: httpx.Client) -> None:
    response = client.post("/search", json={"text": "a dog barking", "k": 5})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 5
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert set(hit) == {"id", "path", "modality", "score", "media_url", "thumbnail_url"}
        assert not hit["path"].startswith("/")
        assert hit["media_url"] == f"/items/{hit['id']}/media"
        if hit["modality"] == "image":
            assert hit["thumbnail_url"] == f"/items/{hit['id']}/thumbnail"
        else:
            assert hit["thumbnail_url"] is None


def test_search_modality_filter(client: httpx.Client) -> None:
    hits = client.post("/search", json={"text": "bells", "modality": "audio", "k": 4}).json()[
        "hits"
    ]
    assert len(hits) == 4
    assert {hit["modality"] for hit in hits} == {"audio"}


def test_search_item_leaves_item_out(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    item_id = item_id_of(index_dir, first_file(paired / "dog" / "images", "*.jpg"))
    hits = client.post("/search", json={"item": item_id, "k": 3}).json()["hits"]
    assert len(hits) == 3
    assert item_id not in [hit["id"] for hit in hits]


def test_search_weighted_terms(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    item_id = item_id_of(index_dir, first_file(paired / "cat" / "images", "*.jpg"))
    plain = client.post("/search", json={"item": item_id, "k": 5}).json()["hits"]
    weighted = client.post(
        "/search",
        json={
            "terms": [
                {"kind": "item", "value": item_id, "weight": 1.0},
                {"kind": "text", "value": "rain", "weight": 0.0},
            ],
            "k": 5,
        },
    ).json()["hits"]
    assert [hit["id"] for hit in weighted] == [hit["id"] for hit in plain]
    assert np.allclose([h["score"] for h in weighted], [h["score"] for h in plain], atol=1e-5)


@pytest.mark.parametrize("field", ["audio", "file"])
def test_search_audio_upload_for_images(client: httpx.Client, paired: Path, field: str) -> None:
    wav = paired / "dog" / "audio" / "imagebind_dog.wav"
    with wav.open("rb") as file:
        response = client.post(
            "/search",
            files={field: ("bark.wav", file, "audio/wav")},
            data={"modality": "image", "k": "3"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"]["kind"] == "audio"
    assert body["query"]["upload"] == "bark.wav"
    assert len(body["hits"]) == 3
    assert {hit["modality"] for hit in body["hits"]} == {"image"}


def test_search_image_upload(client: httpx.Client, paired: Path) -> None:
    jpg = first_file(paired / "car" / "images", "*.jpg")
    with jpg.open("rb") as file:
        response = client.post("/search", files={"image": ("car.jpg", file)}, data={"k": "2"})
    assert response.status_code == 200, response.text
    assert response.json()["query"]["kind"] == "image"


def test_text_file_posted_as_audio_is_415(client: httpx.Client) -> None:
    response = client.post(
        "/search", files={"audio": ("notes.wav", b"just some notes, not sound\n", "audio/wav")}
    )
    assert_error(response, 415, "unsupported_media_type", "'notes.wav'", "text")


def test_image_posted_as_audio_is_415(client: httpx.Client, paired: Path) -> None:
    data = first_file(paired / "cat" / "images", "*.jpg").read_bytes()
    response = client.post("/search", files={"audio": ("cat.wav", data)})
    assert_error(response, 415, "unsupported_media_type", "sent as audio", "JPEG image")


def test_empty_upload_is_415(client: httpx.Client) -> None:
    response = client.post("/search", files={"file": ("empty.flac", b"")})
    assert_error(response, 415, "unsupported_media_type", "empty")


def test_truncated_audio_upload_is_422(client: httpx.Client, paired: Path) -> None:
    head = (paired / "dog" / "audio" / "imagebind_dog.wav").read_bytes()[:60]
    response = client.post("/search", files={"file": ("cut.wav", head)})
    error = assert_error(response, 422, "undecodable_media", "'cut.wav'")
    assert "bindindex-query-" not in error["message"]


def test_search_bad_requests(client: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
        ),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {"text": "x", "k": 0}}, 422, "invalid_request"),
        ({"json": {"text": "x", "modality": "video"}}, 422, "invalid_request"),
        ({"json": {"text": "x", "path": "/etc/passwd"}}, 422, "invalid_request"),
        ({"json": {"terms": [{"kind": "audio", "value": "/etc/passwd"}]}}, 422, "invalid_request"),
        ({"json": {"item": 999999}}, 404, "not_found"),
        (
            {"content": b"text=x", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"files": {"video": ("a.wav", b"RIFF")}}, 400, "invalid_request"),
        ({"data": {"k": "3"}, "files": {}}, 400, "invalid_request"),
    ]
    for kwargs, status, code in cases:
        if kwargs.get("files") == {}:
            # A multipart body without any file.
            kwargs = {"files": {"k": (None, "3")}}
        assert_error(client.post("/search", **kwargs), status, code)


def test_two_query_files_are_400(client: httpx.Client) -> None:
    files = [("audio", ("a.wav", b"RIFF")), ("image", ("b.jpg", b"\xff\xd8\xff"))]
    assert_error(client.post("/search", files=files), 400, "invalid_request")


def test_multipart_bad_k_is_422(client: httpx.Client, paired: Path) -> None:
    wav = (paired / "dog" / "audio" / "imagebind_dog.wav").read_bytes()
    response = client.post("/search", files={"audio": ("a.wav", wav)}, data={"k": "many"})
    assert_error(response, 422, "invalid_request", "k")


# -- items, media, thumbnails ----------------------------------------------------


def test_item_record(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    path = first_file(paired / "dog" / "images", "*.jpg")
    item_id = item_id_of(index_dir, path)
    item = client.get(f"/items/{item_id}").json()
    assert item["id"] == item_id
    assert item["path"] == path.relative_to(paired).as_posix()
    assert item["modality"] == "image"
    assert item["media_type"] == "image/jpeg"
    assert item["width"] > 0


def test_unknown_item_is_404(client: httpx.Client) -> None:
    for url in ("/items/424242", "/items/424242/media", "/items/424242/thumbnail"):
        assert_error(client.get(url), 404, "not_found", "424242")
    assert_error(client.get("/items/abc"), 422, "invalid_request")


def test_media_bytes_and_type(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    for path, media_type in (
        (paired / "dog" / "audio" / "imagebind_dog.wav", "audio/wav"),
        (paired / "dog" / "audio" / "freesound583142_puppy_bark.flac", "audio/flac"),
        (first_file(paired / "dog" / "images", "*.jpg"), "image/jpeg"),
    ):
        response = client.get(f"/items/{item_id_of(index_dir, path)}/media")
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.headers["accept-ranges"] == "bytes"
        assert response.content == path.read_bytes()


def test_media_range_request(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    wav = paired / "dog" / "audio" / "imagebind_dog.wav"
    data = wav.read_bytes()
    url = f"/items/{item_id_of(index_dir, wav)}/media"
    response = client.get(url, headers={"range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert response.content == data[100:200]
    tail = client.get(url, headers={"range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == data[-10:]
    beyond = client.get(url, headers={"range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


def test_thumbnail_cached(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    from PIL import Image

    path = first_file(paired / "bird" / "images", "*.jpg")
    item_id = item_id_of(index_dir, path)
    response = client.get(f"/items/{item_id}/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    cached = list((index_dir / THUMBNAIL_FOLDER).glob(f"{item_id}-*.jpg"))
    assert len(cached) == 1
    assert cached[0].read_bytes() == response.content
    with Image.open(cached[0]) as thumb:
        assert max(thumb.size) == 256
    modified = cached[0].stat().st_mtime_ns
    assert client.get(f"/items/{item_id}/thumbnail").content == response.content
    assert cached[0].stat().st_mtime_ns == modified


def test_audio_has_no_thumbnail(client: httpx.Client, index_dir: Path, paired: Path) -> None:
    item_id = item_id_of(index_dir, paired / "dog" / "audio" / "imagebind_dog.wav")
    assert_error(client.get(f"/items/{item_id}/thumbnail"), 404, "not_found", "only images")


def test_vanished_file_is_404(tmp_path: Path, paired: Path) -> None:
    media = tmp_path / "media" / "dog"
    media.mkdir(parents=True)
    jpg = shutil.copy(first_file(paired / "dog" / "images", "*.jpg"), media / "dog.jpg")
    with Index.open(tmp_path / "index", model="fake") as index:
        index._encoder = FakeEncoder()
        index.add_paths([tmp_path / "media"])
    item_id = item_id_of(tmp_path / "index", Path(jpg))
    os.remove(jpg)
    with serving(ServerSettings(index=tmp_path / "index", model="fake")) as http:
        for url in (f"/items/{item_id}/media", f"/items/{item_id}/thumbnail"):
            assert_error(http.get(url), 404, "not_found", "no longer exists", "dog/dog.jpg")
        assert http.get(f"/items/{item_id}").status_code == 200


def test_imported_vector_has_no_media(tmp_path: Path) -> None:
    source = tmp_path / "rows.npy"
    np.save(source, np.random.default_rng(3).standard_normal((2, 32)))
    with Index.open(tmp_path / "index", model="fake") as index:
        index._encoder = FakeEncoder()
        item_id = index.import_vectors(source, modality="image").ids[0]
    with serving(ServerSettings(index=tmp_path / "index", model="fake")) as http:
        item = http.get(f"/items/{item_id}").json()
        assert item["path"] == "rows.npy#0"
        assert item["media_url"] is None
        assert item["thumbnail_url"] is None
        for url in (f"/items/{item_id}/media", f"/items/{item_id}/thumbnail"):
            assert_error(http.get(url), 404, "not_found", "imported from a .npy file")
        hits = http.post("/search", json={"item": item_id, "k": 1}).json()["hits"]
        assert hits[0]["media_url"] is None


def test_non_utf8_file_name_served(tmp_path: Path, paired: Path) -> None:
    media = tmp_path / "media" / "cat"
    media.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.jpg")
    source = first_file(paired / "cat" / "images", "*.jpg")
    shutil.copy(source, media / name)
    with Index.open(tmp_path / "index", model="fake") as index:
        index._encoder = FakeEncoder()
        index.add_paths([tmp_path / "media"])
    item_id = item_id_of(tmp_path / "index", media / name)
    with serving(ServerSettings(index=tmp_path / "index", model="fake")) as http:
        item = http.get(f"/items/{item_id}").json()
        assert item["path"] == "cat/caf\\xe9.jpg"
        media_response = http.get(f"/items/{item_id}/media")
        assert media_response.status_code == 200
        assert media_response.content == source.read_bytes()
        assert http.get(f"/items/{item_id}/thumbnail").status_code == 200


# -- clusters ------------------------------------------------------------------------


def test_cluster_run_and_read(client: httpx.Client, paired: Path) -> None:
    created = client.post("/cluster", json={"k": 3, "labels": "top-folder"})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["k"] == 3
    assert run["params"]["labels"] == "top-folder"
    assert "consistency" in run["metrics"]
    assert len(run["clusters"]) == 3
    total = sum(1 for p in paired.rglob("*") if p.is_file())
    assert sum(cluster["size"] for cluster in run["clusters"]) == total
    concepts = {p.name for p in paired.iterdir()}
    for cluster in run["clusters"]:
        assert cluster["label"] in concepts
        assert 0 < cluster["label_share"] <= 1
        distances = [member["distance"] for member in cluster["members"]]
        assert distances == sorted(distances)
        assert sum(cluster["modalities"].values()) == cluster["size"]

    listed = client.get("/clusters").json()["runs"]
    assert run["run"] in [entry["run"] for entry in listed]
    again = client.get(f"/clusters/{run['run']}").json()
    assert again["clusters"] == run["clusters"]

    limited = client.get(f"/clusters/{run['run']}", params={"members": 1}).json()
    for full, short in zip(run["clusters"], limited["clusters"], strict=True):
        assert short["members"] == full["members"][:1]
        assert short["size"] == full["size"]


def test_cluster_ids_stay_stable_and_names_label(client: httpx.Client) -> None:
    first = client.post("/cluster", json={"k": 4, "center": True}).json()
    second = client.post("/cluster", json={"k": 4, "center": True, "names": True}).json()
    assert second["previous_run"] == first["run"]
    assert {c["cluster"] for c in second["clusters"]} == {c["cluster"] for c in first["clusters"]}
    assert second["center"] is True
    for cluster in second["clusters"]:
        assert cluster["name"]
        assert cluster["label"] == cluster["name"]
        assert cluster["label_share"] is None
        assert not any(member["path"].startswith("/") for member in cluster["members"])


def test_cluster_auto_k(client: httpx.Client) -> None:
    run = client.post("/cluster", json={"auto_k": [2, 4]}).json()
    assert 2 <= run["k"] <= 4
    assert run["auto_k"]


def test_cluster_bad_requests(client: httpx.Client) -> None:
    assert_error(client.get("/clusters/9999"), 404, "not_found", "9999")
    assert_error(client.get("/clusters/1", params={"members": -1}), 422, "invalid_request")
    assert_error(client.post("/cluster", json={"k": 0}), 422, "invalid_request")
    assert_error(
        client.post("/cluster", json={"k": 2, "labels": "/etc/labels.csv"}), 422, "invalid_request"
    )


# -- indexing jobs -------------------------------------------------------------------


def wait_for_job(http: httpx.Client, url: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(url).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout_s} s"
        time.sleep(0.05)


def copy_concepts(paired: Path, target: Path, *concepts: str) -> Path:
    """Copy concept folders of the corpus to ``target``, for tests that change the files."""
    for concept in concepts:
        shutil.copytree(paired / concept, target / concept)
    return target


def test_index_job_adds_new_file(tmp_path: Path, paired: Path) -> None:
    media = copy_concepts(paired, tmp_path / "media", "dog")
    settings = ServerSettings(index=tmp_path / "index", model="fake", roots=(media,))
    with serving(settings) as http:
        started = http.post("/index")
        assert started.status_code == 202, started.text
        assert started.headers["location"] == started.json()["url"]
        job = wait_for_job(http, started.json()["url"])
        assert job["status"] == "succeeded", job
        assert job["report"]["added"] == 6
        assert job["embedded"] == 6
        assert job["files_done"] == 6
        assert job["files_total"] == 6
        assert job["elapsed_s"] >= 0
        # Searches find the job's vectors without a restart.
        assert len(http.post("/search", json={"text": "dog", "k": 10}).json()["hits"]) == 6

        shutil.copy(
            paired / "cat" / "images" / sorted(os.listdir(paired / "cat" / "images"))[0],
            media / "dog" / "extra.jpg",
        )
        job = wait_for_job(http, http.post("/index").json()["url"])
        assert job["report"]["added"] == 1
        assert job["report"]["unchanged"] == 6
        assert job["embedded"] == 1
        assert (job["files_done"], job["files_total"]) == (1, 1)
        assert http.get("/info").json()["vectors"] == 7
        assert len(http.post("/search", json={"text": "dog", "k": 10}).json()["hits"]) == 7
        assert [entry["id"] for entry in http.get("/jobs").json()["jobs"]] == [1, 2]


def test_index_job_busy_writer(tmp_path: Path, paired: Path) -> None:
    media = copy_concepts(paired, tmp_path / "media", "bird")
    index_dir = tmp_path / "index"
    settings = ServerSettings(index=index_dir, model="fake", roots=(media,))
    with serving(settings) as http:
        # Another writer holds the index's write lock, as 'bindindex index' does.
        with open(index_dir / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.write("4242")
            lock.flush()
            job = wait_for_job(http, http.post("/index").json()["url"])
            fcntl.flock(lock, fcntl.LOCK_UN)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "index_busy"
        assert "being written by process 4242" in job["error"]["message"]
        retried = wait_for_job(http, http.post("/index").json()["url"])
        assert retried["status"] == "succeeded"


def test_unknown_job_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/jobs/77"), 404, "not_found", "job 77")


def test_index_without_roots_is_400(tmp_path: Path) -> None:
    with Index.open(tmp_path / "index", model="fake"):
        pass
    with serving(ServerSettings(index=tmp_path / "index", model="fake")) as http:
        assert_error(http.post("/index"), 400, "invalid_request", "--root")


# -- the model is used by one request at a time ----------------------------------------


class OverlapEncoder(FakeEncoder):
    """A fake encoder that records how many embed calls ran at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    def _tracked(self, embed: Callable[[Any], np.ndarray], x: Any) -> np.ndarray:
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            # Long enough for a concurrent call to overlap if the service allowed one.
            time.sleep(0.02)
            return embed(x)
        finally:
            with self._count_lock:
                self.active -= 1

    def embed_images(self, x: Any) -> np.ndarray:
        return self._tracked(super().embed_images, x)

    def embed_audio(self, x: Any) -> np.ndarray:
        return self._tracked(super().embed_audio, x)

    def embed_tokens(self, tokens: Any) -> np.ndarray:
        return self._tracked(super().embed_tokens, tokens)


def test_model_calls_never_overlap(tmp_path: Path, paired: Path) -> None:
    media = copy_concepts(paired, tmp_path / "media", "dog", "cat", "car")
    encoder = OverlapEncoder()
    settings = ServerSettings(index=tmp_path / "index", model="fake", roots=(media,))
    with serving(settings, encoder=encoder) as http:
        job = wait_for_job(http, http.post("/index").json()["url"])
        assert job["status"] == "succeeded"
        copy_concepts(paired, media, "bird")
        running = http.post("/index").json()["url"]
        statuses: list[int] = []

        def search(n: int) -> None:
            response = http.post("/search", json={"text": f"query {n}", "k": 2})
            statuses.append(response.status_code)

        threads = [threading.Thread(target=search, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert wait_for_job(http, running)["status"] == "succeeded"
    assert statuses == [200] * 8
    assert encoder.calls["text"] == 8
    assert encoder.max_active == 1


# -- limits and access -----------------------------------------------------------------


def test_oversized_upload_is_413(index_dir: Path, paired: Path) -> None:
    wav = (paired / "dog" / "audio" / "imagebind_dog.wav").read_bytes()
    settings = ServerSettings(index=index_dir, model="fake", max_upload_bytes=64 * 1024)
    with serving(settings) as http:
        response = http.post("/search", files={"audio": ("big.wav", wav)})
        assert_error(response, 413, "payload_too_large", "65536 bytes")

        # A well-formed multipart body, so that the size limit is the only error: with
        # bytes that are not multipart, the parser may reject the first chunk (400).
        body = (
            b"--x\r\n"
            b'Content-Disposition: form-data; name="audio"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + wav + b"\r\n--x--\r\n"
        )

        def chunks() -> Iterator[bytes]:
            # No Content-Length: the body is counted as it arrives.
            for start in range(0, len(body), 16 * 1024):
                yield body[start : start + 16 * 1024]

        streamed = http.post(
            "/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert_error(streamed, 413, "payload_too_large")
        assert http.get("/health").status_code == 200
        small = http.post("/search", json={"text": "still works", "k": 1})
        assert small.status_code == 200


def test_token_required(index_dir: Path) -> None:
    settings = ServerSettings(index=index_dir, model="fake", token=TOKEN)
    with serving(settings) as http:
        assert http.get("/health").status_code == 200
        assert_error(http.get("/info"), 401, "unauthorized", "Authorization")
        wrong = http.get("/clusters", headers={"authorization": "Bearer nope"})
        assert_error(wrong, 401, "unauthorized")
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert_error(http.post("/search", json={"text": "x"}), 401, "unauthorized")
        assert_error(http.get("/", params={"token": "nope"}), 401, "unauthorized")

        good = http.get("/info", headers={"authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
        assert "set-cookie" not in good.headers

        page = http.get("/", params={"token": TOKEN})
        assert page.status_code == 200
        assert "HttpOnly" in page.headers["set-cookie"]
        # The cookie from the page lets media and thumbnail requests through.
        assert http.get("/info").status_code == 200
        http.cookies.clear()
        assert http.get("/info").status_code == 401


def test_unknown_endpoint_is_json_404(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "not_found", "/nope")
    assert_error(client.delete("/search"), 405, "method_not_allowed")


# -- the serve command -------------------------------------------------------------------


def test_serve_help_has_example() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "Example: bindindex serve" in result.stdout


def test_serve_rejects_remote_host_without_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["serve", "--index", str(tmp_path / "i"), "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "--allow-remote" in result.stderr


def test_serve_missing_index_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no index at" in result.stderr
