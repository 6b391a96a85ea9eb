#!/usr/bin/env python3
"""The --retention purge's effect on one-task round trips (W2-like).

Starts a scheduler (SQLite in a scratch folder) and a worker, makes N finished
runs of a one-task pipeline, restarts the scheduler with --retention so tiny
that all of them are due (but not the new ones), and measures sequential POST /v1/runs + GET
?wait=10 round trips while the purge runs and after it has finished.

usage: bench/retention_purge.py BUILD_DIR [N=10000] [SAMPLES=1000]
"""
import http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

build = sys.argv[1]
n_runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
samples = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
tmp = tempfile.mkdtemp(prefix="trellis-retention-")
procs = []

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

api_port, w_port = port(), port()

def start_sched(*extra):
    p = subprocess.Popen([f"{build}/scheduler/trellis-scheduler", "--api", f"127.0.0.1:{api_port}",
                          "--listen", f"tcp://127.0.0.1:{w_port}", "--state", f"sqlite:{tmp}/state.db",
                          "--heartbeat-ms", "200", "--log-level", "warn", *extra],
                         stdout=open(f"{tmp}/sched.log", "a"), stderr=subprocess.STDOUT)
    procs.append(p)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5); c.request("GET", "/readyz")
            if c.getresponse().status == 200: return p
        except OSError: pass
        time.sleep(0.05)
    sys.exit("scheduler did not start")

def conn(): return http.client.HTTPConnection("127.0.0.1", api_port, timeout=30)

def call(c, method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); return r.status, json.loads(r.read() or b"null")

SRC = 'local trellis = require "trellis"\nreturn trellis.pipeline { name = "noop", version = "1", tasks = { trellis.task { name = "t", run = function() return 1 end } } }\n'

def round_trips(c, k):
    out = []
    for _ in range(k):
        t0 = time.perf_counter()
        st, a = call(c, "POST", "/v1/runs", {"pipeline": "noop"})
        st, r = call(c, "GET", f"/v1/runs/{a['run_id']}?wait=10")
        assert r["state"] == "succeeded", r
        out.append((time.perf_counter() - t0) * 1e6)
    return out

def summary(xs):
    xs = sorted(xs)
    return "p50 %d us, p99 %d us, mean %d us (n=%d)" % (xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1],
                                                      statistics.mean(xs), len(xs))

def count_runs():
    import sqlite3
    return sqlite3.connect(f"{tmp}/state.db").execute("select count(*) from runs").fetchone()[0]

try:
    sched = start_sched()
    w = subprocess.Popen([f"{build}/worker/trellis-worker", "--scheduler", f"tcp://127.0.0.1:{w_port}",
                          "--slots", "16", "--log-level", "warn"], stdout=open(f"{tmp}/worker.log", "a"),
                         stderr=subprocess.STDOUT)
    procs.append(w)
    c = conn()
    call(c, "POST", "/v1/pipelines", {"source": SRC})
    t0 = time.time()
    ids = []
    for i in range(n_runs):
        ids.append(call(c, "POST", "/v1/runs", {"pipeline": "noop"})[1]["run_id"])
    call(c, "GET", f"/v1/runs/{ids[-1]}?wait=30")
    time.sleep(1)
    print(f"{n_runs} runs made in {time.time() - t0:.1f} s")
    base = round_trips(c, samples)
    print("before, no retention:   " + summary(base))
    c.close(); sched.terminate(); sched.wait()
    before = count_runs()
    # --retention 0.0004 days = 34.6 s: the runs made above are due once 35 s
    # old, the round trips' own runs not before the measurement ends.
    wait = 35 - (time.time() - t0)
    if wait > 0:
        time.sleep(wait)
    sched = start_sched("--retention", "0.0004")
    c = conn()
    t0 = time.time()
    during, after = [], []
    # Round trips in batches of 50; a batch counts as "during" while the state
    # still holds more runs than the round trips have added since the restart.
    while time.time() - t0 < 30 and len(after) < samples:
        made = len(during) + len(after)
        n = count_runs()
        (during if n > made + 50 else after).extend(round_trips(c, 50))
    t_end = time.time() - t0
    print(f"purge of {before} runs: done {t_end:.1f} s after the restart (left: {count_runs()})")
    print("during the purge:       " + summary(during))
    print("after the purge:        " + summary(after))
finally:
    for p in procs:
        if p.poll() is None: p.terminate()
    for p in procs:
        try: p.wait(5)
        except Exception: p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
