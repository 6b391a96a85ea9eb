#!/usr/bin/env python3
"""Checks deploy/compose.yaml: its services, their commands (every flag one
the built daemons accept, read from their --help), the leader/standby pair on
one etcd, the CPU and GPU pools with the GPU reservation, and the health
checks.

    check_compose.py SOURCE_DIR SCHEDULER_BINARY WORKER_BINARY"""
import os
import re
import subprocess
import sys

import yaml

SRC, SCHED, WORKER = sys.argv[1:4]
failures, checks = [], 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL " + what)


def help_flags(binary):
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", r.stdout + r.stderr))


FLAGS = {"trellis-scheduler": help_flags(SCHED), "trellis-worker": help_flags(WORKER)}
check({"state", "api", "listen"} <= FLAGS["trellis-scheduler"], "the scheduler's --help lists its flags")
check({"scheduler", "pool", "slots"} <= FLAGS["trellis-worker"], "the worker's --help lists its flags")

with open(os.path.join(SRC, "deploy/compose.yaml")) as f:
    doc = yaml.safe_load(f)
svcs = doc.get("services", {})


def cmd_flags(cmd):
    """{flag: value} of a command written as a list ('--k=v' or '--k', 'v')."""
    out, i = {}, 1
    while i < len(cmd):
        w = str(cmd[i])
        if w.startswith("--"):
            if "=" in w:
                k, v = w[2:].split("=", 1)
            else:
                k, v = w[2:], str(cmd[i + 1]) if i + 1 < len(cmd) else ""
                i += 1
            out.setdefault(k, []).append(v)
        i += 1
    return out


def daemons(kind):
    return {n: s for n, s in svcs.items()
            if isinstance(s.get("command"), list) and s["command"] and s["command"][0] == kind}


scheds, workers = daemons("trellis-scheduler"), daemons("trellis-worker")
check(len(scheds) == 2, "two schedulers (got %s)" % sorted(scheds))
check("etcd" in svcs, "an etcd service")
check(len(workers) >= 2, "at least two worker services (got %s)" % sorted(workers))

# Every flag of every daemon is one it accepts.
for name, s in list(scheds.items()) + list(workers.items()):
    kind = s["command"][0]
    check(all(isinstance(w, str) for w in s["command"]), "%s: command is a list of strings" % name)
    for w in s["command"][1:]:
        check(not w.startswith("-") or w.startswith("--"), "%s: '%s' is a long flag" % (name, w))
    for flag in cmd_flags(s["command"]):
        check(flag in FLAGS[kind], "%s: %s accepts --%s" % (name, kind, flag))

# The schedulers: the same etcd state, distinct ids, API published, CURVE on.
ids, states, ports = set(), set(), set()
for name, s in scheds.items():
    f = cmd_flags(s["command"])
    ids.add(f.get("id", [""])[0])
    states.add(f.get("state", [""])[0])
    check(f.get("state", [""])[0].startswith("etcd://etcd:2379"), "%s: --state on the etcd service" % name)
    check(f.get("api", [""])[0].startswith("0.0.0.0:"), "%s: the API listens beyond loopback" % name)
    check("token-file" in f, "%s: tokens guard the published API" % name)
    check("curve-key" in f and "curve-allow" in f, "%s: CURVE guards the worker port" % name)
    check(f.get("listen", [""])[0].endswith(":8421"), "%s: worker port 8421" % name)
    check("advertise-api" in f, "%s: advertises the API URL standbys redirect to" % name)
    pub = [p.split(":")[0] for p in s.get("ports", [])]
    check(len(pub) == 1, "%s publishes its API" % name)
    ports.update(pub)
    check(s.get("restart") in ("always", "unless-stopped"),
          "%s restarts (a leader that loses its lease exits 3)" % name)
    dep = s.get("depends_on", {})
    check(dep.get("etcd", {}).get("condition") == "service_healthy", "%s waits for a healthy etcd" % name)
check(len(ids) == 2 and "" not in ids, "the schedulers have distinct --id")
check(len(states) == 1, "the schedulers share one state (leader and standby)")
check(len(ports) == 2, "the schedulers publish distinct host ports")

