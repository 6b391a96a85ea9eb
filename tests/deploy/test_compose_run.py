#!/usr/bin/env python3
"""Runs the services of deploy/compose.yaml with their own commands, without
a container engine: the keygen service's script makes the keys volume, etcd
is a local member, then scheduler-1, scheduler-2 and a worker of each pool
start from the command lines in the file. Only addresses and volume roots
are rewritten (service names and 0.0.0.0 to 127.0.0.1 ports, /keys and
/etc/trellis under a scratch folder). One scheduler leads; the workers reach
it over CURVE; the compose health check passes on each; when the leader
stops, the other leads and the workers rotate to it.

    test_compose_run.py SOURCE_DIR BUILD_DIR"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

SRC, BUILD = (os.path.abspath(a) for a in sys.argv[1:3])
BIN = {"trellis-scheduler": f"{BUILD}/scheduler/trellis-scheduler",
       "trellis-worker": f"{BUILD}/worker/trellis-worker"}
TMP = tempfile.mkdtemp(prefix="trellis-compose.")
procs = {}
passed = failed = 0


def check(cond, what):
    global passed, failed
    passed += bool(cond)
    failed += not cond
    print(("ok - " if cond else "FAIL ") + what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(fn, seconds, what):
    end = time.time() + seconds
    while time.time() < end:
        try:
            v = fn()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.2)
    check(False, f"{what} (within {seconds}s)")
    raise SystemExit(1)


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


if not os.path.exists(f"{BUILD}/tests/libfake_nvml.so"):
    print(f"FAIL {BUILD}/tests/libfake_nvml.so is missing: build the fake_nvml target (the GPU worker's NVML)")
    sys.exit(1)

doc = yaml.safe_load(open(f"{SRC}/deploy/compose.yaml"))
svcs = doc["services"]
keys = f"{TMP}/keys"
os.makedirs(keys)
ports = {"scheduler-1": (free_port(), free_port()), "scheduler-2": (free_port(), free_port())}


def interpolate(s):
    """${VAR:-default} as compose does, from an empty environment."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", s)


def rewrite(svc, arg, etcd_ep):
    arg = interpolate(arg)
    arg = arg.replace("/keys/", keys + "/")
    arg = arg.replace("/etc/trellis/providers.json", f"{SRC}/deploy/providers.json")
    arg = re.sub(r"etcd://etcd:2379", "etcd://" + etcd_ep, arg)
    if svc in ports:
        api, wp = ports[svc]
        arg = re.sub(r"^--api=0\.0\.0\.0:8420$", f"--api=127.0.0.1:{api}", arg)
        arg = re.sub(r"^--advertise-api=http://127\.0\.0\.1:\d+$", f"--advertise-api=http://127.0.0.1:{api}", arg)
        arg = re.sub(r"^--listen=tcp://0\.0\.0\.0:8421$", f"--listen=tcp://127.0.0.1:{wp}", arg)
    for name, (api, wp) in ports.items():
        arg = arg.replace(f"tcp://{name}:8421", f"tcp://127.0.0.1:{wp}")
    return arg


