#!/usr/bin/env bash
# Run control (docs/api.md "Run control"): Idempotency-Key across a scheduler
# restart, params checked at submit, a pipeline version's source, retry that
# reuses what succeeded (a side-effect file shows what ran again), DELETE and
# the --retention purge. Run on SQLite and (e2e-etcd.test_runctl) on etcd.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
D="$TMP/side"; mkdir -p "$D"
start_scheduler
start_worker a --slots 4
wait_workers 1

# post BODY [KEY]: POST /v1/runs, prints "CODE BODY"
post() {
  local hdr=()
  [ -n "${2:-}" ] && hdr=(-H "Idempotency-Key: $2")
  curl -s -o "$TMP/ans" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    "${hdr[@]}" --data-binary "$1" "$API/v1/runs"
  echo " $(cat "$TMP/ans")"
}
body() { # PARAMS_JSON
  "$PY" -c 'import json,sys
print(json.dumps({"source": open(sys.argv[1]).read(), "name": "rerun.lua", "params": json.loads(sys.argv[2])}))' "$P/rerun.lua" "$1"
}

# ---- params checked at submit -------------------------------------------
code_of() { echo "$1" | cut -d' ' -f1; }
err_of() { echo "$1" | cut -d' ' -f2- | json_get 'j["error"]["code"] + ": " + j["error"]["message"]'; }
out=$(post "$(body '{"dir": "'"$D"'", "nn": 1}')")
assert_eq "$(code_of "$out")" 400 "an unknown parameter is refused"
assert_contains "$(err_of "$out")" "invalid_params: unknown parameter 'nn'" "the answer names it"
out=$(post "$(body '{"dir": "'"$D"'", "n": "5"}')")
assert_contains "$(err_of "$out")" "invalid_params: parameter 'n' must be a number" "a string for a number is refused"
out=$(post "$(body '{"dir": "'"$D"'", "strict": 1}')")
assert_contains "$(err_of "$out")" "'strict' must be a boolean" "a number for a boolean is refused"
out=$(post "$(body '{"dir": "'"$D"'", "label": {"a": 1}}')")
assert_contains "$(err_of "$out")" "'label' must be a string like its default, not a table" "a table for a string is refused"
out=$(post "$(body '{"dir": "'"$D"'", "n": null}')")
assert_eq "$(code_of "$out")" 400 "null for a number is refused"

# ---- retry reuses what succeeded -----------------------------------------
touch "$D/fail-square3"
out=$(post "$(body '{"dir": "'"$D"'", "n": 5.0}')")
assert_eq "$(code_of "$out")" 201 "a float for an integer default is a number: taken"
id1=$(echo "$out" | cut -d' ' -f2- | json_get 'j["run_id"]')
assert_eq "$(wait_run "$id1" | json_get 'j["state"]')" failed "the run with a broken element fails"
assert_eq "$(sort "$D/count" | tr '\n' ' ')" "root square1 square2 square3 square4 square5 " "first run: every instance ran once"
rm -f "$D/fail-square3"
: > "$D/count"
ans=$(curl -s -X POST "$API/v1/runs/$id1/retry")
id2=$(echo "$ans" | json_get 'j["run_id"]')
assert_eq "$(echo "$ans" | json_get 'j["retry_of"]')" "$id1" "the retry links to the original"
run2=$(wait_run "$id2")
assert_eq "$(echo "$run2" | json_get 'j["state"]')" succeeded "the retry succeeds"
assert_eq "$(echo "$run2" | json_get 'j["output"]["total"]')" 55 "with the whole output"
assert_eq "$(echo "$run2" | json_get 'j["retry_of"]')" "$id1" "GET shows retry_of"
assert_eq "$(sort "$D/count" | tr '\n' ' ')" "square3 total " "only the failed element and what it blocked ran again"
tasks=$(api_get "/v1/runs/$id2/tasks")
assert_eq "$(echo "$tasks" | json_get '[t["output"]["run"] for t in j["tasks"] if t["name"] == "square"]' | tr -d ' ')" \
  "[\"$id1\",\"$id1\",\"$id2\",\"$id1\",\"$id1\"]" "reused outputs are the original's"
