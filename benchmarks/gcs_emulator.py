"""gcp-storage-emulator (in memory) on a loopback port, for the remote rows of bench_core.py.

    python benchmarks/gcs_emulator.py PORT BUCKET

The emulator is taught what diced relies on from GCS exactly as in the tests
(:mod:`diced.testing.gcs_emulator`: exact multipart uploads, ``ifGenerationMatch``, the
``x-goog-generation``, ``ETag`` and ``Last-Modified`` download headers, in-memory storage
without the per-request metadata dump). Serves until killed.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import urllib.request
from functools import partial


def main(port: int, bucket: str) -> None:
    from gcp_storage_emulator import server as emulator_server

    from diced.testing.gcs_emulator import BacklogHTTPServer, memory_storage, patch

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    patch(emulator_server)
    httpd = BacklogHTTPServer(("127.0.0.1", port), partial(
        emulator_server.RequestHandler, memory_storage()))
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
