"""The HTTP API end to end: every endpoint, every error code, formats, limits, concurrency.

Most tests use FastAPI's TestClient; those about streaming (a body refused while it
arrives, a slow upload, concurrent clients) run a real uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import running_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from tympan.models.modelfile import load_model  # noqa: E402
from tympan.serve.app import ServeSettings, create_app  # noqa: E402


def _wav(samples: np.ndarray, rate: int = 48000, channels: int = 1) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


TONE = synth.tone(1000, 1.0, 48000)


@pytest.fixture
def client(trained_model_file: Path) -> Iterator[TestClient]:
    app = create_app(load_model(trained_model_file), ServeSettings(max_upload_mb=1.0))
    with TestClient(app) as c:
        yield c


def test_health_and_model_describe_the_served_file(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "cnn-s"
    info = client.get("/v1/model").json()
    assert info["labels"] == ["click", "noise", "tone"]
    assert info["sample_rate"] == 16000 and info["features"]["n_mels"] == 32
    assert info["window_seconds"] == pytest.approx(0.512)
    assert info["metrics"]["accuracy_mean"] >= 0.75  # the fixture's held-out score
    assert info["limits"]["max_upload_mb"] == 1.0


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "audio/*"}
    assert {"400", "413", "415"} <= set(predict["responses"])
    assert {"/health", "/v1/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_assets_are_served_without_external_references(
        client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css", "/static/capture-worklet.js"):
        body = client.get(asset)
        assert body.status_code == 200, asset
        assert "http://" not in body.text and "https://" not in body.text, asset
    assert "http://" not in page.text and "https://" not in page.text  # works offline


def test_raw_body_and_multipart_upload_give_the_same_answer(client: TestClient) -> None:
    body = _wav(TONE, channels=2)
    raw = client.post("/v1/predict?k=2", content=body, headers={"content-type": "audio/wav"})
    form = client.post("/v1/predict?k=2", files={"file": ("tone.wav", body, "audio/wav")})
    assert raw.status_code == form.status_code == 200
    assert raw.json()["label"] == "tone"
    assert [t["label"] for t in raw.json()["top"]] == [t["label"] for t in form.json()["top"]]
    assert raw.json()["top"][0]["probability"] == pytest.approx(
        form.json()["top"][0]["probability"])
    assert len(raw.json()["top"]) == 2
    assert form.json()["name"] == "tone.wav" and form.json()["source_sample_rate"] == 48000


def test_short_audio_has_no_timeline_long_audio_has_windows_and_events(
        client: TestClient) -> None:
    short = client.post("/v1/predict", content=_wav(synth.tone(1000, 0.4, 48000)),
                        headers={"content-type": "audio/wav"}).json()
    assert short["windows"] is None
    rate = 48000
    noise_then_tone = np.concatenate([synth.noise_burst(2.0, rate, seed=3),
                                      synth.tone(1000, 2.0, rate)])
    out = client.post("/v1/predict?threshold=0.6", content=_wav(noise_then_tone, rate),
                      headers={"content-type": "audio/wav"}).json()
    windows = out["windows"]
    assert len(windows["starts_seconds"]) == len(windows["scores"]) >= 3
    assert windows["window_seconds"] == pytest.approx(0.512)
    tone_events = [e for e in windows["events"] if e["label"] == "tone"]
    noise_events = [e for e in windows["events"] if e["label"] == "noise"]
    assert tone_events and noise_events
    assert noise_events[0]["start_seconds"] < 0.5 and noise_events[0]["end_seconds"] < 2.6
    assert tone_events[-1]["start_seconds"] > 1.4
    assert tone_events[-1]["end_seconds"] == pytest.approx(4.0, abs=0.01)


def test_spectrogram_preview_on_request(client: TestClient) -> None:
    import base64

    out = client.post("/v1/predict?spectrogram=true", content=_wav(TONE),
                      headers={"content-type": "audio/wav"}).json()
    spec = out["spectrogram"]
    values = np.frombuffer(base64.b64decode(spec["uint8_base64"]), dtype=np.uint8)
    assert values.size == spec["n_mels"] * spec["frames"] and spec["n_mels"] == 32
    assert values.max() == 255 and values.min() == 0


@pytest.mark.parametrize("suffix", [".webm", ".opus", ".m4a", ".mp3", ".flac", ".ogg"])
def test_browser_and_file_formats_give_the_same_top1(client: TestClient, tmp_path: Path,
                                                     suffix: str) -> None:
    clip = synth.tone(1000, 1.5, 44100)
    path = tmp_path / f"tone{suffix}"
    if suffix in synth.ENCODINGS:
        synth.encode(path, clip, 44100)
    else:
        synth.write(path, clip, 44100)
    out = client.post("/v1/predict", files={"file": (path.name, path.read_bytes(),
                                                     "application/octet-stream")})
    assert out.status_code == 200, out.text
    reference = client.post("/v1/predict", content=_wav(clip, 44100),
                            headers={"content-type": "audio/wav"}).json()
    assert out.json()["label"] == reference["label"] == "tone"


def _error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind
    return str(body["detail"])


def test_errors_are_json_with_the_right_status(client: TestClient) -> None:
    post = client.post
    detail = _error(post("/v1/predict", content=b"not audio at all, just words",
                         headers={"content-type": "audio/wav"}), 415, "unsupported_audio")
    assert "not a recognised audio container" in detail
    detail = _error(post("/v1/predict", json={"path": "/etc/passwd"}), 415, "unsupported_audio")
    assert "application/json" in detail
    detail = _error(post("/v1/predict", data={"comment": "no file"},
                         files={"other": (None, b"x")}), 400, "malformed_request")
    assert "no file part" in detail
    _error(post("/v1/predict", content=b"", headers={"content-type": "audio/wav"}), 400,
           "malformed_request")
    _error(post("/v1/predict", content=b"--x\r\nbroken",
                headers={"content-type": "multipart/form-data"}), 400, "malformed_request")
    detail = _error(post("/v1/predict", content=_wav(synth.tone(440, 0.05, 48000)),
                         headers={"content-type": "audio/wav"}), 422, "audio_too_short")
    assert "shorter than" in detail
    detail = _error(post("/v1/predict", content=b"\0" * 1_200_000,
                         headers={"content-type": "audio/wav"}), 413, "too_large")
    assert "1 MB limit" in detail
    assert post("/v1/predict?k=0", content=_wav(TONE)).status_code == 422


def test_long_audio_is_refused_by_duration(trained_model_file: Path) -> None:
    app = create_app(load_model(trained_model_file), ServeSettings(max_audio_seconds=1.0))
    with TestClient(app) as c:
        detail = _error(c.post("/v1/predict", content=_wav(synth.tone(440, 2.0, 16000), 16000),
                               headers={"content-type": "audio/wav"}), 413, "too_large")
    assert "longer than the server's 1 s limit" in detail


def test_a_client_filename_is_a_label_never_a_path(client: TestClient, tmp_path: Path) -> None:
    secret = synth.write(tmp_path / "secret.wav", synth.noise_burst(1.0, 16000), 16000)
    out = client.post("/v1/predict", files={"file": (str(secret), _wav(TONE), "audio/wav")})
    assert out.status_code == 200
    assert out.json()["name"] == "secret.wav" and out.json()["label"] == "tone"  # the bytes sent


# -- against a real server: streaming limits, slow uploads, concurrency --------------------


def _stream_until_answered(url: str, chunk_bytes: int, max_chunks: int) -> tuple[int, bytes]:
    """Send a chunked audio body over a raw socket, a chunk at a time, until the server
    answers; returns how many chunks went out and the answer's first bytes."""
    import select
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        while sent < max_chunks:
            sent += 1
            try:
                sock.sendall(b"%x\r\n" % chunk_bytes + b"\0" * chunk_bytes + b"\r\n")
            except OSError:  # the server closed the connection after answering
                break
            if select.select([sock], [], [], 0.02)[0]:
                break
        answer = b""
        while not answer.endswith(b"}"):  # headers and the JSON body may come apart
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return sent, answer


