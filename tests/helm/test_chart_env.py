#!/usr/bin/env python3
"""Runs the real daemons exactly as the chart configures them: the
containers' environment from `helm template` (ci/gpu-values.yaml), their
Secret and ConfigMap volumes laid out as the kubelet does (..data links),
on loopback with a one-member etcd. Two schedulers elect a leader (only it is
ready), a GPU-pool worker connects over CURVE through the "worker Service"
(the one port whichever scheduler leads binds), the registration job's own
script registers the chart's pipeline, a run of it succeeds, and after the
leader stops the standby leads and the worker follows.

    test_chart_env.py TOOLS_DIR SOURCE_DIR BUILD_DIR

Only addresses and file roots are rewritten (0.0.0.0 and Service names to
127.0.0.1 ports, /etc/trellis/... under a scratch folder); every variable,
name and value the chart sets reaches the binaries unchanged."""
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

TOOLS, SRC, BUILD = (os.path.abspath(a) for a in sys.argv[1:4])
BIN = {"trellis-scheduler": f"{BUILD}/scheduler/trellis-scheduler",
       "trellis-worker": f"{BUILD}/worker/trellis-worker"}
CLI = f"{BUILD}/cli/trellis"
TMP = tempfile.mkdtemp(prefix="trellis-chart-env.")
procs = []
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("ok - " + what)
    else:
        failed += 1
        print("FAIL " + what)
    return cond


def fatal(what):
    check(False, what)
    raise SystemExit(1)


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
    fatal(f"{what} (within {seconds}s)")


