#!/usr/bin/env python3
"""A static file server for bench/http.sh: serves a directory as a compose
server does, with Range requests (Accept-Ranges, ETag, 206 answers), or
without them (--no-range: every GET whole, as Python's http.server).

    python3 bench/serve.py DIR [--no-range]

Prints 127.0.0.1:PORT once it listens, then serves until killed."""
import http.server
import os
import sys

root = sys.argv[1]
ranges = "--no-range" not in sys.argv


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = os.path.join(root, self.path.lstrip("/").split("?")[0])
        if ".." in self.path or not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        etag = '"%x-%x"' % (os.stat(path).st_mtime_ns, size)
        start = 0
        want = self.headers.get("Range")
        if ranges and want and want.startswith("bytes=") and want.endswith("-"):
            if self.headers.get("If-Range") in (None, etag):
                start = int(want[len("bytes="):-1])
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                self.wfile.write(chunk)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
