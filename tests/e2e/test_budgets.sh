#!/usr/bin/env bash
# LLM budgets and provider quotas end to end (docs/budgets.md): the real
# scheduler and workers against tests/llm/fake_llm.py, which counts the
# requests it gets.
#   - bad budgets are refused with invalid_budget;
#   - 1,000 concurrent calls against a tenant budget that fits 100 at their
#     worst case: the provider sees at least 100 and never more than the
#     budget's worth, the rest fail budget_exceeded before any request;
#   - a pipeline's budget = {...} stops one run's calls; on_budget =
#     "fallback" moves an expensive call to the providers file's cheaper model;
#   - a provider's rpm shared by two workers: the provider's per-second limit
#     is never passed (no 429), while another provider's tasks run.
source "$(dirname "$0")/cluster.sh"
P="$SRC/tests/e2e/pipelines"

"$PY" "$SRC/tests/llm/fake_llm.py" >"$TMP/fake.port" 2>"$TMP/fake.log" &
PIDS+=("$!")
wait_for 10 test -s "$TMP/fake.port" || fail "fake LLM server did not start"
FPORT=$(head -n1 "$TMP/fake.port")
# ok-big is expensive, its budget_fallback ok-cheap is not. Provider "q" is
# limited to 600 requests a minute (10/s); its model 429s above 25 a second.
cat >"$TMP/providers.json" <<JSON
{
  "fake": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "default": true,
           "models": {"ok-bud": {}, "ok-seq": {}, "ok-other": {},
                      "ok-big": {"prices": {"input": 1000, "output": 1000},
                                 "budget_fallback": {"model": "ok-cheap"}},
                      "ok-cheap": {"prices": {"input": 1, "output": 1}}}},
  "q": {"kind": "openai", "base_url": "http://127.0.0.1:$FPORT/v1", "rpm": 600,
        "models": ["persec-25-q"]}
}
JSON

start_scheduler
start_worker b1 --slots 1000 --providers "$TMP/providers.json"
start_worker b2 --slots 1000 --providers "$TMP/providers.json"
wait_workers 2

put() { curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
          --data-binary "$2" "$API/v1/budgets/$1"; }

# --- bad input ---------------------------------------------------------------
for body in '{"cost": -1}' '{"tokens": "many"}' '{"cost": 1, "period": "week"}' \
            '{"cost": 1, "extra": 2}' '[1]' 'not json'; do
  code=$(put default "$body")
  [ "$code" = 400 ] || fail "PUT $body: expected 400, got $code"
done
assert_contains "$(put default '{"cost": -1}'; cat "$TMP/put.out")" invalid_budget "a negative limit"
assert_eq "$(put 'bad%20name' '{"cost": 1}')" 400 "a tenant name with a space"
ok "bad budgets are refused (400 invalid_budget)"

# --- 1,000 concurrent calls, a budget that fits 100 ---------------------------
# A call's worst case: prompt "hi" estimated at 9 tokens (ceil(2/3) + 8) plus
# max_tokens 16 = 25 tokens. The fake server bills 1 + 2 = 3 tokens a call.
assert_eq "$(put default '{"tokens": 2500, "period": "day"}')" 200 "PUT a budget"
id=$(submit "$P/llm_budget.lua" '{"n": 1000}')
run=$(wait_run "$id" 240)
assert_eq "$(echo "$run" | json_get 'j["state"]')" succeeded "the 1,000-call run succeeds"
curl -s "http://127.0.0.1:$FPORT/stats" >"$TMP/stats1.json"
api_get /v1/budgets >"$TMP/b1.json"
api_get "/v1/runs/$id/tasks" >"$TMP/t1.json"
"$PY" - "$TMP/stats1.json" "$TMP/b1.json" "$TMP/t1.json" <<'PY' || fail "budget under concurrency"
import json, sys
stats, bud, tasks = (json.load(open(p)) for p in sys.argv[1:4])
served = stats["calls"].get("ok-bud", 0)
outs = [t.get("output") for t in tasks["tasks"] if t["name"] == "ask"]
okn = sum(1 for o in outs if isinstance(o, str) and o.startswith("ok:"))
refused = sum(1 for o in outs if o == "budget_exceeded")
b = [x for x in bud["budgets"] if x["tenant"] == "default"][0]
print("served", served, "ok", okn, "refused", refused, "spent", b["spent"], "reserved", b["reserved"])
assert len(outs) == 1000, len(outs)
assert served == okn, (served, okn)             # every request the provider saw was a success
assert okn + refused == 1000, (okn, refused)
assert served >= 100, served                    # the 100 worst cases always fit
assert served * 3 <= 2500, served               # never more than the budget's worth
assert b["spent"]["tokens"] == served * 3, b    # settled with the real usage
assert b["spent"]["tokens"] <= 2500
assert b["reserved"]["tokens"] == 0, b          # nothing left reserved
assert b["period"] == "day" and b["tokens"] == 2500
PY
ok "1,000 concurrent calls against a budget that fits 100: spend stays under the limit"