def start(svc, name, etcd_ep):
    cmd = svcs[svc]["command"]
    argv = [BIN[cmd[0]]] + [rewrite(svc, a, etcd_ep) for a in cmd[1:]]
    # What the NVIDIA runtime would mount for the one reserved GPU: the tests'
    # fake NVML (not part of the compose file).
    env = {"PATH": "/usr/bin:/bin", "TRELLIS_NVML_LIB": f"{BUILD}/tests/libfake_nvml.so",
           "FAKE_NVML_COUNT": "1"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    if cmd[0] == "trellis-worker":
        argv.append(f"--id={name}")   # in containers the default id comes from the hostname
    work = f"{TMP}/{name}"
    os.makedirs(work)
    p = subprocess.Popen(argv, env=env, cwd=work, stdout=open(f"{TMP}/{name}.log", "w"),
                         stderr=subprocess.STDOUT)
    procs[name] = p
    return p


def healthy(svc, p):
    hc = svcs[svc]["healthcheck"]["test"]
    r = subprocess.run([f"{SRC}/deploy/trellis-healthcheck"] if hc[1].endswith("trellis-healthcheck") else hc[1:],
                       env={"PATH": "/usr/bin:/bin", "TRELLIS_HEALTHCHECK_PID": str(p.pid)},
                       capture_output=True, text=True)
    return r.returncode == 0


try:
    # The keygen one-shot's own script, on a folder standing for the volume.
    script = svcs["keygen"]["command"][0].replace("/keys", keys)
    if os.geteuid() != 0:  # the one-shot runs as root in its container
        script = script.replace("chown -R 10001:10001", "true")
    r = subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True,
                       env={"PATH": f"{BUILD}/cli:/usr/bin:/bin"})
    check(r.returncode == 0, "the keygen service's script runs: " + r.stderr.strip())
    check(all(os.path.exists(f"{keys}/{f}") for f in
              ("scheduler.key", "scheduler.pub", "worker.key", "worker.pub", "allowed/worker.pub", "tokens")),
          "it makes both key pairs, the allowed folder and a token")
    token = open(f"{keys}/tokens").read().strip()
    r2 = subprocess.run(["/bin/sh", "-ec", script], capture_output=True, text=True,
                        env={"PATH": f"{BUILD}/cli:/usr/bin:/bin"})
    check(r2.returncode == 0 and open(f"{keys}/tokens").read().strip() == token,
          "run again (compose up after a restart), it keeps the keys and the token")

    e = subprocess.run(["bash", f"{SRC}/tests/etcd/start-etcd.sh", f"{TMP}/etcd", "--fresh"],
                       capture_output=True, text=True)
    if not check(e.returncode == 0, "a local etcd member stands for the etcd service"):
        raise SystemExit(1)
    ep = open(f"{TMP}/etcd/endpoint").read().strip()

    for s in ("scheduler-1", "scheduler-2"):
        p = start(s, s, ep)
        api = f"http://127.0.0.1:{ports[s][0]}"
        wait_for(lambda: get(api + "/healthz")[0] == 200, 60, f"{s} answers /healthz")
        check(healthy(s, p), f"{s}: its compose health check passes")
    ready = wait_for(lambda: (lambda r: r if sorted(r.values()) == [200, 503] else None)(
        {s: get(f"http://127.0.0.1:{ports[s][0]}/readyz")[0] for s in ports}), 60, "one scheduler leads")
    leader = [s for s, c in ready.items() if c == 200][0]
    other = [s for s in ports if s != leader][0]
    check(True, f"{leader} leads, {other} stands by")

    for pool, svc in (("cpu", "worker-cpu"), ("gpu", "worker-gpu")):
        start(svc, f"{svc}-1", ep)

    def workers(s):
        st, body = get(f"http://127.0.0.1:{ports[s][0]}/v1/workers", token)
        return {w["id"]: w for w in json.loads(body)["workers"]} if st == 200 else {}
    ws = wait_for(lambda: (lambda w: w if len(w) == 2 else None)(workers(leader)), 60,
                  "both pools' workers register with the leader over CURVE")
    check(ws["worker-cpu-1"]["pool"] == "cpu" and ws["worker-gpu-1"]["pool"] == "gpu", "their pools")
    check(ws["worker-gpu-1"]["resources"]["gpus"] == 1, "the GPU worker offers the GPU NVML finds (--gpus=auto)")
    check(ws["worker-cpu-1"]["resources"]["gpus"] == 0, "the CPU worker offers none")
    for svc in ("worker-cpu", "worker-gpu"):
        check(healthy(svc, procs[f"{svc}-1"]), f"{svc}: its compose health check passes")

    procs[leader].send_signal(signal.SIGTERM)
    procs[leader].wait(30)
    wait_for(lambda: get(f"http://127.0.0.1:{ports[other][0]}/readyz")[0] == 200, 60,
             f"{other} leads once {leader} stops")
    check(True, f"{other} took over")
    wait_for(lambda: len(workers(other)) == 2, 90, "the workers rotate to the new leader")
    check(True, "the workers rotated to the new leader")
except SystemExit:
    pass
finally:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    # A clean stop exits 0 (under the sanitizers, a leak or an error would not).
    for name, p in procs.items():
        check(p.returncode == 0, f"{name} stopped cleanly: exit {p.returncode}")
    subprocess.run(["bash", f"{SRC}/tests/etcd/stop-etcd.sh", f"{TMP}/etcd"], capture_output=True)
    if failed:
        for f in sorted(os.listdir(TMP)):
            if f.endswith(".log"):
                print(f"== {f}\n" + "".join(open(f"{TMP}/{f}", errors="replace").readlines()[-25:]))
    shutil.rmtree(TMP, ignore_errors=True)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
