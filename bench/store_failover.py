"""Failover trials for bench/store-failover.sh: one writer thread sends one-key batches
to shard 1 without pause, following the store's 421 leader hints and going to the
other member when one does not answer; each trial SIGKILLs the current leader (held
down 4 s by the faultline agent) and times the first acknowledgement by another member.

Usage: store_failover.py TRIALS FAULTLINE NAME=ADDR NAME=ADDR (primary first)
"""
import http.client
import json
import subprocess
import sys
import threading
import time

trials, faultline = int(sys.argv[1]), sys.argv[2]
members = [tuple(a.split("=", 1)) for a in sys.argv[3:5]]
acks = []  # (monotonic time, member index)
lock = threading.Lock()
stop = False


def post(i, n):
    host, port = members[i][1].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=1.0)
    body = json.dumps({"ops": [{"op": "put", "key": f"bench/failover/{n % 1000}", "value": n}]})
    c.request("POST", "/v1/batch", body, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def writer():
    leader, n = 0, 0
    while not stop:
        n += 1
        try:
            status, data = post(leader, n)
        except (OSError, http.client.HTTPException):
            leader = 1 - leader
            continue
        if status == 200:
            with lock:
                acks.append((time.monotonic(), leader))
        elif status == 421:
            hint = json.loads(data).get("leader")
            if hint in (0, 1) and hint != leader:
                leader = hint
            else:
                leader = 1 - leader
                time.sleep(0.02)
        else:
            time.sleep(0.01)


def status(i):
    host, port = members[i][1].rsplit(":", 1)
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=1.0)
        c.request("GET", "/v1/status")
        s = json.loads(c.getresponse().read())
        c.close()
        return s
    except (OSError, ValueError):
        return None


def wait(cond, what, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"gave up waiting: {what}")


def leader_index():
    for i in (0, 1):
        s = status(i)
        if s and s["role"] == "leader":
            return i
    return None


threading.Thread(target=writer, daemon=True).start()
times = []
for t in range(trials):
    wait(lambda: leader_index() is not None, "a leader")
    old = leader_index()
    other = 1 - old
    # Both members up and the follower caught up before the kill.
    wait(lambda: (s := status(other)) is not None and s["role"] == "follower" and s["lag_entries"] == 0, "a caught-up follower")
    time.sleep(0.5)
    t0 = time.monotonic()
    subprocess.run([faultline, "fault", "kill", members[old][0], "--hold", "--ttl", "4s"], check=True, capture_output=True)
    def acked():
        with lock:
            return any(ts > t0 and m == other for ts, m in acks)
    wait(acked, "a write acknowledged by the new leader")
    with lock:
        first = min(ts for ts, m in acks if ts > t0 and m == other)
    times.append(first - t0)
    print(f"trial {t + 1}: {members[old][0]} killed, {members[other][0]} acknowledged after {1000 * (first - t0):.0f} ms", flush=True)
    # The killed member comes back (the hold ends) and rejoins before the next trial.
    wait(lambda: (s := status(old)) is not None and s["role"] == "follower", "the old leader rejoining", 60.0)
stop = True
times.sort()
q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
print(f"failover over {len(times)} trials: p50 {1000 * q(0.5):.0f} ms, p99 {1000 * q(0.99):.0f} ms, max {1000 * times[-1]:.0f} ms")
