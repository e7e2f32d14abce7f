"""A tiny HTTP service for the end-to-end test to load: three endpoints on 127.0.0.1.

    GET  /items        200, a small JSON list
    POST /orders       201, echoes the order's size
    GET  /flaky        500 on every third request, else 200, so the run has failures

Usage: python3 target.py PORT_FILE
Listens on a free loopback port, writes that port to PORT_FILE once it accepts connections,
and serves until it gets SIGTERM.
"""

import itertools
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_flaky_counter = itertools.count(1)
_flaky_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/items":
            self._send(200, [{"id": i, "name": f"item {i}"} for i in range(5)])
        elif self.path == "/flaky":
            with _flaky_lock:
                n = next(_flaky_counter)
            if n % 3 == 0:
                self._send(500, {"error": "flaky failure"})
            else:
                self._send(200, {"ok": True})
        else:
            self._send(404, {"error": "no such path"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/orders":
            self._send(201, {"received_bytes": len(body)})
        else:
            self._send(404, {"error": "no such path"})

    def log_message(self, *args):
        pass  # one line per request would drown the test's output


def main():
    port_file = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    tmp = f"{port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
