#!/usr/bin/env bash
# Live events end to end (docs/api.md "Events", "Webhooks"): the event stream
# of a small DAG, resuming with Last-Event-ID, bad ids, a slow client dropped
# with bounded memory, the stream cap, webhooks signed and retried, a webhook
# target that hangs, LLM token deltas relayed from a streaming provider, and
# the CLI's `run --wait` and `logs -f`. Assertions are on content and order,
# never on wall time.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
T="$SRC/tests/e2e/sse_tool.py"
CLI="$BUILD/cli/trellis"

# ---- a webhook receiver that fails each first try, and one that hangs --------
SECRET="wh-secret-$$-not-logged"
printf '%s\n' "$SECRET" >"$TMP/wh.secret"
"$PY" "$T" webhook "$TMP/wh.port" "$TMP/wh.log" "$SECRET" --fail-first &
PIDS+=("$!")
"$PY" "$T" webhook "$TMP/hang.port" "$TMP/hang.log" "$SECRET" --hang &
PIDS+=("$!")
export FAKE_LLM_KEY="k-$$"
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/wh.port" -a -s "$TMP/hang.port" -a -s "$TMP/fake.port" ||
  fail "helpers did not start"
WH="http://127.0.0.1:$(cat "$TMP/wh.port")/hook"
HANG="http://127.0.0.1:$(cat "$TMP/hang.port")/hook"
cat >"$TMP/providers.json" <<JSON
{"fake": {"kind": "openai", "base_url": "http://127.0.0.1:$(head -n1 "$TMP/fake.port")/v1",
          "api_key_env": "FAKE_LLM_KEY", "default": true}}
JSON

start_scheduler --max-sse 6 --sse-queue-bytes 65536 --webhook "$WH" --webhook "$HANG" \
  --webhook-secret-file "$TMP/wh.secret"
start_worker a --slots 8 --providers "$TMP/providers.json"
wait_workers 1

# events FILE EXPR: eval(EXPR) over the events read into FILE (e: the list, s: end line)
events() {
  "$PY" -c 'import json,sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
e = [l for l in lines if "event" in l]
s = [l for l in lines if "end" in l][-1]
v = eval(sys.argv[2])
print(json.dumps(v) if not isinstance(v, str) else v)' "$@"
}

# ---- the sequence of a small DAG ----------------------------------------------
id=$(submit "$P/events.lua" '{"n": 3, "s": 0.3, "m": 2}')
"$PY" "$T" read "$API/v1/runs/$id/events" >"$TMP/full.jsonl"
assert_eq "$(events "$TMP/full.jsonl" 's["status"], s["end"]')" '[200, "eof"]' "the stream ends by itself"
assert_eq "$(events "$TMP/full.jsonl" '[x["data"]["state"] for x in e if x["event"]=="run"][-1]')" \
  succeeded "its last run event is the final state"
assert_eq "$(events "$TMP/full.jsonl" 'e[-1]["event"]')" run "nothing follows the final run event"
assert_eq "$(events "$TMP/full.jsonl" '[x["data"]["state"] for x in e if x["event"]=="task" and x["data"]["name"]=="last"]')" \
  '["ready", "running", "succeeded"]' "a task's states in order"
assert_eq "$(events "$TMP/full.jsonl" \
  'max(i for i,x in enumerate(e) if x["event"]=="task" and x["data"]["name"]=="each" and x["data"]["state"]=="succeeded") < min(i for i,x in enumerate(e) if x["event"]=="task" and x["data"]["name"]=="last")')" \
  true "dependants start after their upstream tasks succeeded"
assert_eq "$(events "$TMP/full.jsonl" '[x["data"]["line"] for x in e if x["event"]=="log"]')" \
  '["line 1", "line 2", "line 3", "done with 2"]' "log lines as events"
assert_eq "$(events "$TMP/full.jsonl" 'all(int(a["id"]) <= int(b["id"]) for a,b in zip(e,e[1:]))')" \
  true "event ids never go down"
assert_eq "$(events "$TMP/full.jsonl" '[x["data"]["worker"] for x in e if x["event"]=="task" and x["data"]["state"]=="running"][0]')" \
  w-a "task events name the worker"

# ---- resume with Last-Event-ID: no loss, no repeat -----------------------------
id=$(submit "$P/events.lua" '{"n": 6, "s": 0.3, "m": 3}')
"$PY" "$T" read "$API/v1/runs/$id/events" >"$TMP/ref.jsonl" &
ref_pid=$!
wait_for 20 bash -c "grep -q '\"line 2\"' '$TMP/ref.jsonl'" || fail "no log line 2"
"$PY" "$T" read "$API/v1/runs/$id/events" --max 4 >"$TMP/part1.jsonl"
last=$(events "$TMP/part1.jsonl" 'e[-1]["id"]')
wait_for 20 bash -c "grep -q '\"line 5\"' '$TMP/ref.jsonl'" || fail "no log line 5"
"$PY" "$T" read "$API/v1/runs/$id/events" --last-id "$last" >"$TMP/part2.jsonl"
wait "$ref_pid"
assert_eq "$(events "$TMP/part2.jsonl" 'int(e[0]["id"]) == int(sys.argv[3]) + 1' "$last")" \
  true "the resumed stream starts right after the last id read"
