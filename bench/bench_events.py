#!/usr/bin/env python3
"""bench_events.py - the cost of live events (docs/performance.md, "Events").

  bench/bench_events.py [--build build] [--runs 300] [--w1 10000] [--repeat 3] [--sse 1000]

Starts its own scheduler (SQLite in a temporary folder) and 2 workers with
--slots 1 (trellis-bench's W1 cluster), plus one worker of pool "idle".

E: the time from a task finishing to its event reaching an SSE client. One
client reads GET /v1/events; runs of one task that returns trellis.now() (the
worker's wall clock as the task ends) are started one after another; for each,
the client's receive time of the task's `succeeded` event minus that value.
Prints p50 and p99 (same machine, same clock).

C: W1 (one run of N independent no-op tasks, submit to end) --repeat times
without SSE clients, then with --sse idle clients streaming a run that sleeps
(GET /v1/runs/{id}/events), alternating; prints the medians and the ratio.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def arg(name, default):
    if name in sys.argv:
        return type(default)(sys.argv[sys.argv.index(name) + 1])
    return default


BUILD = arg("--build", "build")
RUNS = arg("--runs", 300)
W1 = arg("--w1", 10000)
REPEAT = arg("--repeat", 3)
SSE = arg("--sse", 1000)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


API_PORT, W_PORT = free_port(), free_port()
API = "http://127.0.0.1:%d" % API_PORT
TMP = tempfile.mkdtemp(prefix="trellis-bench-events.")
PROCS = []


def http(method, path, body=None, timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def submit(src, name, params=None):
    return http("POST", "/v1/runs", {"source": src, "name": name, "params": params or {}})["run_id"]


def wait_run(rid):
    while True:
        r = http("GET", "/v1/runs/%s?wait=10" % rid)
        if r["state"] in ("succeeded", "failed", "cancelled"):
            return r


def start():
    log = open(os.path.join(TMP, "cluster.log"), "w")
    PROCS.append(subprocess.Popen(
        [os.path.join(BUILD, "scheduler/trellis-scheduler"), "--api", "127.0.0.1:%d" % API_PORT,
         "--listen", "tcp://127.0.0.1:%d" % W_PORT, "--state", "sqlite:%s/s.db" % TMP,
         "--max-sse", str(SSE + 100), "--log-level", "warn"], stdout=log, stderr=log))
    for name, pool in (("a", "cpu"), ("b", "cpu"), ("idle", "idle")):
        PROCS.append(subprocess.Popen(
            [os.path.join(BUILD, "worker/trellis-worker"), "--scheduler",
             "tcp://127.0.0.1:%d" % W_PORT, "--id", "w-" + name, "--pool", pool, "--slots", "1",
             "--log-level", "warn"], stdout=log, stderr=log))
    for _ in range(200):
        try:
            if len(http("GET", "/v1/workers")["workers"]) == 3:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("cluster did not start")


def stop():
    for p in PROCS:
        p.terminate()
    for p in PROCS:
        p.wait()
    shutil.rmtree(TMP, ignore_errors=True)


def sse_connect(path):
    s = socket.create_connection(("127.0.0.1", API_PORT))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n" % path).encode())
    return s


def latency():
    src = ('local trellis = require "trellis"\n'
           'return trellis.pipeline { name = "bench-e", version = "1", tasks = {\n'
           '  trellis.task { name = "t", run = function() return trellis.now() end } } }\n')
    got = {}
    s = sse_connect("/v1/events?pipeline=bench-e")
    done = threading.Event()

    def reader():
        buf = b""
        while not done.is_set():
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.time()
            buf += data
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if b"event: task" in ev and b'"succeeded"' in ev:
                    d = json.loads(ev.split(b"data: ", 1)[1])
                    got[d["run"]] = now

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)
    lat = []
    for _ in range(RUNS):
        rid = submit(src, "bench-e.lua")
        r = wait_run(rid)
        for _ in range(100):
            if rid in got:
                break
            time.sleep(0.01)
        lat.append((got[rid] - r["output"]["t"]) * 1e6)
    done.set()
    s.close()
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def w1_once():
    src = ('local trellis = require "trellis"\nlocal function noop(ctx) return nil end\n'
           'local N, tasks = %d, {}\nfor i = 1, N do tasks[i] = trellis.task { name = "t" .. i, '
           'run = noop } end\nreturn trellis.pipeline { name = "bench-w1", version = "1", '
           'tasks = tasks }\n' % W1)
    t0 = time.monotonic()
    rid = submit(src, "bench-w1.lua")
    r = wait_run(rid)
    t1 = time.monotonic()
    assert r["state"] == "succeeded", r
    return W1 / (t1 - t0)


def main():
    start()
    try:
        warm = ('local trellis = require "trellis"\nreturn trellis.pipeline { name = "warm", '
                'version = "1", tasks = { trellis.task { name = "t", run = function() end } } }\n')
        for _ in range(50):
            wait_run(submit(warm, "warm.lua"))
        p50, p99 = latency()
        print("trellis E runs=%d p50_us=%.0f p99_us=%.0f" % (RUNS, p50, p99), flush=True)
        idle = ('local trellis = require "trellis"\nreturn trellis.pipeline { name = "idle", '
                'version = "1", tasks = { trellis.task { name = "nap", pool = "idle", '
                'run = function() trellis.sleep(3600) end } } }\n')
        rid = submit(idle, "idle.lua")
        base, loaded = [], []
        for i in range(REPEAT):
            base.append(w1_once())
            print("trellis C w1 sse=0 tasks_per_s=%.0f" % base[-1], flush=True)
            socks = [sse_connect("/v1/runs/%s/events" % rid) for _ in range(SSE)]
            time.sleep(1)
            n = int(urllib.request.urlopen(API + "/metrics").read().decode()
                    .split("\ntrellis_event_streams ")[1].split()[0])
            loaded.append(w1_once())
            print("trellis C w1 sse=%d open=%d tasks_per_s=%.0f" % (SSE, n, loaded[-1]), flush=True)
            for s in socks:
                s.close()
            time.sleep(1)
        b, l = statistics.median(base), statistics.median(loaded)
        print("trellis C median w1_tasks_per_s sse=0 %.0f sse=%d %.0f change=%+.1f%%"
              % (b, SSE, l, (l - b) / b * 100))
    finally:
        stop()


if __name__ == "__main__":
    main()
