"""Checkpoint resolution, download, cache checks and loading.

Downloads go to a loopback HTTP server started by the ``server`` fixture, which serves
small checkpoints of the TEST architecture and records every request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from bindindex.errors import ModelError, UsageError, WeightsError
from bindindex.model.config import HUGE_CHECKPOINT_URL, MODALITIES, MODELS, TEST, ModelSpec
from bindindex.model.imagebind import ImageBind, init_random_weights
from bindindex.model.weights import (
    cache_root,
    checkpoint_dir,
    checkpoint_fingerprint,
    load_model,
    model_id_for,
    read_checkpoint,
    read_converted,
    resolve_checkpoint,
    sidecar_path,
)

MODEL_NAME = "tiny-download"
FILE_NAME = "tiny.pth"
TINY_SEED = 7


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def save_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_bytes() -> bytes:
    """Return a torch.save'd checkpoint of the TEST architecture (about 13 MB)."""
    model = init_random_weights(ImageBind(TEST, MODALITIES), seed=TINY_SEED)
    return save_to_bytes(model.state_dict())


@pytest.fixture(scope="module")
def wrong_bytes() -> bytes:
    """Return a checkpoint whose audio tower is narrower than TEST's."""
    config = dataclasses.replace(TEST, audio_embed_dim=32, audio_num_heads=2)
    model = init_random_weights(ImageBind(config, MODALITIES), seed=TINY_SEED)
    return save_to_bytes(model.state_dict())


@dataclasses.dataclass
class RecordedRequest:
    path: str
    range_header: str | None
    status: int


class CheckpointServer:
    """Loopback HTTP server with optional Range support and a connection drop."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.honor_range = True
        # Bytes to send before closing the connection, applied to the next request only.
        self.drop_after: int | None = None
        # Called after half of a full response body has been sent.
        self.midway_hook: Callable[[], None] | None = None
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                # The default handler logs to stderr, which the progress-bar tests read.
                pass

            def do_GET(self) -> None:
                body = server.files.get(self.path)
                range_header = self.headers.get("Range")
                if body is None:
                    server.requests.append(RecordedRequest(self.path, range_header, 404))
                    self.send_error(404)
                    return

                start = 0
                status = 200
                if range_header and server.honor_range:
                    start = int(range_header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        server.requests.append(RecordedRequest(self.path, range_header, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                server.requests.append(RecordedRequest(self.path, range_header, status))

                payload = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()

                drop_after, server.drop_after = server.drop_after, None
                if drop_after is not None:
                    self.wfile.write(payload[:drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                half = len(payload) // 2
                self.wfile.write(payload[:half])
                self.wfile.flush()
                if server.midway_hook is not None and status == 200:
                    server.midway_hook()
                self.wfile.write(payload[half:])

        return Handler


@pytest.fixture
def server(tiny_bytes: bytes) -> Iterator[CheckpointServer]:
    instance = CheckpointServer()
    instance.files["/" + FILE_NAME] = tiny_bytes
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def tiny_model(server: CheckpointServer, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """Register a TEST-architecture model whose checkpoint the loopback server serves."""
    spec = ModelSpec(
        name=MODEL_NAME,
        config=TEST,
        checkpoint_url=server.url("/" + FILE_NAME),
        checkpoint_filename=FILE_NAME,
        meaningless=True,
    )
    monkeypatch.setitem(MODELS, MODEL_NAME, spec)
    return spec


def closed_port_url() -> str:
    """Return a loopback URL on a port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILE_NAME}"


def leftover_files(cache: Path) -> list[str]:
    """Return the checkpoint, partial and sidecar files in the cache (the lock file is kept)."""
    names = (FILE_NAME, FILE_NAME + ".part", FILE_NAME + ".json")
    return [name for name in names if (cache / "checkpoints" / name).exists()]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Cache location
# ---------------------------------------------------------------------------


def test_cache_dir_from_environment(isolated_cache: Path) -> None:
    assert cache_root() == isolated_cache
    assert checkpoint_dir() == isolated_cache / "checkpoints"