"$PY" - "$TMP/ref.jsonl" "$TMP/part2.jsonl" "$last" <<'PYEOF' || fail "resumed events differ from the reference stream"
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1]) if '"event"' in l]
got = [json.loads(l) for l in open(sys.argv[2]) if '"event"' in l]
last = int(sys.argv[3])
want = [(x["id"], x["event"], x["data"]) for x in ref if int(x["id"]) > last]
have = [(x["id"], x["event"], x["data"]) for x in got]
assert want == have, (want[:3], have[:3])
assert len(set(x[0] for x in have)) == len(have), "an id came twice"
PYEOF
ok "resumed events are exactly the reference stream's after that id"
final=$(events "$TMP/part2.jsonl" 'e[-1]["id"]')
assert_eq "$(api_status -H "Last-Event-ID: $final" "$API/v1/runs/$id/events")" 204 \
  "a client that had the end gets 204 (EventSource stops reconnecting)"

# ---- bad input -------------------------------------------------------------------
body=$(curl -s -H 'Last-Event-ID: 12abc' "$API/v1/runs/$id/events")
assert_eq "$(echo "$body" | json_get 'j["error"]["code"]')" bad_last_event_id "garbage Last-Event-ID is 400 bad_last_event_id"
assert_eq "$(api_status -H 'Last-Event-ID: 99999999999999999999999' "$API/v1/runs/$id/events")" 400 "an id past 2^64 is 400"
assert_eq "$(api_status -H "Last-Event-ID: $((final + 5))" "$API/v1/runs/$id/events")" 400 "an id the run never had is 400"
assert_eq "$(api_status "$API/v1/runs/$id/events?last_event_id=-1")" 400 "garbage ?last_event_id= is 400"
assert_eq "$(api_status "$API/v1/runs/r-nope/events")" 404 "unknown run is 404"
assert_eq "$(api_status "$API/v1/events?state=bogus")" 400 "unknown state filter is 400"

# ---- a slow client is dropped, memory stays bounded, and it can resume -----------
rss() { awk '/VmRSS/ {print $2}' "/proc/$SCHED_PID/status"; }
rss0=$(rss)
rm -f "$TMP/go"
id=$(submit "$P/events.lua" '{"n": 1, "s": 1, "m": 4, "lines": 500, "big": 1000}')
"$PY" "$T" stall "$API/v1/runs/$id/events" --until "$TMP/go" >"$TMP/stall.json" &
stall_pid=$!
wait_run "$id" 120 >/dev/null
rss1=$(rss)
touch "$TMP/go"
wait "$stall_pid"
assert_eq "$(json_get 'j["error"]["code"]' <"$TMP/stall.json")" slow_client "the slow client is told why it is dropped"
resume=$(json_get 'j["error"]["last_event_id"]' <"$TMP/stall.json")
assert_eq "$resume" "$(json_get 'j["last_id"]' <"$TMP/stall.json")" "the error names the last event it got"
"$PY" "$T" read "$API/v1/runs/$id/events" --last-id "$resume" >"$TMP/resume.jsonl"
assert_eq "$(events "$TMP/resume.jsonl" 'int(e[0]["id"]) == int(sys.argv[3]) + 1 and e[-1]["data"]["state"] == "succeeded"' "$resume")" \
  true "it resumes where it was dropped, to the end"
# 2,000 log lines of 1 KB went by; the client is dropped once 1 MiB behind (half the
# run's log), and the scheduler buffers at most --sse-queue-bytes for it meanwhile.
[ $((rss1 - rss0)) -lt 65536 ] || fail "scheduler grew by $((rss1 - rss0)) KB with a stalled client"
ok "a stalled client costs bounded memory ($((rss1 - rss0)) KB)"
assert_contains "$(api_get /metrics)" "trellis_event_clients_dropped_total 1" "the drop is counted"

# ---- the stream cap --------------------------------------------------------------
id=$(submit "$P/sleepers.lua" '{"n": 1, "s": 30}')
out=$("$PY" "$T" hold "$API/v1/runs/$id/events" 6)
assert_eq "$(echo "$out" | json_get 'j["statuses"]')" '[200, 200, 200, 200, 200, 200]' "six streams within --max-sse 6"
assert_eq "$(echo "$out" | json_get 'j["extra"]')" 503 "the seventh is refused 503"
assert_contains "$(echo "$out" | json_get 'j["extra_body"]')" too_many_streams "with code too_many_streams"
assert_eq "$(echo "$out" | json_get 'j["after"]')" 200 "closed streams free their places"
api_post "/v1/runs/$id/cancel" '{}' >/dev/null

