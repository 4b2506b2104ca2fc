"""The peer of bench/store_failover.py: the same failover trials against a three-member
etcd cluster (Raft, election timeout 1 s and heartbeat 100 ms: etcd's defaults, the
store's timeout too) started here on 127.0.0.1. One writer thread puts one key after
another through etcd's JSON gateway (/v3/kv/put) to a member that is not the leader
(which forwards to the leader); each trial SIGKILLs the leader and times, from just
before the kill, the first acknowledgement of a put sent after the leader is dead, and starts the killed member again after 4 s (the store's
hold), waiting for it to rejoin before the next trial. A put that gets no answer in
100 ms is sent again (a put takes a few ms here): a put forwarded to the dead leader
hangs until then, so the figure is at most that much late; the store's writer gets a
refused connection or a 421 at once instead.

Usage: etcd_failover.py TRIALS WORKDIR
"""
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

trials, work = int(sys.argv[1]), sys.argv[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


names = ["e0", "e1", "e2"]
client = {n: free_port() for n in names}
peer = {n: free_port() for n in names}
cluster = ",".join(f"{n}=http://127.0.0.1:{peer[n]}" for n in names)
procs = {}


def start(n, state):
    log = open(os.path.join(work, f"{n}.log"), "ab")
    procs[n] = subprocess.Popen(
        ["etcd", "--name", n, "--data-dir", os.path.join(work, n),
         "--listen-client-urls", f"http://127.0.0.1:{client[n]}",
         "--advertise-client-urls", f"http://127.0.0.1:{client[n]}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer[n]}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[n]}",
         "--initial-cluster", cluster, "--initial-cluster-state", state,
         "--heartbeat-interval", "100", "--election-timeout", "1000"],
        stdout=log, stderr=log)


def call(n, path, body, timeout=0.1):
    c = http.client.HTTPConnection("127.0.0.1", client[n], timeout=timeout)
    c.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def status(n):
    try:
        status, data = call(n, "/v3/maintenance/status", {})
        s = json.loads(data)
        return s if status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def leader():
    """The leader's name, as a live member says."""
    ids = {}
    lead = None
    for n in names:
        s = status(n)
        if s:
            ids[s["header"]["member_id"]] = n
            lead = lead or s.get("leader")
    return ids.get(lead)


acks = []  # (monotonic time the put was sent, time it was acknowledged)
lock = threading.Lock()
target = {"member": None}
stop = False


def writer():
    n = 0
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    while not stop:
        m = target["member"]
        if m is None:
            time.sleep(0.01)
            continue
        n += 1
        sent = time.monotonic()
        try:
            code, _ = call(m, "/v3/kv/put", {"key": b64(f"bench/failover/{n % 1000}"), "value": b64(str(n))})
        except (OSError, http.client.HTTPException):
            continue
        if code == 200:
            with lock:
                acks.append((sent, time.monotonic()))


def wait(cond, what, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"gave up waiting: {what}")


try:
    for n in names:
        start(n, "new")
    threading.Thread(target=writer, daemon=True).start()
    times = []
    for t in range(trials):
        wait(lambda: leader() is not None and all(status(n) for n in names), "a leader and every member up")
        old = leader()
        target["member"] = next(n for n in names if n != old)
        wait(lambda: any(ts > time.monotonic() - 0.2 for _, ts in acks), "writes flowing")
        time.sleep(0.5)
        t0 = time.monotonic()
        procs[old].send_signal(signal.SIGKILL)
        procs[old].wait()
        # Only a put sent once the leader is dead counts: one it had committed just
        # before could still be answered after t0.
        dead = time.monotonic()
        wait(lambda: any(s >= dead for s, _ in acks), "a write acknowledged after the kill")
        with lock:
            first = min(ts for s, ts in acks if s >= dead)
        times.append(first - t0)
        print(f"trial {t + 1}: {old} killed, a put acknowledged after {1000 * (first - t0):.0f} ms", flush=True)
        time.sleep(max(0.0, t0 + 4.0 - time.monotonic()))
        start(old, "existing")
        wait(lambda: status(old) is not None, "the old leader rejoining", 60.0)
    stop = True
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print(f"etcd failover over {len(times)} trials: p50 {1000 * q(0.5):.0f} ms, p99 {1000 * q(0.99):.0f} ms, max {1000 * times[-1]:.0f} ms")
finally:
    for p in procs.values():
        p.kill()
