#!/usr/bin/env bash
# LLM usage accounting end to end: the real scheduler and worker against
# tests/llm/fake_llm.py. Each task keeps the calls of all its attempts
# (failed ones included), the run sums them, the sums survive a kill -9 of
# the scheduler (read back from the task records), and `trellis status` and
# `trellis tasks` show them.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"
TRELLIS="$BUILD/cli/trellis"

export FAKE_LLM_KEY="sekret-test-key"
"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
# Prices per million tokens: input 1.5, output 4.
cat >"$TMP/providers.json" <<JSON
{
  "fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "api_key_env": "FAKE_LLM_KEY",
           "default": true, "prices": {"input": 1.5, "output": 4}}
}
JSON

start_scheduler
start_worker llm --slots 4 --providers "$TMP/providers.json"
wait_workers 1

id=$(submit "$P/llm_usage.lua")
run=$(wait_run "$id" 90)
assert_eq "$(echo "$run" | json_get 'j["state"]')" succeeded "the run succeeds"

# The expected figures, from the fake server's counting (a token per word of
# the messages; the answer is "echo: " and the last message) and the prices.
# check_run reads the run's JSON on stdin and the tasks' JSON in $TMP/tasks.json.
api_get "/v1/runs/$id/tasks" >"$TMP/tasks.json"
cat >"$TMP/check.py" <<'PY'
import hashlib, json, sys
run = json.load(sys.stdin)
tasks = {t["name"]: t for t in json.load(open(sys.argv[1]))["tasks"]}
template = hashlib.sha256(b"question: {{q}}").hexdigest()
def words(s): return len(s.split())
def cost(pt, ct): return (pt * 1.5 + ct * 4) / 1e6
first_pt, first_ct = words("question: one two"), words("echo: question: one two")
second_pt, second_ct = words("three four five"), words("echo: three four five")
errors = []
def check(what, got, want):
    ok = abs(got - want) < 1e-12 if isinstance(want, float) else got == want
    if not ok:
        errors.append("%s: expected %r, got %r" % (what, want, got))

f, s = tasks["first"], tasks["second"]
check("first attempts", f["attempts"], 2)
check("first calls (one per attempt, the failed one kept)", len(f["usage"]), 2)
for i, c in enumerate(f["usage"]):
    check("first[%d] provider" % i, c["provider"], "fake")
    check("first[%d] model" % i, c["model"], "ok-a")
    check("first[%d] prompt_digest is the template's" % i, c["prompt_digest"], template)
    check("first[%d] prompt_tokens" % i, c["prompt_tokens"], first_pt)
    check("first[%d] completion_tokens" % i, c["completion_tokens"], first_ct)
    check("first[%d] cost" % i, c["cost"], cost(first_pt, first_ct))
    check("first[%d] cached" % i, c["cached"], False)
    check("first[%d] latency_ms >= 0" % i, c["latency_ms"] >= 0, True)
check("the task's output names the same digest", f["output"]["digest"], template)
check("second calls", len(s["usage"]), 1)
c = s["usage"][0]
check("second model", c["model"], "ok-b")
check("second prompt_digest is the messages' (no template)",
      len(c["prompt_digest"]) == 64 and c["prompt_digest"] != template, True)
check("second tokens", (c["prompt_tokens"], c["completion_tokens"]), (second_pt, second_ct))

u = run["usage"]
pt, ct = 2 * first_pt + second_pt, 2 * first_ct + second_ct
check("run calls", u["calls"], 3)
check("run prompt_tokens", u["prompt_tokens"], pt)
check("run completion_tokens", u["completion_tokens"], ct)
check("run cost", u["cost"], 2 * cost(first_pt, first_ct) + cost(second_pt, second_ct))
check("run latency_ms", abs(u["latency_ms"] - sum(x["latency_ms"] for x in f["usage"] + s["usage"])) < 1e-6, True)
check("models", sorted(u["by_model"]), ["fake/ok-a", "fake/ok-b"])
a = u["by_model"]["fake/ok-a"]
check("ok-a sums", (a["calls"], a["prompt_tokens"], a["completion_tokens"]),
      (2, 2 * first_pt, 2 * first_ct))
check("ok-a cost", a["cost"], 2 * cost(first_pt, first_ct))
check("prompt digests", sorted(u["prompt_digests"]), sorted([template, c["prompt_digest"]]))
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("%d prompt + %d completion tokens, cost %.6f" % (pt, ct, u["cost"]))
PY
summary=$(echo "$run" | "$PY" "$TMP/check.py" "$TMP/tasks.json") || fail "usage of the live run: $summary"
ok "per-task calls and the run's sums from memory ($summary)"

# The listing carries the totals only.
listed=$(api_get "/v1/runs" | json_get "[r['usage'] for r in j['runs'] if r['run_id'] == '$id'][0]")
assert_eq "$(echo "$listed" | json_get 'sorted(j)')" \
  '["calls", "completion_tokens", "cost", "latency_ms", "prompt_tokens"]' "GET /v1/runs lists the totals"
assert_eq "$(echo "$listed" | json_get 'j["calls"]')" 3 "GET /v1/runs: three calls"