# The workers: pools, endpoints naming both schedulers, CURVE, the GPU reservation.
pools = {}
for name, s in workers.items():
    f = cmd_flags(s["command"])
    pools[f.get("pool", ["cpu"])[0]] = (name, s, f)
    eps = f.get("scheduler", [""])[0].split(",")
    hosts = {re.sub(r"^tcp://([^:]+):\d+$", r"\1", e) for e in eps}
    check(hosts == set(scheds), "%s: --scheduler names both schedulers (%s)" % (name, eps))
    check("curve-key" in f and "curve-server" in f, "%s: connects with CURVE" % name)
    dep = s.get("depends_on", {})
    check(dep.get("keygen", {}).get("condition") == "service_completed_successfully",
          "%s waits for the keys" % name)
check({"cpu", "gpu"} <= set(pools), "a cpu and a gpu pool (got %s)" % sorted(pools))
if "gpu" in pools:
    name, s, f = pools["gpu"]
    devs = (s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []))
    check(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devs),
          "%s reserves NVIDIA GPUs (deploy.resources.reservations.devices)" % name)
    check("gpus" in f, "%s advertises its GPUs (--gpus)" % name)
if "cpu" in pools:
    name, s, f = pools["cpu"]
    devs = s.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(not devs, "%s reserves no GPU" % name)

# etcd: one member whose peer and client URLs name the service.
if "etcd" in svcs:
    e = svcs["etcd"]
    c = " ".join(e.get("command", []))
    check("--advertise-client-urls=http://etcd:2379" in c, "etcd advertises etcd:2379")
    check("--initial-advertise-peer-urls=http://etcd:2380" in c, "etcd peer URL")
    check(any(str(v).endswith(":/etcd-data") for v in e.get("volumes", [])), "etcd keeps its data in a volume")
    check(not e.get("ports"), "etcd is not published outside the compose network")

# Health checks: every long-running service has one; the keys one-shot runs first.
for name, s in svcs.items():
    if name == "keygen":
        continue
    hc = s.get("healthcheck", {})
    check(isinstance(hc.get("test"), list) and hc["test"][0] == "CMD" and not hc.get("disable"),
          "%s has a health check" % name)
    for k in ("interval", "timeout", "retries"):
        check(k in hc, "%s: healthcheck %s" % (name, k))
    if name in scheds or name in workers:
        check(hc.get("test", [None, None])[1] == "/usr/local/bin/trellis-healthcheck",
              "%s checks itself with the image's trellis-healthcheck" % name)
k = svcs.get("keygen", {})
kc = " ".join(k.get("command", []))
check("trellis keygen scheduler" in kc and "trellis keygen worker" in kc, "keygen makes both key pairs")
check("allowed/" in kc, "keygen fills the scheduler's --curve-allow folder")

# The same image everywhere, built from deploy/Dockerfile.
imgs = {s.get("image") for n, s in svcs.items() if n in scheds or n in workers or n == "keygen"}
check(len(imgs) == 1, "one Trellis image for every role (got %s)" % imgs)
for n, s in svcs.items():
    if n in scheds or n in workers or n == "keygen":
        check(s.get("build", {}).get("dockerfile") == "deploy/Dockerfile", "%s builds deploy/Dockerfile" % n)
for v in doc.get("volumes", {}):
    check(any(str(x).startswith(v + ":") for s in svcs.values() for x in s.get("volumes", [])),
          "volume %s is used" % v)
# Bind mounts point at files that exist (relative to deploy/).
for n, s in svcs.items():
    for v in s.get("volumes", []):
        src = str(v).split(":")[0]
        m = re.match(r"\$\{[A-Z_]+:-([^}]+)\}$", src)
        if m:
            src = m.group(1)
        if src.startswith("./"):
            check(os.path.exists(os.path.join(SRC, "deploy", src)), "%s: %s exists" % (n, src))

print("%d passed, %d failed" % (checks - len(failures), len(failures)))
sys.exit(1 if failures else 0)
