"""A small web backend that keeps its state in Redis: a visit counter per page.

    python3 app.py --listen 127.0.0.1:8081 --redis 127.0.0.1:6379

GET /health answers 200; POST /visits/NAME counts a visit and answers the new count;
GET /visits/NAME answers the count. It speaks Redis's protocol (RESP) over a plain
socket, so it needs nothing beyond Python's standard library.
"""

import argparse
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Redis:
    """One connection per thread, opened again after an error."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        self.local = threading.local()

    def command(self, *words):
        reused = getattr(self.local, "conn", None) is not None
        try:
            return self.once(words)
        except (ConnectionResetError, BrokenPipeError, EOFError):
            # A kept connection can have died while idle (a network fault reset it):
            # like pooled clients do, try once more on a new one. A new connection that
            # fails is the answer.
            if not reused:
                raise
            return self.once(words)

    def once(self, words):
        conn = getattr(self.local, "conn", None)
        try:
            if conn is None:
                conn = socket.create_connection(self.addr, timeout=2)
                self.local.conn = conn
                self.local.file = conn.makefile("rb")
            out = b"*%d\r\n" % len(words)
            for w in words:
                w = w.encode()
                out += b"$%d\r\n%s\r\n" % (len(w), w)
            conn.sendall(out)
            return self.reply(self.local.file)
        except (OSError, ValueError, EOFError):
            self.local.conn = None
            if conn is not None:
                conn.close()
            raise

    @staticmethod
    def reply(f):
        line = f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:].strip()
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        raise ValueError("redis said " + line.decode(errors="replace").strip())


def handler(redis, name):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body):
            data = json.dumps(body).encode() + b"\n"
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def visits(self, write):
            page = self.path[len("/visits/"):]
            if not page.isalnum():
                return self.answer(400, {"error": "a page name is letters and digits"})
            try:
                key = "visits:" + page
                count = redis.command("INCR", key) if write else redis.command("GET", key)
            except (OSError, ValueError, EOFError) as e:
                return self.answer(503, {"error": "redis: %s" % e, "backend": name})
            self.answer(200, {"page": page, "visits": int(count or 0), "backend": name})

        def do_GET(self):
            if self.path == "/health":
                return self.answer(200, {"status": "ok", "backend": name})
            if self.path.startswith("/visits/"):
                return self.visits(False)
            self.answer(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            if self.path.startswith("/visits/"):
                return self.visits(True)
            self.answer(404, {"error": "not found"})

        def log_message(self, *args):
            pass

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--name", default="app")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), handler(Redis(a.redis), a.name))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
