#!/usr/bin/env bash
# The API's connection cap cannot be used to starve health probes: 1,100
# connections that send one byte each (no token, no whole request), a
# connection that trickles its head, and 1,000 long-polls, and /healthz still
# answers at once; the trickler is closed at the request deadline (10 s).
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
secret="t-$(date +%s%N)"
echo "$secret" >"$TMP/tokens"
start_scheduler --token-file "$TMP/tokens"
start_worker a --slots 1
wait_for 20 grep -q "worker joined" "$TMP/scheduler.log" || fail "the worker did not join"
healthz() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$API/healthz"; }

"$PY" - "$API_PORT" "$API" "$secret" "$P" <<'PYEOF' || fail "flood test failed"
import json, socket, subprocess, sys, time
port, api, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def healthz():
    t = time.time()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                          api + "/healthz"], capture_output=True, text=True).stdout
    return out, time.time() - t

def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s

# 1. 1,100 connections, one byte each.
conns = []
for i in range(1100):
    s = connect()
    s.sendall(b"G")
    conns.append(s)
time.sleep(0.5)
for _ in range(3):
    code, took = healthz()
    assert code == "200", "healthz under 1,100 one-byte connections: %s" % code
print("ok - /healthz answers with 1,100 one-byte connections open (%.2f s)" % took)

# 2. A trickler: a head that never ends, one byte every 0.5 s.
t = connect()
t.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
start, closed = time.time(), False
while time.time() - start < 30:
    try:
        t.sendall(b"a")
        t.settimeout(0.5)
        if t.recv(1) == b"":
            closed = True
            break
    except socket.timeout:
        continue
    except (BrokenPipeError, ConnectionResetError):
        closed = True
        break
took = time.time() - start
assert closed and took < 25, "the trickler was not closed (%.1f s)" % took
print("ok - a connection trickling its head is closed after %.1f s" % took)
for s in conns:
    s.close()
t.close()
PYEOF

# 3. Long-polls cannot take every connection.
body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read(), "name": "sleepers.lua", "params": {"n": 1, "s": 60}}))' "$P/sleepers.lua")
id=$(curl -s -H "Authorization: Bearer $secret" --data-binary "$body" "$API/v1/runs" | json_get 'j["run_id"]')
"$PY" - "$API_PORT" "$API" "$secret" "$id" <<'PYEOF' || fail "long-poll test failed"
import socket, subprocess, sys, time
port, api, token, run = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
req = ("GET /v1/runs/%s?wait=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (run, token)).encode()
# Past the cap, new connections close the oldest idle ones: some of these
# may be reset, as a client would see it.
conns = []
for i in range(1100):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        conns.append(s)
    except OSError:
        pass
time.sleep(1)
answered = 0
for s in conns:
    s.setblocking(False)
    try:
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            answered += 1
    except (BlockingIOError, OSError):
        pass
t = time.time()
code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                       api + "/healthz"], capture_output=True, text=True).stdout
assert code == "200", "healthz under 1,100 long-polls: %s" % code
assert answered >= 32, "long-polls beyond the reserve were not answered at once: %d" % answered
print("ok - /healthz answers with 1,100 long-polls asked (%d answered at once, %.2f s)" % (answered, time.time() - t))
for s in conns:
    s.close()
PYEOF
assert_eq "$(healthz)" 200 "the scheduler is fine afterwards"
assert_eq "$(api_status -X POST -H "Authorization: Bearer $secret" "$API/v1/runs/$id/cancel")" 200 "cancel the long run"
echo "1 passed, 0 failed"
