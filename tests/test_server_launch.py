"""Launching the server: ``diced serve`` (a real subprocess), ``Store.serve`` and ``Repo.view``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import diced

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"diced serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/api/server/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("diced serve did not come up")


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "diced", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def lmdb_store(tmp_path):
    path = tmp_path / "cli.diced"
    store = diced.Store(str(path))
    repo = store.create_repo("cli")
    repo.create_keyvalue("kv")["a"] = b"1"
    store.close()
    return path, repo.uuid


def test_cli_serve_read_only(lmdb_store) -> None:
    path, root = lmdb_store
    port = _free_port()
    proc = _run_cli([str(path), "--port", str(port), "--read-only"])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, proc)
        assert httpx.get(f"{url}/api/node/{root}/kv/key/a").content == b"1"
        assert httpx.post(f"{url}/api/node/{root}/kv/key/b", content=b"2").status_code == 403
        assert root in httpx.get(f"{url}/api/repos/info").json()
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_serve_token_file(lmdb_store, tmp_path) -> None:
    path, root = lmdb_store
    token_file = tmp_path / "token"
    token_file.write_text("correct-horse-battery\n")
    port = _free_port()
    proc = _run_cli([str(path), "--port", str(port), "--token-file", str(token_file),
                     "--cors", "http://localhost:3000"])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, proc)
        key = f"{url}/api/node/{root}/kv/key/b"
        assert httpx.post(key, content=b"2").status_code == 401
        ok = httpx.post(key, content=b"2", headers={"Authorization": "Bearer correct-horse-battery"})
        assert ok.status_code == 200
        r = httpx.get(key, headers={"Origin": "http://localhost:3000"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = httpx.get(key, headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_serve_bad_arguments(tmp_path) -> None:
    short = tmp_path / "short"
    short.write_text("abc")
    proc = _run_cli([str(tmp_path / "s.diced"), "--token-file", str(short)])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"shorter than 8" in err
    proc = _run_cli([str(tmp_path / "s.diced"), "--port", "70000"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"--port" in err


def test_store_serve_handle() -> None:
    store = diced.Store("memory://server-launch-serve")
    repo = store.create_repo("h")
    with store.serve(port=0) as handle:
        assert handle.running and handle.url.startswith("http://127.0.0.1:")
        info = httpx.get(f"{handle.url}/api/repo/{repo.uuid}/info").json()
        assert info["Alias"] == "h"
        assert httpx.get(handle.url + "/").status_code == 200
    assert not handle.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/api/server/info", timeout=2)


def test_repo_view_prints_url_without_display(monkeypatch, capsys) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    store = diced.Store("memory://server-launch-view")
    repo = store.create_repo("v")
    handle = repo.view(port=0)
    try:
        out = capsys.readouterr().out
        assert f"{handle.url}/?repo={repo.uuid}" in out and not opened
    finally:
        handle.stop()
    handle = repo.view(port=0, open_browser=True)
    handle.stop()
    assert opened == [f"{handle.url}/?repo={repo.uuid}"]


def test_serve_reports_a_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(diced.errors.BackendError, match="could not start"):
            diced.Store("memory://server-launch-busy").serve(port=port)
    with pytest.raises(diced.errors.InvalidArgumentError):
        diced.Store("memory://server-launch-busy").serve(port=70000)


def test_cli_serve_refuses_a_missing_store_unless_create(tmp_path) -> None:
    missing = tmp_path / "typo.diced"
    proc = _run_cli([str(missing), "--port", str(_free_port())])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"no diced store" in err
    assert not missing.exists()  # nothing was created
    port = _free_port()
    proc = _run_cli([str(missing), "--port", str(port), "--create"])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, proc)
        assert httpx.get(f"{url}/api/repos/info").json() == {}
        assert missing.is_dir()
    finally:
        proc.terminate()
        proc.wait(30)
