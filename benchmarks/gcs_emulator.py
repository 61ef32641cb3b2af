"""gcp-storage-emulator (in memory) on a loopback port, for the remote rows of bench_core.py.

    python benchmarks/gcs_emulator.py PORT BUCKET

The test fixture's fixes (tests/conftest.py ``gcs_emulator``): no metadata dump to disk on
every request (in-memory mode never reads it back, and it makes each request cost
O(objects)); multipart uploads keep every byte (the emulator's parser dropped a trailing
``\\r``); GCS's ``ifGenerationMatch`` and the ``x-goog-generation`` download header, which
diced's compare-and-set needs (without them row 6 failed at ``create_array``). Beyond the
fixture, downloads carry ``ETag`` and ``Last-Modified`` as on GCS: obstore's GCS client (XML
API ``GET /<bucket>/<object>``, a candidate in bench_gcs_fetch.py) refuses responses without.
Serves until killed.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
import urllib.request
from functools import partial
from http import server as http_server
from typing import Any


class _BacklogHTTPServer(http_server.HTTPServer):
    request_queue_size = 1024
    daemon_threads = True


def _exact_multipart_uploads(server: Any) -> None:
    original = server._read_data

    def read_data(request_handler: Any, query: Any) -> Any:
        content_type = request_handler.headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/related"):
            return original(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        if not raw:
            return None
        boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
        delim = b"--" + boundary
        body = raw[:raw.rindex(delim + b"--")]
        parts = []
        for part in body.split(delim)[1:]:
            crlf = part.startswith(b"\r\n")
            head, _, content = part.partition(b"\r\n\r\n" if crlf else b"\n\n")
            end = b"\r\n" if crlf else b"\n"
            parts.append((head, content.removesuffix(end)))
        (_, meta), (head, content) = parts[0], parts[1]
        ctype = "application/octet-stream"
        for line in head.decode("latin-1").splitlines():
            if line.lower().startswith("content-type:"):
                ctype = line.split(":", 1)[1].strip()
        return {"meta": json.loads(meta), "content": content, "content-type": ctype}

    server._read_data = read_data


def _gcs_preconditions(server: Any) -> None:
    """GCS's ``ifGenerationMatch`` on uploads and deletes (diced's compare-and-set on gs://
    relies on it; the emulator ignores it) and the download headers GCS sends
    (``x-goog-generation``, ``ETag``, ``Last-Modified``). The emulator serves one request
    at a time, so the check and the write are atomic as on GCS. As the test fixture's
    (tests/conftest.py), plus ``ETag`` and ``Last-Modified``."""
    from email.utils import format_datetime
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def stored(storage: Any, bucket: str, name: str | None) -> dict[str, Any] | None:
        try:
            return storage.get_file_obj(bucket, name)
        except NotFound:
            return None

    def object_name(request: Any) -> str | None:
        if request.params.get("object_id"):
            return request.params["object_id"]
        if "name" in request.query:
            return request.query["name"][0]
        data = request.data if isinstance(request.data, dict) else {}
        return (data.get("meta") or {}).get("name")

    def guarded(handler: Any) -> Any:
        def run(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
            want = request.query.get("ifGenerationMatch")
            if want:
                obj = stored(storage, request.params["bucket_name"], object_name(request))
                if (str(obj["generation"]) if obj else "0") != want[0]:
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json({"error": {"code": 412, "message": "conditionNotMet",
                                             "errors": [{"reason": "conditionNotMet"}]}})
                    return None
            return handler(request, response, storage, *args, **kwargs)

        return run

    def with_headers(handler: Any) -> Any:
        def run(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
            obj = stored(storage, request.params["bucket_name"], request.params["object_id"])
            if obj is not None:
                response["x-goog-generation"] = str(obj["generation"])
                response["ETag"] = '"{}"'.format(obj.get("etag") or obj["generation"])
                updated = datetime.datetime.fromisoformat(obj["updated"])
                response["Last-Modified"] = format_datetime(updated, usegmt=True)
            return handler(request, response, storage, *args, **kwargs)

        return run

    wrapped = {objects.insert: guarded(objects.insert), objects.delete: guarded(objects.delete),
               objects.download: with_headers(objects.download),
               objects.get: with_headers(objects.get)}
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]


def main(port: int, bucket: str) -> None:
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.storage import Storage

    class MemoryStorage(Storage):
        def _write_config_to_file(self) -> None:
            pass

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    _exact_multipart_uploads(emulator_server)
    _gcs_preconditions(emulator_server)
    httpd = _BacklogHTTPServer(("127.0.0.1", port), partial(
        emulator_server.RequestHandler, MemoryStorage(use_memory_fs=True)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    body = {"name": bucket, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=bench", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST"), timeout=10).close()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
