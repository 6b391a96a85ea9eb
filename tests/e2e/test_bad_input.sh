#!/usr/bin/env bash
# Bad input gets a clear error and loses nothing: bad Lua, graph errors,
# malformed JSON, unknown ids, runaway pipeline files, and garbage on the
# worker port. The scheduler keeps serving throughout.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
start_scheduler
start_worker a --slots 4
wait_workers 1

post_source() { # lua-text -> response body; its status in $TMP/status
  local body
  body=$("$PY" -c 'import json,sys; print(json.dumps({"source": sys.argv[1], "name": "bad.lua"}))' "$1")
  curl -s -o "$TMP/resp" -w '%{http_code}' -X POST --data-binary "$body" "$API/v1/runs" >"$TMP/status"
  cat "$TMP/resp"
}
last_status() { cat "$TMP/status"; }
hdr='local trellis = require "trellis"
'

r=$(post_source "${hdr}return trellis.pipeline { name = \"x\", tasks = { trellis.task { name = \"a\" run = 1 } } }")
assert_eq "$(last_status)" 400 "syntax error is a 400"
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" lua_error "syntax error code"
assert_contains "$(echo "$r" | json_get 'j["error"]["message"]')" "bad.lua:2:" "syntax error names file and line"

r=$(post_source "${hdr}return trellis.pipeline { name = \"x\", tasks = {
  trellis.task { name = \"a\", after = { \"c\" }, run = function() end },
  trellis.task { name = \"b\", after = { \"a\" }, run = function() end },
  trellis.task { name = \"c\", after = { \"b\" }, run = function() end } } }")
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" cycle "cycle is refused"
msg=$(echo "$r" | json_get 'j["error"]["message"]')
for t in a b c; do assert_contains "$msg" "$t" "cycle message names task $t"; done

r=$(post_source "${hdr}return trellis.pipeline { name = \"x\", tasks = {
  trellis.task { name = \"a\", after = { \"nope\" }, run = function() end } } }")
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" unknown_dependency "unknown dependency is refused"
assert_contains "$(echo "$r" | json_get 'j["error"]["message"]')" "nope" "and named"

r=$(post_source "${hdr}return trellis.pipeline { name = \"x\", tasks = {
  trellis.task { name = \"a\", run = function() end }, trellis.task { name = \"a\", run = function() end } } }")
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" duplicate_task "duplicate name is refused"

r=$(post_source "${hdr}return trellis.pipeline { name = \"x\", tasks = { trellis.task { name = \"a\" } } }")
assert_eq "$(last_status)" 400 "task without run is a 400"
assert_contains "$(echo "$r" | json_get 'j["error"]["message"]')" "run" "message says run is missing"

r=$(post_source "$(cat "$P/forever.lua")")
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" limit_exceeded "an endless loop is stopped by the instruction limit"
r=$(post_source "${hdr}local t = {} for i = 1, 1e10 do t[i] = i end")
assert_eq "$(echo "$r" | json_get 'j["error"]["code"]')" limit_exceeded "a memory bomb is stopped by the memory limit"

code=$(api_status -X POST --data-binary '{"source": ' "$API/v1/runs")
assert_eq "$code" 400 "malformed JSON is a 400"
assert_eq "$(curl -s -X POST --data-binary '{"source": ' "$API/v1/runs" | json_get 'j["error"]["code"]')" malformed_json "with code malformed_json"
assert_eq "$(curl -s -X POST --data-binary '[1,2]' "$API/v1/runs" | json_get 'j["error"]["code"]')" malformed_json "a non-object body is refused"
assert_eq "$(curl -s -X POST --data-binary '{"params": 3}' "$API/v1/runs" | json_get 'j["error"]["code"]')" invalid_request "a request without source is refused"
assert_eq "$(api_status "$API/v1/runs/r-doesnotexist")" 404 "unknown run id is a 404"
assert_eq "$(api_get /v1/runs/r-doesnotexist | json_get 'j["error"]["code"]')" not_found "with code not_found"
assert_eq "$(api_status "$API/v1/runs/r-doesnotexist/tasks")" 404 "unknown run tasks is a 404"
assert_eq "$(api_status "$API/v1/nothing")" 404 "unknown route is a 404"
assert_eq "$(api_status -X DELETE "$API/v1/runs")" 405 "wrong method is a 405"
assert_eq "$(curl -s -X POST --data-binary '{"pipeline": "never-registered"}' "$API/v1/runs" | json_get 'j["error"]["code"]')" not_found "unknown pipeline name is a 404"

"$BUILD/tests/zmq_garbage" "tcp://127.0.0.1:$WPORT" >/dev/null || fail "garbage sender failed"
wait_for 10 bash -c "curl -s $API/metrics | grep -q 'trellis_dropped_frames_total{reason=\"bad_msgpack\"} [1-9]'" \
  || fail "garbage frames were not counted"
metric() { api_get /metrics | awk -v k="$1" '$1 == k { print $2 }'; }
at_least() { # metric-name minimum what
  local v; v=$(metric "$1")
  [ -n "$v" ] && [ "$v" -ge "$2" ] || fail "$3: $1 is '$v', expected at least $2"
  ok "$3 ($1 = $v)"
}
at_least 'trellis_dropped_frames_total{reason="too_large"}' 1 "the 4-billion-element frame is refused by the bounds check"
at_least 'trellis_dropped_frames_total{reason="bad_version"}' 1 "a wrong protocol version is counted"
at_least 'trellis_dropped_frames_total{reason="unknown_type"}' 1 "an unknown message type is counted"
at_least 'trellis_dropped_frames_total{reason="bad_frames"}' 1 "a message with too many parts is counted"

id=$(submit "$P/diamond.lua" '{"x": 1}')
assert_eq "$(wait_run "$id" | json_get 'j["output"]["d"]')" 6 "the scheduler still runs pipelines after all that"
# Query numbers are strictly decimal.
for q in "wait=0x10" "wait=1e3" "wait=%2B1" "wait=%201" "wait=inf" "wait=-1" "wait=" \
         "limit=0x10" "limit=1e2" "limit=%2B5" "limit=0" "limit=99999999999"; do
  case "$q" in wait*) url="$API/v1/runs/$id?$q" ;; *) url="$API/v1/runs?$q" ;; esac
  assert_eq "$(api_status "$url")" 400 "$q is refused"
done
assert_eq "$(api_status "$API/v1/runs/$id?wait=0.5")" 200 "wait=0.5 is taken"
assert_eq "$(api_status "$API/v1/runs?limit=5000")" 200 "limit=5000 is taken (as 1000)"
kill -0 "$SCHED_PID" || fail "scheduler died"
echo "1 passed, 0 failed"
