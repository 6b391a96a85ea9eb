#!/usr/bin/env bash
# With etcd, triggers follow a watch of the feedback statistics, whoever wrote
# them (docs/feedback.md, "Evaluation"): statistics put straight into etcd
# (standing in for another writer) make the leading scheduler evaluate the
# pipeline's feedback trigger and fire it, once; an older value seen again
# does not fire it twice; a restarted scheduler (a new leader) reads the
# state and does not fire what was fired.
export TR_E2E_STATE=etcd
source "$(dirname "$0")/cluster.sh"
command -v curl >/dev/null || fail "curl not found"

start_scheduler
start_worker a --slots 2
wait_workers 1

cat >"$TMP/watched.lua" <<'LUA'
local trellis = require "trellis"
return trellis.pipeline {
  name = "e2e-watch", version = "1",
  tasks = { trellis.task { name = "t", run = function() return 1 end } },
  triggers = {
    trellis.trigger { name = "worse", on = "feedback",
      when = function(stats) return stats.feedback.window.count >= 2
                                    and stats.feedback.window.negative_rate > 0.5 end,
      run = "e2e-retrain", params = { model = "m" } },
  },
}
LUA
register "$SRC/tests/e2e/pipelines/trg_target.lua"
register "$TMP/watched.lua"
firings() { api_get /v1/triggers/e2e-watch/worse/firings | json_get 'len(j["firings"])'; }
assert_eq "$(firings)" 0 "registered, not fired"

# put_stats COUNT NEGATIVE: the statistics row of e2e-watch written straight
# into etcd, in the state's encoding ([1, grp, sub, ord, json] as msgpack,
# docs/state.md), through etcd's JSON gateway.
put_stats() {
  "$PY" - "$ETCD_EP" "$ETCD_PREFIX/feedback_stats/e2e-watch" "$1" "$2" <<'PYEOF'
import base64, json, struct, sys, time, urllib.request
ep, key, count, neg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
now = time.time()
start = int(now // 60) * 60
buckets = [[0, 0, 0, 0] for _ in range(60)]
buckets[(start // 60) % 60] = [start, count, count - 2 * neg, neg]
rec = {"pipeline": "e2e-watch", "count": count, "sum": count - 2 * neg, "negative": neg,
       "labels_queued": 0, "labels_labelled": 0, "bucket_seconds": 60, "updated_at": now,
       "buckets": buckets}
def s(b):
    b = b.encode()
    if len(b) < 32: return bytes([0xa0 | len(b)]) + b
    if len(b) < 256: return b"\xd9" + bytes([len(b)]) + b
    if len(b) < 65536: return b"\xda" + struct.pack(">H", len(b)) + b
    return b"\xdb" + struct.pack(">I", len(b)) + b
val = b"\x95\x01" + s("e2e-watch") + b"\xc0" + b"\xcb" + struct.pack(">d", now) + s(json.dumps(rec))
body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                   "value": base64.b64encode(val).decode()}).encode()
urllib.request.urlopen(urllib.request.Request("http://%s/v3/kv/put" % ep, data=body), timeout=10)
PYEOF
}

put_stats 1 1
sleep 1
assert_eq "$(api_get /v1/pipelines/e2e-watch/stats | json_get 'j["feedback"]["count"]')" 1 \
  "the leader took the statistics written into etcd by another writer"
assert_eq "$(firings)" 0 "one rating does not cross"

put_stats 3 3
wait_for 60 bash -c "[ \"\$(curl -s $API/v1/triggers/e2e-watch/worse/firings | $PY -c 'import json,sys; print(len(json.load(sys.stdin)[\"firings\"]))')\" = 1 ]" \
  || fail "the statistics written into etcd did not fire the trigger: $(api_get /v1/triggers?pipeline=e2e-watch)"
ok "statistics written straight into etcd fired the trigger"
f=$(api_get /v1/triggers/e2e-watch/worse/firings)
assert_eq "$(echo "$f" | json_get 'j["firings"][0]["stats"]["feedback"]["count"]')" 3 \
  "the firing records the statistics from etcd"
run=$(echo "$f" | json_get 'j["firings"][0]["run_id"]')
out=$(wait_run "$run" 120)
assert_eq "$(echo "$out" | json_get '[j["state"], j["output"]["train"]["by"]]')" '["succeeded", "worse"]' \
  "the run it started"

# Another change while `when` stays true is no new crossing: nothing more fires.
put_stats 2 2
sleep 2
assert_eq "$(firings)" 1 "a change without a new crossing does not fire again"

# A new leader (the scheduler restarted) re-evaluates everything: the crossing
# was fired and is durable, so it is not fired again.
kill -9 "$SCHED_PID"
wait "$SCHED_PID" 2>/dev/null || true
start_scheduler
wait_for 60 bash -c "curl -sf $API/readyz" || fail "the restarted scheduler does not lead"
sleep 2
assert_eq "$(firings)" 1 "the new leader does not fire the same crossing again"
put_stats 5 5
sleep 2
assert_eq "$(firings)" 1 "still true: no new crossing, no firing"
ok "triggers driven by the watch of the statistics in etcd"