assert_eq "$(echo "$tasks" | json_get 'sum(1 for t in j["tasks"] if t["cached"])')" 6 "reused instances show cached"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$API/v1/runs/$id2/retry")
assert_eq "$st" 409 "a succeeded run is not retried"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$API/v1/runs/r-nope/retry")
assert_eq "$st" 404 "retry of an unknown run: 404"
id3=$("$BUILD/cli/trellis" --api "$API" retry "$id1")
assert_eq "$(wait_run "$id3" | json_get 'j["retry_of"]')" "$id1" "trellis retry RUN"

# ---- idempotency keys ----------------------------------------------------
b=$(body '{"dir": "'"$D"'"}')
out=$(post "$b" key-1)
assert_eq "$(code_of "$out")" 201 "the first request with a key creates a run"
k1=$(echo "$out" | cut -d' ' -f2- | json_get 'j["run_id"]')
out=$(post "$b" key-1)
assert_eq "$(code_of "$out")" 200 "the same key again: 200"
assert_eq "$(echo "$out" | cut -d' ' -f2- | json_get 'j["run_id"]')" "$k1" "with the same run"
out=$(post "$(body '{"dir": "'"$D"'", "n": 2}')" key-1)
assert_eq "$(code_of "$out")" 422 "the same key with another body: 422"
assert_contains "$(err_of "$out")" "idempotency_conflict" "idempotency_conflict"
out=$(post "$(body '{"dir": "'"$D"'", "n": "x"}')" key-2)
assert_eq "$(code_of "$out")" 400 "a refused request with a key"
out=$(post "$b" key-2)
assert_eq "$(code_of "$out")" 201 "keeps no key: the same key then makes a run"
out=$(post "$b" "$(printf 'bad\001key')")
assert_eq "$(code_of "$out")" 400 "a key with a control character is refused"
wait_run "$k1" >/dev/null
kill -TERM "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
start_scheduler
wait_workers 1
out=$(post "$b" key-1)
assert_eq "$(code_of "$out") $(echo "$out" | cut -d' ' -f2- | json_get 'j["run_id"]')" "200 $k1" "after a restart the key still names its run"

# ---- source of a pipeline version ----------------------------------------
register "$P/rerun.lua"
src=$(curl -s "$API/v1/pipelines/e2e-rerun/versions/1/source")
assert_eq "$src" "$(cat "$P/rerun.lua")" "GET .../versions/1/source gives the file"
assert_eq "$(api_status "$API/v1/pipelines/e2e-rerun/versions/9/source")" 404 "an unknown version: 404"
assert_eq "$(api_status "$API/v1/pipelines/nope/versions/1/source")" 404 "an unknown pipeline: 404"

# ---- DELETE ---------------------------------------------------------------
del() { curl -s -o /dev/null -w '%{http_code}' -X DELETE "$API/v1/runs/$1"; }
assert_eq "$(del "$id1")" 200 "DELETE a finished run"
assert_eq "$(api_status "$API/v1/runs/$id1")" 404 "it is gone"
assert_eq "$(api_get "/v1/runs/$id1/tasks" | json_get 'j["error"]["code"]')" not_found "its tasks are gone"
assert_eq "$(del "$id1")" 404 "DELETE again: 404"
slow=$(submit "$P/sleepers.lua" '{"n": 2, "s": 30}')
assert_eq "$(del "$slow")" 409 "DELETE of a running run: 409"
curl -s -X POST "$API/v1/runs/$slow/cancel" >/dev/null
assert_eq "$(wait_run "$slow" | json_get 'j["state"]')" cancelled "cancelled"
assert_eq "$(del "$slow")" 200 "then deleted" 

# ---- retention -------------------------------------------------------------
kill -TERM "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
# 0.00003 days = 2.6 s
start_scheduler --retention 0.00003
wait_workers 1
n_before=$(api_get "/v1/runs?limit=1000" | json_get 'len(j["runs"])')
[ "$n_before" -ge 3 ] || fail "expected some finished runs before the purge, got $n_before"
wait_for 30 bash -c "[ \"\$(curl -s '$API/v1/runs?limit=1000' | $PY -c 'import json,sys; print(len([r for r in json.load(sys.stdin)[\"runs\"] if r[\"state\"] != \"running\" and r[\"state\"] != \"queued\"]))')\" = 0 ]" \
  || fail "the finished runs were not purged"
ok "--retention purged the $n_before old runs"
fresh=$(submit "$P/rerun.lua" '{"dir": "'"$D"'"}')
assert_eq "$(wait_run "$fresh" | json_get 'j["state"]')" succeeded "dispatch goes on while purging"
