#!/usr/bin/env bash
# A run's params are bounded at submit (--max-params-keys, 10,000 keys and
# elements by default; --max-params-bytes, 1 MiB as JSON): beyond either the
# answer is 400 invalid_params, at once, and the loop is not stalled (once
# 1,000,000 keys took it 5.5 s and 1,000,001 were accepted and then failed).
# Decoding 1 MB of params per task holds a worker's loop a while under the
# sanitizers on a busy machine: a longer heartbeat than the default 200 ms.
HB_MS=1000
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
if "$SCHED_BIN" --max-params-keys 1000001 --help >/dev/null 2>&1; then
  fail "--max-params-keys above what a worker decodes was taken"
fi
start_scheduler
start_worker a --slots 2
wait_workers 1

# post_params KIND N: posts diamond.lua with generated params, prints "CODE ERRORCODE"
post_params() {
  "$PY" - "$P/diamond.lua" "$1" "$2" "$API" <<'PYEOF'
import json, sys, urllib.request, urllib.error
src, kind, n, api = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
# Params are checked against the declared ones (docs/api.md): declare these.
src = src.replace("params = { x = 1 }", 'params = { x = 1, m = {}, list = {}, blob = "" }')
if kind == "keys":
    params = {"x": 2, "m": {"k%d" % i: i for i in range(n - 2)}}
elif kind == "nested":
    params = {"x": 2, "list": [[i] for i in range((n - 2) // 2)]}
else:
    params = {"x": 2, "blob": "y" * n}
body = json.dumps({"source": src, "name": "diamond.lua", "params": params}).encode()
req = urllib.request.Request(api + "/v1/runs", data=body, method="POST")
try:
    r = urllib.request.urlopen(req, timeout=60)
    print(r.status, json.load(r)["run_id"])
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["error"]["code"])
PYEOF
}

out=$(post_params keys 10000)
assert_eq "${out%% *}" 201 "10,000 keys are taken"
assert_eq "$(wait_run "${out#* }" | json_get 'j["output"]["d"]')" 9 "a run with 10,000 params keys runs"
assert_eq "$(post_params keys 10001)" "400 invalid_params" "10,001 keys are refused"
assert_eq "$(post_params nested 10002)" "400 invalid_params" "nested elements count too"
assert_eq "$(post_params blob 1000000 | cut -d' ' -f1)" 201 "a 1,000,000-byte string is taken"
assert_eq "$(post_params blob 1048576)" "400 invalid_params" "params over 1 MiB are refused"

# 120 tasks that each carry 1,000,000 bytes of params: more TASK bytes than
# one turn sends (64 MiB); the rest goes in the next turns.
"$PY" - "$TMP/wide.lua" <<'PYEOF'
import sys
tasks = ",\n".join('  trellis.task { name = "t%d", run = function(ctx) return #ctx.params.blob end }' % i for i in range(120))
open(sys.argv[1], "w").write('local trellis = require "trellis"\nreturn trellis.pipeline { name = "wide", version = "1", tasks = {\n' + tasks + "\n} }\n")
PYEOF
id=$("$PY" - "$TMP/wide.lua" "$API" <<'PYEOF'
import json, sys, urllib.request
body = json.dumps({"source": open(sys.argv[1]).read(), "name": "wide.lua",
                   "params": {"blob": "y" * 1000000}}).encode()
print(json.load(urllib.request.urlopen(urllib.request.Request(sys.argv[2] + "/v1/runs", data=body), timeout=60))["run_id"])
PYEOF
)
assert_eq "$(wait_run "$id" 120 | json_get 'j["output"]["t119"]')" 1000000 "120 tasks with 1 MB params each run"

# 1,000,001 keys: refused before the JSON is parsed; health probes go on.
before=$(wc -l <"$TMP/scheduler.log")
post_params keys 1000001 >"$TMP/big.out" &
big=$!
for _ in 1 2 3; do
  assert_eq "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$API/healthz")" 200 "healthz during a huge submit"
  sleep 0.2
done
wait "$big"
assert_eq "$(cat "$TMP/big.out")" "400 invalid_params" "1,000,001 keys are refused"
id=$(submit "$P/diamond.lua" '{"x": 2}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 9 "ordinary runs go on"
if tail -n +"$((before + 1))" "$TMP/scheduler.log" | grep -q "worker gone"; then
  fail "a worker was dropped during the huge submit"
fi
ok "no worker was dropped during the huge submit"
echo "1 passed, 0 failed"