# The CLI: a usage line in status, a cost column in tasks.
status=$(TRELLIS_API="$API" "$TRELLIS" status "$id")
assert_contains "$status" "usage:     3 LLM calls, $summary" "trellis status prints the usage line"
tasks_out=$(TRELLIS_API="$API" "$TRELLIS" tasks "$id")
assert_contains "$tasks_out" "COST" "trellis tasks has a cost column"
first_cost=$("$PY" -c 'print("%.6f" % (2 * (3 * 1.5 + 4 * 4) / 1e6))')
assert_contains "$(echo "$tasks_out" | grep '^first')" "$first_cost" "the first task's cost covers both attempts"

# kill -9 after the run finished; the restarted scheduler reads the run and
# its tasks from the state, and sums the same usage from the task records.
kill -9 "$SCHED_PID"
ok "killed the scheduler after the run finished"
start_scheduler
# With etcd state a restarted scheduler leads only once the dead one's lease ran out.
wait_for 30 curl -sfL --max-redirs 3 "$API/v1/runs/$id" || fail "the restarted scheduler never answered"
api_get "/v1/runs/$id/tasks" >"$TMP/tasks.json"
summary2=$(api_get "/v1/runs/$id" | "$PY" "$TMP/check.py" "$TMP/tasks.json") \
  || fail "usage after the restart: $summary2"
assert_eq "$summary2" "$summary" "the same usage after a restart, from the task records"
listed=$(api_get "/v1/runs" | json_get "[r.get('usage') for r in j['runs'] if r['run_id'] == '$id'][0]")
assert_eq "$(echo "$listed" | json_get 'j["calls"]')" 3 "GET /v1/runs after a restart: the totals kept with the run's record"
status=$(TRELLIS_API="$API" "$TRELLIS" status "$id")
assert_contains "$status" "usage:     3 LLM calls" "trellis status after the restart"

# kill -9 while the second task runs: the restarted scheduler resumes the
# run, takes the first task's calls (both attempts) from its durable record,
# and the finished run sums the same as an uninterrupted one. The kill comes
# while the second task sleeps before its call; the worker drops that
# attempt when it meets the new scheduler, and the re-dispatched one calls.
wait_workers 1
id3=$(submit "$P/llm_usage.lua" '{"nap": 3}')
wait_for 30 bash -c "curl -s $API/v1/runs/$id3/tasks | $PY -c 'import json,sys; t = {x[\"name\"]: x for x in json.load(sys.stdin)[\"tasks\"]}; sys.exit(0 if t[\"first\"][\"state\"] == \"succeeded\" and t[\"second\"][\"state\"] == \"running\" else 1)'" \
  || fail "the second task of the resumable run never ran"
kill -9 "$SCHED_PID"
ok "killed the scheduler while the second task ran"
start_scheduler
wait_for 30 curl -sfL --max-redirs 3 "$API/v1/runs/$id3" || fail "the restarted scheduler never answered"
run3=$(wait_run "$id3" 90)
assert_eq "$(echo "$run3" | json_get 'j["state"]')" succeeded "the resumed run succeeds"
api_get "/v1/runs/$id3/tasks" >"$TMP/tasks.json"
summary3=$(echo "$run3" | "$PY" "$TMP/check.py" "$TMP/tasks.json") || fail "usage of the resumed run: $summary3"
assert_eq "$summary3" "$summary" "a resumed run keeps the calls of its durable tasks"

# Cancelled after the calls of both attempts of the first task: those were
# paid for, so the cancelled task keeps them and the run counts them.
# The fake server counts calls per model: this run alone uses ok-c.
id4=$(submit "$P/llm_usage.lua" '{"linger": 30, "model": "ok-c"}')
wait_for 30 bash -c "[ \"\$(curl -s http://127.0.0.1:$FPORT/stats | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"calls\"].get(\"ok-c\", 0))')\" = 2 ]" \
  || fail "the first task's second attempt never made its call"
# The answer reaches the task a moment after the server counted the call.
sleep 0.5
api_post "/v1/runs/$id4/cancel" '{}' >/dev/null
# The cancelled attempt's RESULT (with its call) follows the cancel.
wait_for 30 bash -c "[ \"\$(curl -s $API/v1/runs/$id4 | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"usage\"][\"calls\"])')\" = 2 ]" \
  || fail "the cancelled run does not count the calls of both attempts: $(api_get "/v1/runs/$id4")"
ok "a cancelled run counts the calls of its cancelled task"
assert_eq "$(api_get "/v1/runs/$id4/tasks" | json_get '[(t["state"], len(t["usage"])) for t in j["tasks"]]')" \
  '[["cancelled", 2], ["cancelled", 0]]' "the cancelled task lists both calls"

# A run that made no call shows zero usage and no usage line.
id2=$(submit "$P/diamond.lua")
run2=$(wait_run "$id2" 60)
assert_eq "$(echo "$run2" | json_get 'j["usage"]["calls"]')" 0 "no calls, zero usage"
case "$(TRELLIS_API="$API" "$TRELLIS" status "$id2")" in
  *usage:*) fail "a run without calls printed a usage line" ;;
esac
ok "no usage line without calls"
echo "all usage checks passed"