# --- a run's budget, and the fallback policy ----------------------------------
assert_eq "$(put default '{"tokens": null, "cost": null}')" 200 "lift the tenant's limits"
id=$(submit "$P/llm_budget_run.lua")
run=$(wait_run "$id" 120)
assert_eq "$(echo "$run" | json_get 'j["state"]')" succeeded "the run-budget run succeeds"
api_get "/v1/runs/$id/tasks" >"$TMP/t2.json"
curl -s "http://127.0.0.1:$FPORT/stats" >"$TMP/stats2.json"
"$PY" - "$TMP/t2.json" "$TMP/stats2.json" <<'PY' || fail "run budget and fallback"
import json, sys
tasks = {t["name"]: t for t in json.load(open(sys.argv[1]))["tasks"]}
calls = json.load(open(sys.argv[2]))["calls"]
# fb: ok-big's worst case (25 tokens at $1000/M = $0.025) passes the run's
# $0.01; on_budget = "fallback" sends it to ok-cheap instead.
assert tasks["fb"]["output"] == "ok-cheap", tasks["fb"]
assert calls.get("ok-big", 0) == 0 and calls.get("ok-cheap") == 1, calls
# seq: 100 tokens, 3 spent by fb; calls fit while spent + 25 <= 100: 25 calls.
out = tasks["seq"]["output"]
assert out["calls"] == 25, out
assert out["error"].startswith("budget_exceeded: run tokens budget"), out
assert calls.get("ok-seq") == 25, calls
PY
ok "a pipeline's budget stops its run's calls exactly; on_budget = fallback uses the cheaper model"

# --- a provider's quota shared by two workers ---------------------------------
# 60 calls to "q" (600 rpm = 10/s; its model refuses more than 25 in a second)
# spread over two workers with 8 slots in all, and 20 calls to another
# provider in the same run. The tasks declare their providers: q's wait in the
# scheduler while its quota is used up, the others' take the slots meanwhile.
start_worker s1 --slots 4 --pool small --providers "$TMP/providers.json"
start_worker s2 --slots 4 --pool small --providers "$TMP/providers.json"
wait_workers 4
id=$(submit "$P/llm_quota.lua" '{"n": 60, "m": 20}')
run=$(wait_run "$id" 180)
assert_eq "$(echo "$run" | json_get 'j["state"]')" succeeded "the quota run succeeds"
curl -s "http://127.0.0.1:$FPORT/stats" >"$TMP/stats3.json"
api_get "/v1/runs/$id/tasks" >"$TMP/tq.json"
api_get /v1/budgets >"$TMP/b3.json"
"$PY" - "$TMP/stats3.json" "$TMP/tq.json" "$TMP/b3.json" <<'PY' || fail "quota"
import json, sys
stats = json.load(open(sys.argv[1]))
tasks = json.load(open(sys.argv[2]))["tasks"]
bud = json.load(open(sys.argv[3]))
m = "persec-25-q"
q = [x for x in bud["quotas"] if x["provider"] == "q"][0]
print("q calls", stats["calls"].get(m), "most in a second", stats["max_per_second"].get(m),
      "429s", stats["rejected"].get(m, 0), "quota", q)
qt = [t for t in tasks if t["name"] == "q"]
ot = [t for t in tasks if t["name"] == "other"]
assert [t["output"] for t in qt] == [m] * 60, [t["output"] for t in qt]
assert [t["output"] for t in ot] == ["ok-other"] * 20
assert stats["calls"].get(m) == 60
assert stats["rejected"].get(m, 0) == 0, stats["rejected"]       # no 429 at all
assert stats["max_per_second"][m] <= 21, stats["max_per_second"]  # bucket of 10 + 9.8/s
assert q["rpm"] == 600 and q["granted"] == 60, q
assert q["tasks_held_total"] > 0, q                              # held in the scheduler
# While q's tasks waited in the scheduler, the other provider's took the slots.
assert max(t["finished_at"] for t in ot) < max(t["finished_at"] for t in qt)
PY
ok "two workers share a provider's quota: no 429, tasks held in the scheduler, others run"

# --- spent is durable ----------------------------------------------------------
before=$(api_get /v1/budgets | json_get '[b for b in j["budgets"] if b["tenant"] == "default"][0]["spent"]["tokens"]')
kill -9 "$SCHED_PID"
wait "$SCHED_PID" 2>/dev/null || true
start_scheduler
after=$(api_get /v1/budgets | json_get '[b for b in j["budgets"] if b["tenant"] == "default"][0]["spent"]["tokens"]')
"$PY" -c "import sys; b, a = float(sys.argv[1]), float(sys.argv[2]); assert a >= b > 0, (b, a)" \
  "$before" "$after" || fail "spent after a kill -9: $after, before: $before"
ok "spent survives a kill -9 of the scheduler ($before -> $after tokens)"