def test_cache_dir_default_uses_platformdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BINDINDEX_CACHE_DIR")
    calls: list[str] = []

    def fake_user_cache_dir(appname: str) -> str:
        calls.append(appname)
        return str(tmp_path / "platform")

    monkeypatch.setattr("platformdirs.user_cache_dir", fake_user_cache_dir)

    assert checkpoint_dir() == tmp_path / "platform" / "checkpoints"
    assert calls == ["bindindex"]


# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------


def test_first_download(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    isolated_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    destination = isolated_cache / "checkpoints" / FILE_NAME
    part = destination.with_name(FILE_NAME + ".part")
    seen_midway: dict[str, bool] = {}

    def check_midway() -> None:
        deadline = time.monotonic() + 5
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_midway["part"] = part.exists()
        seen_midway["destination"] = destination.exists()

    server.midway_hook = check_midway

    path = resolve_checkpoint(MODEL_NAME)

    assert path == destination
    assert path.read_bytes() == tiny_bytes
    assert seen_midway == {"part": True, "destination": False}
    assert not part.exists()
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar == {
        "url": tiny_model.checkpoint_url,
        "size": len(tiny_bytes),
        "sha256": sha256_hex(tiny_bytes),
    }
    assert [(r.range_header, r.status) for r in server.requests] == [(None, 200)]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert FILE_NAME in captured.err
    assert "100%" in captured.err


def test_cache_hit_makes_no_request(tiny_model: ModelSpec, server: CheckpointServer) -> None:
    first = resolve_checkpoint(MODEL_NAME)
    second = resolve_checkpoint(MODEL_NAME)

    assert first == second
    assert len(server.requests) == 1


def test_resume_from_partial_file(
    tiny_model: ModelSpec, server: CheckpointServer, tiny_bytes: bytes, isolated_cache: Path
) -> None:
    part = isolated_cache / "checkpoints" / (FILE_NAME + ".part")
    part.parent.mkdir(parents=True)
    offset = len(tiny_bytes) * 2 // 5
    part.write_bytes(tiny_bytes[:offset])

    path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes
    assert [(r.range_header, r.status) for r in server.requests] == [(f"bytes={offset}-", 206)]
    assert json.loads(sidecar_path(path).read_text())["sha256"] == sha256_hex(tiny_bytes)


def test_resume_ignored_by_server_restarts(
    tiny_model: ModelSpec, server: CheckpointServer, tiny_bytes: bytes, isolated_cache: Path
) -> None:
    server.honor_range = False
    part = isolated_cache / "checkpoints" / (FILE_NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)

    path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes
    assert [(r.range_header, r.status) for r in server.requests] == [("bytes=1000-", 200)]
    assert json.loads(sidecar_path(path).read_text())["sha256"] == sha256_hex(tiny_bytes)


def test_partial_file_longer_than_checkpoint_restarts(
    tiny_model: ModelSpec, server: CheckpointServer, tiny_bytes: bytes, isolated_cache: Path
) -> None:
    part = isolated_cache / "checkpoints" / (FILE_NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(tiny_bytes) + 10))

    path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes
    assert [r.status for r in server.requests] == [416, 200]