def http(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    # A clean stop exits 0 (under the sanitizers, a leak or an error would not).
    for p in procs:
        check(p.returncode == 0, f"{os.path.basename(p.args[0])} (pid {p.pid}) stopped cleanly: exit {p.returncode}")
    subprocess.run(["bash", f"{SRC}/tests/etcd/stop-etcd.sh", f"{TMP}/etcd"], capture_output=True)
    if failed:
        for f in sorted(os.listdir(TMP)):
            if f.endswith(".log"):
                print(f"== {f}")
                print("".join(open(os.path.join(TMP, f), errors="replace").readlines()[-30:]))
    shutil.rmtree(TMP, ignore_errors=True)


if not os.path.exists(f"{BUILD}/tests/libfake_nvml.so"):
    print(f"FAIL {BUILD}/tests/libfake_nvml.so is missing: build the fake_nvml target (the GPU worker's NVML)")
    sys.exit(1)

# ---- what the chart renders ----
r = subprocess.run(["node", f"{SRC}/tests/helm/chart_test.mjs", "env", TOOLS, SRC,
                    f"{SRC}/helm/trellis/ci/gpu-values.yaml"], capture_output=True, text=True)
if r.returncode != 0:
    print(r.stderr)
    fatal("helm template of ci/gpu-values.yaml")
chart = json.loads(r.stdout)
C = chart["containers"]

try:
    # ---- etcd, keys, and the Secrets the chart expects ----
    e = subprocess.run(["bash", f"{SRC}/tests/etcd/start-etcd.sh", f"{TMP}/etcd", "--fresh"],
                       capture_output=True, text=True)
    if e.returncode != 0:
        fatal("etcd starts: " + e.stderr)
    etcd_ep = open(f"{TMP}/etcd/endpoint").read().strip()
    keys = f"{TMP}/keys"
    for n in ("scheduler", "worker"):
        subprocess.run([CLI, "keygen", n, "--dir", keys], check=True, capture_output=True)
    token = "t0k3n-" + os.urandom(8).hex()
    mtoken = "m3tr1cs-" + os.urandom(8).hex()
    secrets = {
        "r1-trellis-auth": {"tokens": f"{token}\n{mtoken}\n", "admin-token": token, "metrics-token": mtoken},
        "r1-trellis-curve": {k: open(f"{keys}/{k}").read()
                             for k in ("scheduler.key", "scheduler.pub", "worker.key", "worker.pub")},
    }
    configmaps = chart["configMaps"]

    def materialize(root, mounts):
        """Lays out each volume as the kubelet does: files linked to ..data/."""
        for m in mounts:
            d = root + m["path"]
            os.makedirs(d, exist_ok=True)
            if m["emptyDir"] or not (m.get("secret") or m.get("configMap")):
                continue  # scratch, or a volume of the user's (a PVC): an empty folder
            if m.get("secret"):
                data = secrets[m["secret"]["secretName"]]
                items = m["secret"].get("items")
            else:
                data = configmaps[m["configMap"]["name"]]
                items = m["configMap"].get("items")
            files = {it["path"]: data[it["key"]] for it in items} if items else dict(data)
            ts = os.path.join(d, "..2026_12_06_00_00_00.000000001")
            os.makedirs(ts)
            for name, text in files.items():
                with open(os.path.join(ts, name), "w") as f:
                    f.write(text)
            os.symlink(os.path.basename(ts), os.path.join(d, "..data"))
            for name in files:
                os.symlink(os.path.join("..data", name), os.path.join(d, name))

    api_ports = {"a": free_port(), "b": free_port()}
    wport = free_port()  # the worker Service: whichever scheduler leads binds it

    def container_env(cname, pod, root, api_port=None):
        env = {"PATH": f"{BUILD}/cli:/usr/bin:/bin", "HOME": root,
               # What the NVIDIA runtime would mount: here the tests' fake NVML
               # with the 8 devices of an a100 pod (not a chart setting).
               "TRELLIS_NVML_LIB": f"{BUILD}/tests/libfake_nvml.so", "FAKE_NVML_COUNT": "8",
               "FAKE_NVML_NAME": "NVIDIA A100-SXM4-80GB"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        for name, value, src in C[cname]["env"]:
            if src:
                fp = src["fieldRef"]["fieldPath"]
                value = {"metadata.name": pod, "status.podIP": "127.0.0.1"}[fp]
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
            if name == "TRELLIS_STATE":
                value = re.sub(r"^etcd://[^?]+", "etcd://" + etcd_ep, value)
            elif name == "TRELLIS_API":
                value = re.sub(r"^0\.0\.0\.0:\d+$", f"127.0.0.1:{api_port}", value)
            elif name == "TRELLIS_ADVERTISE_API":
                value = re.sub(r":\d+$", f":{api_port}", value)
            elif name in ("TRELLIS_LISTEN", "TRELLIS_SCHEDULER"):
                value = re.sub(r"^tcp://[^:]+:\d+$", f"tcp://127.0.0.1:{wport}", value)
            if value.startswith("/etc/trellis/"):
                value = root + value
            env[name] = value
        return env

    def start(cname, pod, api_port=None):
        root = f"{TMP}/{pod}"
        materialize(root, C[cname]["mounts"])
        env = container_env(cname, pod, root, api_port)
        args = C[cname]["args"]
        log = open(f"{TMP}/{pod}.log", "w")
        p = subprocess.Popen([BIN[args[0]]] + args[1:], env=env, cwd=root + "/var/lib/trellis",
                             stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p, env

    sched = {}
    for x in ("a", "b"):
        sched[x], senv = start("r1-trellis-scheduler/scheduler", f"r1-trellis-scheduler-{x}", api_ports[x])
        url = f"http://127.0.0.1:{api_ports[x]}"
        wait_for(lambda: http(url + "/healthz")[0] == 200, 60, f"scheduler {x} answers /healthz")
    check(all(n in senv for n in ("TRELLIS_TOKEN_FILE", "TRELLIS_CURVE_KEY", "TRELLIS_CURVE_ALLOW",
                                  "TRELLIS_LEADER_TTL", "TRELLIS_KEEP_RUNS")),
          "the schedulers run with the chart's TRELLIS_ variables only")

    def roles():
        return {x: http(f"http://127.0.0.1:{api_ports[x]}/readyz")[0] for x in api_ports}
    rs = wait_for(lambda: (lambda r: r if sorted(r.values()) == [200, 503] else None)(roles()), 60,
                  "one scheduler is ready (the leader), the other not (503)")
    leader = [x for x, c in rs.items() if c == 200][0]
    standby = "b" if leader == "a" else "a"
    check(True, f"scheduler {leader} leads and is the only ready one")
    lurl = f"http://127.0.0.1:{api_ports[leader]}"
    st, _, hdr = http(f"http://127.0.0.1:{api_ports[standby]}/v1/runs", token)
    check(st == 307 and hdr.get("Location", "").startswith(lurl),
          f"the standby redirects API calls to the leader's advertised address ({st} {hdr.get('Location')})")
    check(http(lurl + "/v1/runs")[0] == 401, "the API asks for the token from the auth Secret")

    # ---- a worker of the a100 pool, over CURVE, through the worker "Service" ----
    wproc, wenv = start("r1-trellis-worker-a100/worker", "r1-trellis-worker-a100-x")

    def worker_on(url):
        st, body, _ = http(url + "/v1/workers", token)
        ws = [w for w in json.loads(body)["workers"] if w["id"] == "r1-trellis-worker-a100-x"] if st == 200 else []
        return ws[0] if ws else None
    w = wait_for(lambda: worker_on(lurl), 60, "the worker registers with the leader over CURVE")
    check(w["pool"] == "gpu" and w["resources"]["gpus"] == 8,
          f"it serves pool gpu with the 8 GPUs NVML finds (--gpus auto) ({w['pool']}, {w['resources']})")
    check(w["labels"] == {"gpu": "a100", "nvlink": "true"}, f"its labels come from TRELLIS_LABEL ({w['labels']})")
    hc = subprocess.run([f"{SRC}/deploy/trellis-healthcheck"], capture_output=True, text=True,
                        env={**wenv, "TRELLIS_HEALTHCHECK_PID": str(wproc.pid)})
    check(hc.returncode == 0, "the worker's probe (trellis-healthcheck) passes: " + hc.stderr.strip())

    # ---- `helm test`: its script finds a worker of every pool ----
    for cname in C:
        if cname.endswith("/worker") and cname != "r1-trellis-worker-a100/worker":
            start(cname, cname.split("/")[0] + "-x")
    tp = C["r1-trellis-test/test"]
    troot = f"{TMP}/helm-test"
    materialize(troot, tp["mounts"])
    tscript = tp["args"][0].replace("/etc/trellis/", troot + "/etc/trellis/")
    tscript = re.sub(r"http://r1-trellis-api\.trellis\.svc:\d+", lurl, tscript)
    tr = subprocess.run(["bash", "-ec", tscript], capture_output=True, text=True, timeout=200,
                        env={"PATH": f"{BUILD}/cli:/usr/bin:/bin", "HOME": troot})
    check(tr.returncode == 0 and tr.stdout.count(": connected") == 3,
          f"helm test's script sees a worker of each of the 3 pools: {tr.stdout.strip()} {tr.stderr.strip()}")

    # ---- the registration job's script, against the "API Service" (the leader) ----
    reg = C["r1-trellis-register/register"]
    root = f"{TMP}/register"
    materialize(root, reg["mounts"])
    script = reg["args"][0].replace("/etc/trellis/", root + "/etc/trellis/")
    script = re.sub(r"http://r1-trellis-api\.trellis\.svc:\d+", lurl, script)
    rr = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=300,
                        env={"PATH": f"{BUILD}/cli:/usr/bin:/bin", "HOME": root})
    check(rr.returncode == 0 and "registered pipeline 'embed'" in rr.stdout,
          f"the registration job registers the chart's pipeline: {rr.stdout.strip()} {rr.stderr.strip()}")
    run = subprocess.run([CLI, "--api", lurl, "--token-file", f"{root}/etc/trellis/auth/admin-token",
                          "run", "--wait", "embed"], capture_output=True, text=True, timeout=120)
    check(run.returncode == 0 and '"gpu:trellis:2"' in run.stdout,
          f"a run of the registered pipeline gets 2 GPUs on the GPU pool: {run.stdout.strip()} {run.stderr.strip()[-300:]}")

    # ---- the chart's alerts name series the daemons and etcd really export ----
    import yaml
    rules = yaml.safe_load(open(f"{SRC}/helm/trellis/files/alerts.yaml"))["groups"][0]["rules"]
    check(http(lurl + "/metrics")[0] == 401, "/metrics asks for a token")
    scraped = http(lurl + "/metrics", mtoken)[1] + urllib.request.urlopen(f"http://{etcd_ep}/metrics", timeout=5).read().decode()
    series = {}
    for line in scraped.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if m:
            labels = set(re.findall(r'([a-zA-Z_]\w*)="', m.group(3) or ""))
            series.setdefault(m.group(1), set()).update(labels)
    # Per-pipeline families (runs, LLM tokens, feedback, drift) have samples
    # only once such things happened; here their # TYPE line must be on the
    # page, and tests/deploy/test_observability.sh checks their labels.
    declared = set()
    for m in re.finditer(r"^# TYPE (\S+) (\w+)", scraped, re.M):
        declared.add(m.group(1))
        if m.group(2) == "histogram":
            declared.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    for rule in rules:
        for name, sel in re.findall(r"\b((?:trellis|etcd)_[a-z_]+)(\{[^}]*\})?", rule["expr"]):
            check(name in series or name in declared, f"alert {rule['alert']}: {name} is exported")
            if name not in series:
                continue
            for label in re.findall(r"(\w+)\s*=", sel or ""):
                check(label in series.get(name, set()), f"alert {rule['alert']}: {name} has label {label}")
        for label in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            for l in (x.strip() for x in label.split(",")):
                if l in ("namespace", "job", "le"):
                    continue  # added by Prometheus, or a histogram's bucket label
                names = re.findall(r"\b((?:trellis|etcd)_[a-z_]+)", rule["expr"])
                if not any(n in series for n in names):
                    continue
                check(any(l in series.get(n, set()) for n in names),
                      f"alert {rule['alert']}: grouped by {l}, a label of its series")

    # The dashboard's queries too.
    dash = json.load(open(f"{SRC}/helm/trellis/files/dashboard.json"))
    for panel in dash["panels"]:
        for tgt in panel.get("targets", []):
            for name, sel in re.findall(r"\b((?:trellis|etcd)_[a-z_]+)(\{[^}]*\})?", tgt["expr"]):
                check(name in series or name in declared,
                      f"dashboard '{panel['title']}': {name} is exported")
            for grp in re.findall(r"by \(([^)]*)\)", tgt["expr"]):
                names = re.findall(r"\b((?:trellis|etcd)_[a-z_]+)", tgt["expr"])
                if not any(n in series for n in names):
                    continue
                for l in (x.strip() for x in grp.split(",")):
                    if l != "le":
                        check(any(l in series.get(n, set()) for n in names),
                              f"dashboard '{panel['title']}': grouped by {l}, a label of its series")

    # ---- failover: the leader stops, the standby leads, the worker follows ----
    sched[leader].send_signal(signal.SIGTERM)
    sched[leader].wait(30)
    surl = f"http://127.0.0.1:{api_ports[standby]}"
    wait_for(lambda: http(surl + "/readyz")[0] == 200, 60, "the standby becomes ready once the leader stops")
    check(True, "the standby leads and is ready")
    wait_for(lambda: worker_on(surl), 90, "the worker reconnects to the new leader")
    check(True, "the worker follows the new leader through the same worker port")
    run = subprocess.run([CLI, "--api", surl, "--token-file", f"{root}/etc/trellis/auth/admin-token",
                          "run", "--wait", "embed"], capture_output=True, text=True, timeout=120)
    check(run.returncode == 0, "the pipeline registered before the failover runs on the new leader")
except SystemExit:
    pass
finally:
    cleanup()
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
