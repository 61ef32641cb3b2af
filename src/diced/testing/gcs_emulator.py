"""gcp-storage-emulator taught what diced relies on from GCS, for the tests (the
``gcs_emulator`` fixture of tests/conftest.py) and the benchmarks (benchmarks/gcs_emulator.py).

As shipped, the emulator drops a trailing ``\\r`` of multipart uploads, ignores
``ifGenerationMatch`` (diced's compare-and-set on gs://), sends no ``x-goog-generation``,
``ETag`` or ``Last-Modified`` with downloads, and dumps all object metadata to disk on every
request. :func:`patch` fixes the first three in the emulator's server module;
:func:`memory_storage` gives its in-memory storage without the dump, and
:class:`BacklogHTTPServer` a listening socket with a backlog for gcsfs's ~100 connections.
"""

from __future__ import annotations

import datetime
import json
from http import server as http_server
from typing import Any

__all__ = ["BacklogHTTPServer", "exact_multipart_uploads", "gcs_preconditions",
           "memory_storage", "patch"]


class BacklogHTTPServer(http_server.HTTPServer):
    """An HTTP server with a deep listen backlog (the emulator serves one request at a time;
    gcsfs opens ~100 connections at once, and the default backlog of 5 turns that into
    minutes of SYN retries)."""

    request_queue_size = 1024
    daemon_threads = True


def memory_storage() -> Any:
    """The emulator's in-memory storage, minus its per-request metadata dump (every write
    re-serialized all object metadata as indented JSON, which in-memory mode never reads
    back, so each request cost O(objects))."""
    from gcp_storage_emulator.storage import Storage

    class MemoryStorage(Storage):
        def _write_config_to_file(self) -> None:
            pass

    return MemoryStorage(use_memory_fs=True)


def patch(server: Any) -> None:
    """Apply :func:`exact_multipart_uploads` and :func:`gcs_preconditions` to the emulator's
    ``gcp_storage_emulator.server`` module (idempotent)."""
    exact_multipart_uploads(server)
    gcs_preconditions(server)


def exact_multipart_uploads(server: Any) -> None:
    """Make the emulator keep every byte of a multipart upload.

    gcsfs ends the file part with ``b"\\n--boundary--"`` and the emulator parses the body
    with the ``email`` package, which takes a ``b"\\r"`` ending the file as part of the
    line break before the boundary: values ending in ``\\r`` lost their last byte (found
    by diced's checksums). Here the part ends exactly where gcsfs put the boundary.
    """
    if getattr(server, "_diced_exact_multipart", False):
        return
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
    server._diced_exact_multipart = True


def gcs_preconditions(server: Any) -> None:
    """GCS's ``ifGenerationMatch`` on uploads and deletes (diced's compare-and-set on gs://
    relies on it; the emulator ignores it) and the download headers GCS sends
    (``x-goog-generation``, ``ETag``, ``Last-Modified``). The emulator serves one request
    at a time, so the check and the write are atomic as on GCS. obstore's GCS client refuses
    downloads without ``ETag`` and ``Last-Modified``."""
    if getattr(server, "_diced_preconditions", False):
        return
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
    server._diced_preconditions = True