def test_dropped_connection_resumes(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.drop_after = 3_000_000

    with caplog.at_level(logging.WARNING, logger="bindindex.model.weights"):
        path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes
    assert [(r.range_header, r.status) for r in server.requests] == [
        (None, 200),
        ("bytes=3000000-", 206),
    ]
    assert "resuming" in caplog.text


def test_truncated_cache_is_downloaded_again(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = resolve_checkpoint(MODEL_NAME)
    path.write_bytes(tiny_bytes[: len(tiny_bytes) // 2])

    with caplog.at_level(logging.WARNING, logger="bindindex.model.weights"):
        again = resolve_checkpoint(MODEL_NAME)

    assert again == path
    assert path.read_bytes() == tiny_bytes
    assert len(server.requests) == 2
    assert "corrupt" in caplog.text


def test_truncated_cache_without_download_raises(
    tiny_model: ModelSpec, server: CheckpointServer, tiny_bytes: bytes
) -> None:
    path = resolve_checkpoint(MODEL_NAME)
    path.write_bytes(tiny_bytes[:100])

    with pytest.raises(WeightsError, match="downloading is disabled"):
        resolve_checkpoint(MODEL_NAME, download=False)
    assert not path.exists()


def test_pinned_sha256_match(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_SHA256", sha256_hex(tiny_bytes).upper())

    path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes


def test_pinned_sha256_mismatch(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_SHA256", "0" * 64)

    with pytest.raises(WeightsError, match="pins 0000"):
        resolve_checkpoint(MODEL_NAME)
    assert leftover_files(isolated_cache) == []


def test_pin_change_invalidates_cache(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = resolve_checkpoint(MODEL_NAME)
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_SHA256", "1" * 64)

    with pytest.raises(WeightsError, match="SHA-256"):
        resolve_checkpoint(MODEL_NAME)
    assert not path.exists()
    assert len(server.requests) == 2


def test_invalid_pin_raises(tiny_model: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_SHA256", "abc")

    with pytest.raises(UsageError, match="64 hexadecimal digits"):
        resolve_checkpoint(MODEL_NAME)


def test_download_of_wrong_architecture(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    wrong_bytes: bytes,
    isolated_cache: Path,
) -> None:
    server.files["/" + FILE_NAME] = wrong_bytes

    with pytest.raises(WeightsError) as excinfo:
        resolve_checkpoint(MODEL_NAME)

    message = str(excinfo.value)
    assert "not a tiny-download checkpoint" in message
    assert "modality_preprocessors.audio.cls_token (1, 1, 32) != (1, 1, 48)" in message
    assert leftover_files(isolated_cache) == []


def test_download_of_non_checkpoint(
    tiny_model: ModelSpec, server: CheckpointServer, isolated_cache: Path
) -> None:
    server.files["/" + FILE_NAME] = b"<html>not found</html>"

    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        resolve_checkpoint(MODEL_NAME)
    assert leftover_files(isolated_cache) == []


def test_url_override(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.files["/mirror/" + FILE_NAME] = tiny_bytes
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_URL", server.url("/mirror/" + FILE_NAME))

    path = resolve_checkpoint(MODEL_NAME)

    assert path.read_bytes() == tiny_bytes
    assert [r.path for r in server.requests] == ["/mirror/" + FILE_NAME]


def test_http_404_raises(
    tiny_model: ModelSpec, server: CheckpointServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_URL", server.url("/missing.pth"))

    with pytest.raises(WeightsError, match="404"):
        resolve_checkpoint(MODEL_NAME)
    assert len(server.requests) == 1


def test_no_network_and_no_file(
    tiny_model: ModelSpec, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = closed_port_url()
    monkeypatch.setenv("BINDINDEX_CHECKPOINT_URL", url)

    with pytest.raises(WeightsError) as excinfo:
        resolve_checkpoint(MODEL_NAME)

    message = str(excinfo.value)
    assert "failed to download" in message
    assert url in message
    assert "--checkpoint FILE" in message
    assert "BINDINDEX_CHECKPOINT" in message
    assert str(isolated_cache / "checkpoints" / FILE_NAME) in message
    assert "--model imagebind-test" in message


def test_huge_download_disabled_message(isolated_cache: Path) -> None:
    with pytest.raises(WeightsError) as excinfo:
        resolve_checkpoint("imagebind-huge", download=False)

    message = str(excinfo.value)
    assert HUGE_CHECKPOINT_URL in message
    assert str(isolated_cache / "checkpoints" / "imagebind_huge.pth") in message
    assert "--checkpoint FILE" in message
    assert "BINDINDEX_CHECKPOINT" in message
    assert "--model imagebind-test" in message


def test_download_disabled(tiny_model: ModelSpec, server: CheckpointServer) -> None:
    with pytest.raises(WeightsError, match="downloading is disabled") as excinfo:
        resolve_checkpoint(MODEL_NAME, download=False)

    assert "--checkpoint FILE" in str(excinfo.value)
    assert server.requests == []


# ---------------------------------------------------------------------------
# Explicit files
# ---------------------------------------------------------------------------


def test_explicit_checkpoint_wins(
    tiny_model: ModelSpec,
    server: CheckpointServer,
    tiny_bytes: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(tiny_bytes)
    from_env = tmp_path / "from_env.pth"
    from_env.write_bytes(tiny_bytes)

    monkeypatch.setenv("BINDINDEX_CHECKPOINT", str(from_env))
    assert resolve_checkpoint(MODEL_NAME, explicit) == explicit
    assert resolve_checkpoint(MODEL_NAME) == from_env
    assert server.requests == []


def test_explicit_checkpoint_missing(tiny_model: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        resolve_checkpoint(MODEL_NAME, tmp_path / "absent.pth")


def test_seeded_model_has_no_checkpoint() -> None:
    with pytest.raises(WeightsError, match="seeded random weights"):
        resolve_checkpoint("imagebind-test")


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def test_load_model_matches_seeded_weights(tiny_model: ModelSpec, server: CheckpointServer) -> None:
    tokens = torch.zeros(2, 77, dtype=torch.int64)
    tokens[:, 0] = 49406
    tokens[0, 3] = 49407
    tokens[1, 20] = 49407
    expected = init_random_weights(ImageBind(TEST, ["text"]), seed=TINY_SEED)

    loaded = load_model(MODEL_NAME, modalities=["text"])

    assert loaded.modalities == ("text",)
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded.embed_text(tokens), expected.embed_text(tokens), rtol=0, atol=0
        )


def test_load_model_wrong_architecture(
    tiny_model: ModelSpec, wrong_bytes: bytes, tmp_path: Path
) -> None:
    bad = tmp_path / "wrong.pth"
    bad.write_bytes(wrong_bytes)

    with pytest.raises(WeightsError) as excinfo:
        load_model(MODEL_NAME, modalities=["audio"], checkpoint=bad)

    message = str(excinfo.value)
    assert str(bad) in message
    assert "modality_preprocessors.audio.cls_token (1, 1, 32) != (1, 1, 48)" in message
    assert "and 31 more" in message


def test_load_model_missing_and_unexpected_keys(
    tiny_model: ModelSpec, tiny_bytes: bytes, tmp_path: Path
) -> None:
    state = torch.load(io.BytesIO(tiny_bytes), weights_only=True)
    del state["modality_heads.vision.2.weight"]
    state["modality_heads.vision.3.weight"] = torch.zeros(2)
    state["modality_trunks.depth.blocks.0.norm_1.weight"] = torch.zeros(2)
    bad = tmp_path / "edited.pth"
    torch.save(state, bad)

    with pytest.raises(WeightsError) as excinfo:
        load_model(MODEL_NAME, modalities=["vision"], checkpoint=bad)

    message = str(excinfo.value)
    assert "1 missing keys: modality_heads.vision.2.weight" in message
    assert "1 unexpected keys: modality_heads.vision.3.weight" in message
    assert "depth" not in message


def test_load_model_ignores_other_towers(tiny_model: ModelSpec, tmp_path: Path) -> None:
    text_only = init_random_weights(ImageBind(TEST, ["text"]), seed=1).state_dict()
    path = tmp_path / "text_only.pth"
    torch.save(text_only, path)

    model = load_model(MODEL_NAME, modalities=["text"], checkpoint=path)
    assert model.modalities == ("text",)
    with pytest.raises(WeightsError, match="missing keys"):
        load_model(MODEL_NAME, modalities=["vision"], checkpoint=path)


def test_load_model_rejects_non_state_dict(tiny_model: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "nested.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, path)

    with pytest.raises(WeightsError, match="not a flat state dict"):
        load_model(MODEL_NAME, modalities=["text"], checkpoint=path)


def test_load_model_reads_legacy_format(
    tiny_model: ModelSpec, tiny_bytes: bytes, tmp_path: Path
) -> None:
    state = torch.load(io.BytesIO(tiny_bytes), weights_only=True)
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)

    model = load_model(MODEL_NAME, modalities=["audio"], checkpoint=path)

    assert torch.equal(
        model.state_dict()["modality_heads.audio.2.weight"], state["modality_heads.audio.2.weight"]
    )


def test_load_model_bf16_keeps_logit_scale_fp32(
    tiny_model: ModelSpec, server: CheckpointServer
) -> None:
    model = load_model(MODEL_NAME, modalities=["text", "audio"], precision="bf16")

    assert model.dtype == torch.bfloat16
    state = model.state_dict()
    assert state["modality_postprocessors.text.1.log_logit_scale"].dtype == torch.float32
    assert state["modality_postprocessors.audio.1.log_logit_scale"].dtype == torch.float32


def test_load_model_checks_options(tiny_model: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="invalid precision 'fp16'"):
        load_model(MODEL_NAME, modalities=["text"], precision="fp16")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_model("nope", modalities=["text"])
    with pytest.raises(ModelError, match="device"):
        load_model(MODEL_NAME, modalities=["text"], device="cuda:99")
    with pytest.raises(UsageError, match="takes no checkpoint"):
        load_model("imagebind-test", modalities=["text"], checkpoint=tmp_path / "x.pth")


PROC_MAPS = Path("/proc/self/maps")


def mapped_files() -> str:
    """Return this process's memory map listing, skipping the test where there is none."""
    if not PROC_MAPS.exists():
        pytest.skip("needs /proc/self/maps to see memory mappings")
    return PROC_MAPS.read_text()


def test_read_checkpoint_is_memory_mapped(tiny_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "mapped.pth"
    path.write_bytes(tiny_bytes)

    state = read_checkpoint(path)

    assert str(path) in mapped_files()
    assert len(state) > 0


def test_converted_passes_match_one_cast(tiny_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "convert.pth"
    path.write_bytes(tiny_bytes)
    state = read_checkpoint(path)
    keys = list(state)
    expected = {key: tensor.to(torch.bfloat16) for key, tensor in state.items()}
    scales = {key: state[key].clone() for key in keys if "log_logit_scale" in key}
    passes = 0
    real_read = read_checkpoint

    def counting_read(p: Path) -> dict[str, torch.Tensor]:
        nonlocal passes
        passes += 1
        return real_read(p)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bindindex.model.weights.read_checkpoint", counting_read)
        converted = read_converted(
            path, state, dtype=torch.bfloat16, device=torch.device("cpu"), chunk_bytes=1
        )

    # With a one-byte budget each pass copies one tensor; the first uses the given state.
    assert passes == len(keys) - 1
    assert state == {}, "the caller's state is emptied"
    assert set(converted) == set(keys)
    assert scales, "the TEST checkpoint has logit scales"
    for key, tensor in converted.items():
        if key in scales:
            # kept in float32 and not rounded through bfloat16
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, scales[key])
        elif tensor.is_floating_point():
            assert tensor.dtype == torch.bfloat16, key
            assert torch.equal(tensor, expected[key]), key
    assert str(path) not in mapped_files(), "every converted pass releases its mapping"


def test_read_converted_keeps_fp32_mapped(tiny_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fp32.pth"
    path.write_bytes(tiny_bytes)
    state = read_checkpoint(path)

    converted = read_converted(path, state, dtype=torch.float32, device=torch.device("cpu"))

    assert all(tensor.dtype == torch.float32 for tensor in converted.values())
    assert str(path) in mapped_files(), "fp32 weights stay views of the mapped file"


# ---------------------------------------------------------------------------
# Fingerprints and model ids
# ---------------------------------------------------------------------------


def test_checkpoint_fingerprint(tmp_path: Path) -> None:
    data = bytearray(random.Random(0).randbytes(5 << 20))
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(data))
    original = checkpoint_fingerprint(path)

    assert checkpoint_fingerprint(path) == original
    assert len(original) == 64

    for offset in (0, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(bytes(changed))
        assert checkpoint_fingerprint(path) != original, offset

    path.write_bytes(bytes(data) + b"\0")
    assert checkpoint_fingerprint(path) != original


def test_checkpoint_fingerprint_small_file(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"abc")

    assert checkpoint_fingerprint(path) == hashlib.sha256(b"3\nabcabcabc").hexdigest()


def test_model_ids(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"some weights")

    assert model_id_for("imagebind-test", None) == "imagebind-test@seed0"
    assert model_id_for("imagebind-huge", path) == (
        "imagebind-huge@" + checkpoint_fingerprint(path)[:12]
    )
    with pytest.raises(WeightsError):
        model_id_for("imagebind-huge", None)
