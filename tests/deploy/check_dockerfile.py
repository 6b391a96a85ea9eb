#!/usr/bin/env python3
"""Checks deploy/Dockerfile instruction by instruction (CI has no container
engine to build it): two stages on Debian 12, a Release build with the
packages of scripts/install-deps.sh, a slim runtime stage without compilers
that installs every shared library the built binaries need, a non-root USER,
a HEALTHCHECK, OCI labels, and COPY --from of the three binaries only.

    check_dockerfile.py SOURCE_DIR [BINARY...]

With the built binaries given, their DT_NEEDED libraries are mapped to Debian
packages (ldconfig, dpkg -S) and each must be installed by the runtime stage
or be part of debian:12-slim itself."""
import json
import os
import re
import shlex
import subprocess
import sys

SRC = sys.argv[1]
BINARIES = sys.argv[2:]
failures = []
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failures.append(what)
        print("FAIL " + what)


def parse(path):
    """[(line, INSTRUCTION, args)] with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    with open(path) as f:
        for no, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (line.strip().startswith("#") or not line.strip()):
                continue
            if buf and line.strip().startswith("#"):
                continue  # a comment inside a continued instruction
            if not buf:
                start = no
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            buf = ""
    return out


def flags_and_rest(args):
    """COPY/HEALTHCHECK style: leading --flag=value words, then the rest."""
    flags = {}
    words = args.split()
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, " ".join(words)


def apt_packages(run_args):
    """Packages named by 'apt-get install' in one RUN."""
    pkgs = []
    for cmd in re.split(r"&&|;|\|\|", run_args):
        words = shlex.split(cmd)
        if "apt-get" in words and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


instrs = parse(os.path.join(SRC, "deploy/Dockerfile"))
stages = []  # {name, image, instrs}
for no, word, args in instrs:
    if word == "FROM":
        m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
        stages.append({"image": m.group(1), "name": m.group(2), "instrs": [], "line": no})
    elif stages:
        stages[-1]["instrs"].append((no, word, args))

# Stages and bases.
check(len(stages) == 2, "two stages (build, runtime), found %d" % len(stages))
for st in stages:
    check(re.fullmatch(r"debian:12(\.\d+)?(-slim)?(@sha256:[0-9a-f]{64})?", st["image"]) is not None,
          "line %d: FROM pinned to Debian 12 (got %s)" % (st["line"], st["image"]))
build, run = stages[0], stages[-1]
check(build["name"] == "build", "the first stage is named build")
check("-slim" in run["image"], "the runtime stage is debian:12-slim")


def words(stage, word):
    return [a for _, w, a in stage["instrs"] if w == word]


# Build stage: install-deps.sh, a Release build of the three targets.
b_runs = " ".join(words(build, "RUN"))
check("install-deps.sh" in b_runs, "the build stage installs with scripts/install-deps.sh")
check(any("scripts/install-deps.sh" in a for a in words(build, "COPY")),
      "the build stage copies scripts/install-deps.sh")
check("-DCMAKE_BUILD_TYPE=Release" in b_runs, "a Release build")
for t in ("trellis-scheduler", "trellis-worker", "trellis"):
    check(re.search(r"--target[^&]*\b%s\b" % re.escape(t), b_runs) is not None,
          "the build stage builds target %s" % t)
check('trellis --version)" = "trellis ${TRELLIS_VERSION}"' in b_runs,
      "the build stage checks that the binaries are the version the image is labelled with")

# The build stage takes the binaries from where the build tree puts them
# (TR_BUILD_DIR: the CTest build folder, laid out as /build in the image).
bdir = os.environ.get("TR_BUILD_DIR")
if bdir and BINARIES:
    for b in BINARIES:
        rel = os.path.relpath(os.path.realpath(b), os.path.realpath(bdir))
        check("/build/" + rel in b_runs, "the build stage installs /build/%s" % rel)

# The version build argument defaults to the version of the sources.
with open(os.path.join(SRC, "CMakeLists.txt")) as f:
    proj = re.search(r"project\(\s*trellis\s+VERSION\s+(\S+)", f.read()).group(1)
global_args = [a for _, w, a in instrs[:1] if w == "ARG"] + \
    [a for no, w, a in instrs if w == "ARG" and no < build["line"]]
check("TRELLIS_VERSION=" + proj in global_args,
      "ARG TRELLIS_VERSION defaults to the version in CMakeLists.txt (%s), got %s" % (proj, global_args))
for st in stages:
    check("TRELLIS_VERSION" in [a.split("=")[0] for a in words(st, "ARG")],
          "stage %s declares ARG TRELLIS_VERSION" % st["name"])

# Runtime stage: packages, no compilers.
r_pkgs = [p for a in words(run, "RUN") for p in apt_packages(a)]
check(len(r_pkgs) > 0, "the runtime stage installs its libraries with apt-get")
compilers = re.compile(r"^(gcc.*|g\+\+.*|cpp.*|clang.*|llvm.*|build-essential|make|cmake.*|"
                       r"pkg-config|pkgconf|binutils.*|libc6-dev|.*-dev|autoconf|automake|libtool)$")
bad = [p for p in r_pkgs if compilers.match(p)]
check(not bad, "no compiler or -dev package in the runtime stage (found %s)" % bad)
check("--no-install-recommends" in " ".join(words(run, "RUN")), "runtime apt-get without recommends")
check("rm -rf /var/lib/apt/lists/*" in " ".join(words(run, "RUN")), "runtime stage drops the apt lists")
check("tini" in r_pkgs, "tini is installed (PID 1 reaps orphans of trellis.exec)")

# Every library the binaries need is installed (or is part of the base image),
# directly or as a dependency of an installed package (dpkg's Depends, as
# apt would pull them: a sanitizer build links libgrpc's own dependencies
# directly). The sanitizer runtimes belong to test builds, not to the image.
BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
SANITIZERS = re.compile(r"^lib(asan|ubsan|tsan|lsan)[0-9]*$")


def depends_closure(pkgs):
    seen, pending = set(), list(pkgs)
    while pending:
        p = pending.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", p],
                           capture_output=True, text=True)
        for alt in r.stdout.split(","):
            name = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                pending.append(name)
    return seen


if BINARIES:
    installed = depends_closure(set(r_pkgs) | BASE)
    ldcache = {}
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            ldcache.setdefault(m.group(1), m.group(3))
    needed = {}  # soname -> the binaries that need it
    for b in BINARIES:
        out = subprocess.run(["readelf", "-d", b], capture_output=True, text=True).stdout
        for so in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out):
            needed.setdefault(so, []).append(os.path.basename(b))
    # Which package owns each library: one dpkg -S for all the candidate paths
    # (the path ldconfig gives, its real file, and the /usr-merged twin).
    cands = {}
    for so in needed:
        path = ldcache.get(so)
        if path:
            twin = path[4:] if path.startswith("/usr/") else "/usr" + path
            cands[so] = [os.path.realpath(path), path, twin]
    owner = {}
    r = subprocess.run(["dpkg", "-S"] + sorted({p for c in cands.values() for p in c}),
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    for so, users in sorted(needed.items()):
        who = "/".join(sorted(set(users)))
        if so not in cands:
            check(False, "%s: cannot resolve %s" % (who, so))
            continue
        pkg = next((owner[p] for p in cands[so] if p in owner), None)
        if pkg and SANITIZERS.match(pkg):
            continue
        check(pkg is not None and pkg in installed,
              "%s needs %s (package %s): installed by the runtime stage" % (who, so, pkg))

# Non-root user in the final stage.
users = words(run, "USER")
check(len(users) > 0, "the runtime stage sets USER")
if users:
    u = users[-1].split(":")[0]
    check(u not in ("root", "0") and u != "", "the final USER is not root (got %s)" % users[-1])
    check(re.fullmatch(r"\d+", u) is not None,
          "the final USER is numeric (Kubernetes runAsNonRoot can verify it)")
    check(any(u in a and "useradd" in a for a in words(run, "RUN")), "user %s is created" % u)

# COPY --from only of the built binaries; every other COPY of files meant for the image.
allowed_bins = {"/out/trellis-scheduler", "/out/trellis-worker", "/out/trellis"}
copied_bins = set()
for no, w, a in run["instrs"]:
    if w not in ("COPY", "ADD"):
        continue
    check(w == "COPY", "line %d: COPY, not ADD" % no)
    flags, rest = flags_and_rest(a)
    srcs = rest.split()[:-1]
    if "from" in flags:
        check(flags["from"] == "build", "line %d: COPY --from=build only" % no)
        bad = [s for s in srcs if s not in allowed_bins]
        check(not bad, "line %d: COPY --from copies the built binaries only (also %s)" % (no, bad))
        copied_bins |= set(srcs)
    else:
        for s in srcs:
            check(s.startswith("deploy/") and os.path.isfile(os.path.join(SRC, s)),
                  "line %d: %s is a file under deploy/" % (no, s))
check(copied_bins == allowed_bins, "the runtime stage gets all three binaries (got %s)" % sorted(copied_bins))

# HEALTHCHECK, entry point, ports, labels.
hc = words(run, "HEALTHCHECK")
check(len(hc) == 1, "one HEALTHCHECK in the runtime stage")
if hc:
    flags, rest = flags_and_rest(hc[0])
    check(rest.startswith("CMD"), "HEALTHCHECK runs a command")
    check(all(k in flags for k in ("interval", "timeout", "retries")), "HEALTHCHECK sets interval, timeout, retries")
    m = re.search(r"CMD\s+(\[.*\])", rest)
    script = json.loads(m.group(1))[0] if m else ""
    check(script == "/usr/local/bin/trellis-healthcheck", "HEALTHCHECK runs trellis-healthcheck")
ep = words(run, "ENTRYPOINT")
check(ep and json.loads(ep[-1])[0] == "/usr/bin/tini", "ENTRYPOINT is tini (exec form)")
check(any(set(a.split()) >= {"8420", "8421"} for a in words(run, "EXPOSE")), "EXPOSE 8420 8421")
check(any(a.startswith("/var/lib/trellis") for a in words(run, "WORKDIR")), "WORKDIR /var/lib/trellis")
labels = " ".join(words(run, "LABEL"))
for k in ("title", "version", "revision", "created", "description"):
    check("org.opencontainers.image.%s=" % k in labels, "OCI label org.opencontainers.image.%s" % k)
check('org.opencontainers.image.version="${TRELLIS_VERSION}"' in labels, "the version label is the build arg")

# The build context leaves the build trees and .git out.
with open(os.path.join(SRC, "deploy/Dockerfile.dockerignore")) as f:
    ign = f.read().split()
for p in (".git", "build", "build-*"):
    check(p in ign, "deploy/Dockerfile.dockerignore excludes %s" % p)

print("%d passed, %d failed" % (checks - len(failures), len(failures)))
sys.exit(1 if failures else 0)
