#!/usr/bin/env bash
# GPU pools: --gpus auto reads a (fake) NVML; HELLO, heartbeats, /v1/workers
# and /metrics carry each device; tasks with gpus = N get N devices of one
# worker and no two running tasks share one; a task asking for more than any
# worker of its pool has is refused at submit; one that cannot be placed now
# waits in the scheduler (and says for what) without holding back GPU-less
# tasks of its pool; a missing library or a failing nvmlInit means 0 GPUs.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
FAKE="$BUILD/tests/libfake_nvml.so"
[ -f "$FAKE" ] || fail "the fake NVML library is not built ($FAKE)"
start_scheduler
TRELLIS_NVML_LIB="$FAKE" FAKE_NVML_COUNT=2 start_worker g1 --pool gpu --gpus auto --slots 4
TRELLIS_NVML_LIB="$FAKE" FAKE_NVML_COUNT=2 start_worker g2 --pool gpu --gpus auto --slots 4
wait_workers 2

# ------------------------------------------------------------ what workers report
w=$(api_get /v1/workers)
assert_eq "$(echo "$w" | json_get '[x["resources"]["gpus"] for x in j["workers"] if x["id"]=="w-g1"][0]')" 2 "auto finds the 2 fake GPUs"
assert_eq "$(echo "$w" | json_get '[[g["index"], g["name"], g["mem_total_mb"]] for g in [x for x in j["workers"] if x["id"]=="w-g1"][0]["gpus"]]')" \
  '[[0, "Fake GPU 0", 16384], [1, "Fake GPU 1", 16384]]' "/v1/workers lists index, name and memory"
wait_for 10 bash -c "curl -s $API/v1/workers | grep -q '\"util\": *20'" || fail "no utilisation from heartbeats"
assert_eq "$(api_get /v1/workers | json_get '[g["mem_used_mb"] for g in [x for x in j["workers"] if x["id"]=="w-g2"][0]["gpus"]]')" '[1024, 2048]' "heartbeats carry used memory"
m=$(api_get /metrics)
assert_contains "$m" 'trellis_gpu_memory_total_bytes{worker="w-g1",pool="gpu",gpu="1",name="Fake GPU 1"} 17179869184' "/metrics exports GPU memory"
assert_contains "$m" 'trellis_gpu_utilization_ratio{worker="w-g2",pool="gpu",gpu="0",name="Fake GPU 0"} 0.1' "/metrics exports utilisation"
assert_contains "$(cat "$TMP/worker-g1.log")" "GPU 1 'Fake GPU 1'" "the worker logs what NVML found"

# ------------------------------------------------------------ placement, no sharing
id=$(submit "$P/gpu_place.lua" '{"n1": 8, "n2": 4, "s": 0.4}')
out=$(wait_run "$id" 90)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the GPU run succeeds"
api_get "/v1/runs/$id/tasks" >"$TMP/tasks.json"
"$PY" - "$TMP/tasks.json" <<'PY' || fail "GPU placement check failed"
import json, sys
tasks = [t for t in json.load(open(sys.argv[1]))["tasks"] if t["name"] in ("one", "two")]
assert len(tasks) == 12, len(tasks)
spans = {}
for t in tasks:
    o = t["output"]
    want = 1 if t["name"] == "one" else 2
    assert len(o["gpus"]) == want, (t["name"], o["gpus"])
    assert len(set(o["gpus"])) == want and all(g in (0, 1) for g in o["gpus"]), o["gpus"]
    for g in o["gpus"]:
        spans.setdefault((t["worker"], g), []).append((o["start"], o["stop"]))
overlaps = 0
for key, s in spans.items():
    s.sort()
    for a, b in zip(s, s[1:]):
        if b[0] < a[1] - 1e-3:
            overlaps += 1
            print("overlap on", key, a, b)
assert overlaps == 0
print("ok - 12 GPU tasks on %d devices, no device shared while held" % len(spans))
PY

# ------------------------------------------------------------ refused at submit
cat >"$TMP/three.lua" <<'LUA'
local trellis = require "trellis"
return trellis.pipeline { name = "three", tasks = {
  trellis.task { name = "big", pool = "gpu", gpus = 3, run = function() return 1 end } } }
LUA
body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read()}))' "$TMP/three.lua")
resp=$(curl -s -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary "$body" "$API/v1/runs")
assert_eq "$(echo "$resp" | tail -1)" 400 "gpus = 3 on 2-GPU workers is refused"
assert_contains "$resp" "task 'big' asks for 3 GPUs, but no worker of pool 'gpu' has that many" "the error says why"

# A pool nobody serves yet: accepted, and the task says what it waits for.
sed 's/pool = "gpu"/pool = "gpu-big"/' "$TMP/three.lua" >"$TMP/three-big.lua"
big=$(submit "$TMP/three-big.lua")
wait_for 10 bash -c "curl -s $API/v1/runs/$big/tasks | grep -q 'none connected'" || fail "no waiting note"
ok "a task for a pool without workers waits: $(api_get /v1/runs/$big/tasks | json_get 'j["tasks"][0]["waiting"]')"
api_post "/v1/runs/$big/cancel" '{}' >/dev/null

# ------------------------------------------------------------ waits when busy
hold=$(submit "$P/gpu_place.lua" '{"n1": 0, "n2": 3, "s": 4}')
wait_for 20 bash -c "curl -s $API/v1/runs/$hold/tasks | grep -q 'free GPUs'" || fail "the third two-GPU task does not wait"
st=$(api_get "/v1/runs/$hold/tasks" | json_get '[t["state"] for t in j["tasks"] if t["name"]=="two"]')
assert_eq "$(echo "$st" | "$PY" -c 'import json,sys; print(sorted(json.load(sys.stdin)))')" "['ready', 'running', 'running']" "two run, the third waits in the scheduler"
busy=$(api_get /v1/workers | json_get 'sum(x["busy"] for x in j["workers"])')
assert_eq "$busy" 2 "the waiting task holds no worker slot"
light=$(submit "$P/gpu_cpu.lua")
out=$(wait_run "$light" 3)
assert_eq "$(echo "$out" | json_get 'j["output"]["light"]')" 0 "a GPU-less task of the pool passes the waiting one (ctx.gpus is empty)"
assert_eq "$(api_get "/v1/runs/$hold" | json_get 'j["state"]')" running "while the GPU run still waits"
out=$(wait_run "$hold" 60)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "the waiting task ran once devices were free"
assert_eq "$(api_get /metrics | grep -c '^trellis_gpu_assigned.* 1$' || true)" 0 "every device is free again"

# ------------------------------------------------------------ no driver
TRELLIS_NVML_LIB="$FAKE" FAKE_NVML_INIT_FAIL=1 start_worker nodrv --pool gpu --gpus auto
TRELLIS_NVML_LIB="$TMP/no-such-libnvidia-ml.so.1" start_worker nolib --pool gpu --gpus auto
wait_workers 4
assert_eq "$(api_get /v1/workers | json_get '[x["resources"]["gpus"] for x in j["workers"] if x["id"] in ("w-nodrv", "w-nolib")]')" '[0, 0]' "without a driver or a library: 0 GPUs"
assert_contains "$(cat "$TMP/worker-nodrv.log")" "nvmlInit failed" "a failing nvmlInit is logged"
assert_contains "$(cat "$TMP/worker-nodrv.log")" "Driver Not Loaded" "with NVML's reason"
assert_contains "$(cat "$TMP/worker-nolib.log")" "cannot load NVML" "a missing library is logged"
echo "1 passed, 0 failed"