# ---- GET /v1/events: every run, filtered ------------------------------------------
"$PY" "$T" read "$API/v1/events?pipeline=e2e-diamond&state=succeeded" --max 1 --timeout 60 >"$TMP/all.jsonl" &
all_pid=$!
sleep 0.5
submit "$P/events.lua" '{"n": 1, "s": 0, "m": 1}' >/dev/null
did=$(submit "$P/diamond.lua")
wait "$all_pid"
assert_eq "$(events "$TMP/all.jsonl" '[e[0]["event"], e[0]["data"]["run"], e[0]["data"]["state"]]')" \
  "[\"run\", \"$did\", \"succeeded\"]" "GET /v1/events filters by pipeline and state"

# ---- webhooks: signed, retried after a 500; a hanging target blocks nothing --------
ids=()
for i in $(seq 1 12); do ids+=("$(submit "$P/diamond.lua")"); done
for i in "${ids[@]}"; do
  wait_run "$i" 30 | json_get 'j["state"]' | grep -qx succeeded || fail "run $i did not succeed"
done
ok "12 runs finish while one webhook target hangs"
retried() { # every run given has its second try in the log
  "$PY" -c 'import json,sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if all(any(r["run"] == i and r["n"] == 2 for r in rows) for i in sys.argv[2:]) else 1)' "$@"
}
wait_for 60 retried "$TMP/wh.log" "${ids[@]}" || fail "webhooks were not retried: $(tail -3 "$TMP/wh.log")"
"$PY" - "$TMP/wh.log" "${ids[@]}" <<'PYEOF' || fail "webhook deliveries are wrong"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for rid in sys.argv[2:]:
    mine = [r for r in rows if r["run"] == rid]
    assert [r["n"] for r in mine][:2] == [1, 2], (rid, mine)
    assert all(r["valid"] for r in mine), ("bad signature", rid)
    assert mine[-1]["state"] == "succeeded" and mine[-1]["event"] == "run.finished"
PYEOF
ok "each run's webhook came with a valid HMAC, and again after a 500"
if grep -q "$SECRET" "$TMP"/scheduler.log; then fail "the webhook secret is in the log"; fi
ok "the secret is never logged"

# ---- LLM token deltas relayed from a streaming provider ----------------------------
id=$(submit "$P/llm_chat.lua" '{"text": "alpha beta gamma delta", "model": "drip-150-ev", "stream": true}')
"$PY" "$T" read "$API/v1/runs/$id/events" >"$TMP/llm.jsonl"
# A client sees the tokens from when it connected on (they are not kept for later ones).
assert_eq "$(events "$TMP/llm.jsonl" 'len(d := "".join(x["data"]["delta"] for x in e if x["event"]=="llm")) >= 12 and "echo: alpha beta gamma delta".endswith(d)')" \
  true "the deltas add up to the answer"
assert_eq "$(events "$TMP/llm.jsonl" 'len([x for x in e if x["event"]=="llm"]) >= 3')" true "tokens come as several events"
assert_eq "$(events "$TMP/llm.jsonl" 'max(i for i,x in enumerate(e) if x["event"]=="llm") < [i for i,x in enumerate(e) if x["event"]=="task" and x["data"]["state"]=="succeeded"][0]')" \
  true "tokens arrive before the task ends"

# ---- the CLI ------------------------------------------------------------------------
export TRELLIS_API="$API"
out=$("$CLI" run --wait "$P/events.lua" -p n=3 -p s=0.2 2>"$TMP/wait.err") || fail "run --wait failed: $(cat "$TMP/wait.err")"
assert_eq "$out" '{
  "last": 2
}' "trellis run --wait prints the output"
assert_contains "$(cat "$TMP/wait.err")" "tasks done" "with progress from the events"
assert_contains "$(cat "$TMP/wait.err")" "succeeded" "and the end"
id=$(submit "$P/events.lua" '{"n": 4, "s": 0.3, "m": 1}')
out=$(timeout 60 "$CLI" logs -f "$id" 2>"$TMP/logs.err") || fail "logs -f failed: $(cat "$TMP/logs.err")"
assert_eq "$out" "talk: line 1
talk: line 2
talk: line 3
talk: line 4
last: done with 1" "trellis logs -f prints every line until the run ends"
assert_contains "$(api_get /metrics)" "trellis_events_sent_total" "event counters in /metrics"
echo "PASS"
