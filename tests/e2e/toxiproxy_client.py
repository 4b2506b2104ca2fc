"""Drives faultline's Toxiproxy API with toxiproxy-python, a client nobody here wrote,
and measures every effect through the proxies it makes on real sockets.

Run by tests/e2e/toxiproxy.rs: python3 toxiproxy_client.py HOST:PORT FAULTLINE AGENT_URL
Every check is an assert naming what it saw; the first failure exits non-zero.
"""

import json
import socket
import subprocess
import sys
import threading
import time
import http.server

import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

host, port = sys.argv[1].rsplit(":", 1)
FAULTLINE, AGENT = sys.argv[2], sys.argv[3]
APIConsumer.host, APIConsumer.port = host, int(port)
API = "http://%s:%s" % (host, port)
BLOB = 400_000


def serve(handler):
    """A TCP server on a free loopback port calling handler(conn) per connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return "127.0.0.1:%d" % srv.getsockname()[1]


def echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


def blob(conn):
    with conn:
        conn.sendall(b"b" * BLOB)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return "127.0.0.1:%d" % srv.server_address[1]


def addr(proxy):
    h, p = proxy.listen.rsplit(":", 1)
    return h, int(p)


def rtt(proxy):
    with socket.create_connection(addr(proxy), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        return time.monotonic() - t0


def fastest_rtt(proxy, n=7):
    """The fastest of n round trips: what a latency toxic adds is a floor, and a busy
    machine only ever adds to it (tests run in parallel), so the minimum is the least
    noisy measure of it."""
    return min(rtt(proxy) for _ in range(n))


def download(proxy):
    """Bytes read and seconds from the first byte to the last."""
    with socket.create_connection(addr(proxy), timeout=10) as s:
        got, first = 0, None
        while True:
            data = s.recv(65536)
            if not data:
                break
            if first is None:
                first = time.monotonic()
            got += len(data)
        return got, time.monotonic() - (first or time.monotonic())


def faultline(*args):
    out = subprocess.run(
        [FAULTLINE, *args, "--agent", AGENT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, "faultline %s: %s %s" % (args, out.stdout, out.stderr)
    return out.stdout


def status():
    return json.loads(faultline("status", "--json"))


def expect(exc, f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except exc:
        return
    raise AssertionError("expected %s from %s" % (exc.__name__, f))


def api_error(resp, code):
    assert resp.status_code == code, (resp.status_code, resp.text)
    body = resp.json()
    assert body["status"] == code and body["error"], body


server = Toxiproxy()
assert server.running()
version = json.loads(server.version())
assert version["version"].startswith("2."), version

echo_up, blob_up, http_up = serve(echo), serve(blob), http_server()

# Proxies: made with port 0, answered with the real port; a duplicate is 409.
p = server.create(upstream=echo_up, name="echo")
assert p.enabled is True and p.upstream == echo_up, vars(p)
assert not p.listen.endswith(":0"), p.listen
expect(ProxyExists, server.create, upstream=echo_up, name="echo")
resp = requests.post(API + "/proxies", json={"name": "echo", "upstream": echo_up})
api_error(resp, 409)
base = fastest_rtt(p)

# latency: within 10 ms of the asked 100 ms, on the connection's answers.
p.add_toxic(type="latency", attributes={"latency": 100})
toxic = p.get_toxic("latency_downstream")
assert toxic is not None and toxic.stream == "downstream" and toxic.toxicity == 1.0, vars(toxic)
assert toxic.attributes == {"latency": 100, "jitter": 0}, toxic.attributes
added = fastest_rtt(p) - base
assert abs(added - 0.100) <= 0.010, "latency added %.1f ms, asked 100" % (added * 1000)

# It is a fault of faultline's, leased, on the proxy, and the proxy shows in status.
st = status()
faults = [f for f in st["faults"] if f["target"] == "echo"]
assert [f["kind"] for f in faults] == ["latency"], st["faults"]
assert [(x["name"], x["toxics"]) for x in st["proxies"]] == [("echo", 1)], st["proxies"]

# A toxic updated: new attributes merged, effect measured again.
resp = requests.patch(API + "/proxies/echo/toxics/latency_downstream", json={"attributes": {"latency": 50}})
assert resp.status_code == 200, resp.text
assert resp.json()["attributes"] == {"latency": 50, "jitter": 0}, resp.json()
added = fastest_rtt(p) - base
assert abs(added - 0.050) <= 0.010, "latency added %.1f ms, asked 50" % (added * 1000)

# Errors as Toxiproxy has them.
expect(ProxyExists, p.add_toxic, type="latency", attributes={"latency": 1})  # 409
expect(InvalidToxic, p.add_toxic, type="no_such_toxic")  # 400
resp = requests.post(API + "/proxies/echo/toxics", json={"type": "latency", "stream": "sideways"})
api_error(resp, 400)
assert "stream" in resp.json()["error"], resp.json()
resp = requests.post(API + "/proxies/echo/toxics", data=b"{not json")
api_error(resp, 400)
resp = requests.post(API + "/proxies", json={"name": "x"})
api_error(resp, 400)
assert resp.json()["error"] == "missing required field: upstream", resp.json()
api_error(requests.get(API + "/proxies/nope"), 404)
api_error(requests.get(API + "/proxies/nope/toxics"), 404)
api_error(requests.delete(API + "/proxies/echo/toxics/nope"), 404)
api_error(requests.get(API + "/proxies/echo/toxics/nope"), 404)
expect(NotFound, p.destroy_toxic, "nope")

p.destroy_toxic("latency_downstream")
assert p.toxics() == {}
assert fastest_rtt(p) < base + 0.010

# bandwidth: within 10% of the asked 200 KB/s.
b = server.create(upstream=blob_up, name="blob")
b.add_toxic(type="bandwidth", attributes={"rate": 200})
got, took = download(b)
assert got == BLOB, got
rate = got / took / 1000
assert abs(rate - 200) <= 20, "bandwidth %.1f KB/s, asked 200" % rate
b.destroy_toxic("bandwidth_downstream")

# limit_data: exactly so many bytes, then the close.
b.add_toxic(type="limit_data", attributes={"bytes": 1000})
assert download(b)[0] == 1000
b.destroy_toxic("limit_data_downstream")

# reset_peer: the connection is reset.
b.add_toxic(type="reset_peer", name="rst", attributes={"timeout": 0})
try:
    download(b)
    raise AssertionError("no reset")
except (ConnectionResetError, BrokenPipeError):
    pass
b.destroy_toxic("rst")

# timeout 0: no data until the toxic is removed.
p.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
with socket.create_connection(addr(p), timeout=0.5) as s:
    s.sendall(b"x")
    try:
        s.recv(1)
        raise AssertionError("data passed a timeout toxic")
    except socket.timeout:
        pass
p.destroy_toxic("timeout_upstream")

# slicer and slow_close: the data still arrives whole, the close comes late.
b.add_toxic(type="slicer", attributes={"average_size": 1000, "size_variation": 100, "delay": 10})
assert download(b)[0] == BLOB
b.destroy_toxic("slicer_downstream")
b.add_toxic(type="slow_close", attributes={"delay": 300})
t0 = time.monotonic()
assert download(b)[0] == BLOB
assert time.monotonic() - t0 >= 0.3
b.destroy_toxic("slow_close_downstream")

# Disabled: connections refused; enabled again on the same address.
listen = p.listen
live = socket.create_connection(addr(p), timeout=5)
live.sendall(b"x")
assert live.recv(1) == b"x"
p.disable()
# The live connection is closed (or reset) by the disable.
try:
    assert live.recv(1) == b"", "a disabled proxy kept a live connection"
except ConnectionResetError:
    pass
live.close()
try:
    rtt(p)
    raise AssertionError("a disabled proxy accepted a connection")
except ConnectionRefusedError:
    pass
p.enable()
assert server.get_proxy("echo").listen == listen
assert rtt(p) < 1

# A partial update keeps the other fields.
resp = requests.post(API + "/proxies/echo", json={"enabled": False})
assert resp.status_code == 200 and resp.json()["upstream"] == echo_up, resp.text
assert resp.json()["listen"] == listen and resp.json()["enabled"] is False

# Populate: 201 with every proxy of the list.
resp = requests.post(API + "/populate", json=[
    {"name": "echo", "listen": listen, "upstream": echo_up},
    {"name": "web", "listen": "127.0.0.1:0", "upstream": http_up},
])
assert resp.status_code == 201, resp.text
assert sorted(x["name"] for x in resp.json()["proxies"]) == ["echo", "web"], resp.json()
w = server.get_proxy("web")

# Reset: every proxy enabled, every toxic gone.
p.add_toxic(type="latency", attributes={"latency": 200})
assert server.reset()
assert server.get_proxy("echo").enabled is True
assert p.toxics() == {} and all(f["target"] != "echo" for f in status()["faults"])
assert fastest_rtt(p) < base + 0.010

# faultline's own faults on a proxy made through the Toxiproxy API.
url = "http://%s:%d/" % addr(w)
assert requests.get(url, timeout=5).status_code == 200
out = faultline("fault", "http-abort", "web", "--status", "503", "--ttl", "60s")
assert requests.get(url, timeout=5).status_code == 503
faultline("heal", "--all")
assert requests.get(url, timeout=5).status_code == 200
faultline("fault", "partition", "web", "--ttl", "60s")
try:
    requests.get(url, timeout=0.5)
    raise AssertionError("a partitioned proxy answered")
except requests.exceptions.RequestException:
    pass
faultline("heal", "--all")
assert requests.get(url, timeout=5).status_code == 200

# faultline heal --all removes Toxiproxy's toxics too.
p.add_toxic(type="latency", attributes={"latency": 100})
faultline("heal", "--all")
assert p.toxics() == {}

# Destroyed: gone from both APIs; one toxic is left on echo for the agent's stop.
w.destroy()
assert "web" not in server.proxies()
assert [x["name"] for x in status()["proxies"]] == ["blob", "echo"]
p.add_toxic(type="latency", name="left", attributes={"latency": 10})
print("ok")