def test_a_streamed_body_over_the_cap_is_refused_before_it_ends(trained_model_file: Path) -> None:
    app = create_app(load_model(trained_model_file), ServeSettings(max_upload_mb=0.5))
    with running_server(app) as url:
        sent, answer = _stream_until_answered(url, 65536, 400)  # 26 MB if it read them all
        assert answer.startswith(b"HTTP/1.1 413") and b"too_large" in answer
        assert sent < 40  # answered after about 0.5 MB (8 chunks), not after the whole body
        # …and a Content-Length over the cap is refused without reading the body
        early = httpx.post(f"{url}/v1/predict", content=b"\0" * 600_000,
                           headers={"content-type": "audio/wav"}, timeout=30)
        assert early.status_code == 413


def test_a_slow_upload_times_out_and_does_not_block_others(trained_model_file: Path) -> None:
    settings = ServeSettings(upload_timeout_seconds=1.5)
    app = create_app(load_model(trained_model_file), settings)
    body = _wav(TONE)

    async def scenario(url: str) -> tuple[httpx.Response, list[float]]:
        async def trickle() -> object:  # 200 bytes every 0.1 s for 2.5 s
            for i in range(0, 5000, 200):
                yield body[i:i + 200]
                await asyncio.sleep(0.1)

        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            slow = asyncio.create_task(c.post("/v1/predict", content=trickle(),
                                              headers={"content-type": "audio/wav"}))
            await asyncio.sleep(0.2)
            times = []
            for _ in range(5):
                start = time.monotonic()
                fast = await c.post("/v1/predict", content=body,
                                    headers={"content-type": "audio/wav"})
                assert fast.status_code == 200 and fast.json()["label"] == "tone"
                times.append(time.monotonic() - start)
            return await slow, times

    with running_server(app) as url:
        slow, times = asyncio.run(scenario(url))
    assert max(times) < 1.0  # served while the slow upload was still trickling
    assert slow.status_code == 408 and slow.json()["error"] == "upload_timeout"


def test_concurrent_requests_share_the_model_and_batch(trained_model_file: Path) -> None:
    app = create_app(load_model(trained_model_file), ServeSettings(batch_wait_ms=50))
    bodies = [_wav(synth.tone(1000, 1.0, 48000)), _wav(synth.noise_burst(1.0, 48000, seed=4))]

    async def scenario(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(*(
                c.post("/v1/predict", content=bodies[i % 2],
                       headers={"content-type": "audio/wav"}) for i in range(16)))

    with running_server(app) as url:
        sequential = [httpx.post(f"{url}/v1/predict", content=b,
                                 headers={"content-type": "audio/wav"}).json() for b in bodies]
        responses = asyncio.run(scenario(url))
        health = httpx.get(f"{url}/health").json()
    for i, response in enumerate(responses):
        assert response.status_code == 200
        got, want = response.json()["top"], sequential[i % 2]["top"]
        assert [t["label"] for t in got] == [t["label"] for t in want]
        assert got[0]["probability"] == pytest.approx(want[0]["probability"], abs=1e-5)
    assert health["requests"] == 18
    assert health["batches"] < 18
