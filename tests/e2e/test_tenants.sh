#!/usr/bin/env bash
# Tenants, roles and the audit log (docs/api.md "Tokens, roles and tenants"):
# bad token files refused with their line, the role matrix over every route
# of scheduler/api.c, two tenants that cannot see each other's runs,
# pipelines, feedback, labels and models, an audit entry for each change
# (durable, `trellis audit`), SIGHUP reload on an open keep-alive connection,
# and no token in any log.
source "$(dirname "$0")/cluster.sh"
CLI="$BUILD/cli/trellis"
assert_not_contains() { case "$1" in *"$2"*) fail "$3: must not hold '$2'" ;; esac; ok "$3"; }
port=$(free_port)
wport=$(free_port)

refused() { # file needle what
  if "$SCHED_BIN" --api "127.0.0.1:$port" --listen "tcp://127.0.0.1:$wport" \
      --state "sqlite:$TMP/refused.db" --token-file "$1" >"$TMP/refused.out" 2>&1; then
    fail "$3: the scheduler started"
  fi
  assert_contains "$(cat "$TMP/refused.out")" "$2" "$3"
}
printf '# tokens\ngood-token-1 viewer research\n\nbad-token-2 superuser research\n' >"$TMP/t1"
refused "$TMP/t1" "line 4: unknown role 'superuser'" "an unknown role is refused with its line"
printf 'tok-a operator Research\n' >"$TMP/t2"
refused "$TMP/t2" "line 1: bad tenant 'Research'" "a bad tenant name is refused with its line"
printf 'tok-a\ntok-b viewer\ntok-a viewer x\n' >"$TMP/t3"
refused "$TMP/t3" "line 3: the same token" "a repeated token is refused"
printf 'tok-a viewer x extra\n' >"$TMP/t4"
refused "$TMP/t4" "line 1: unexpected field" "an extra field is refused"
printf 'tok-a viewer x name=\n' >"$TMP/t5"
refused "$TMP/t5" "line 1: a bad or repeated name=" "an empty name is refused"
if grep -q "good-token-1\|tok-a\|tok-b" "$TMP/refused.out"; then fail "a token in a refusal"; fi
ok "bad token files are refused at start, with the line, without the token"

# Tokens: every role of tenant research, a submitter and an operator of tenant
# other, the cluster's admin (tenant default, a bare token line).
sfx="$(date +%s%N)"
ROOT="root-$sfx"; RV="rv-$sfx"; RS="rs-$sfx"; RO="ro-$sfx"; RA="ra-$sfx"; OS="os-$sfx"; OO="oo-$sfx"
cat >"$TMP/tokens" <<EOF
# the cluster's admin: a bare token, admin of tenant default
$ROOT
$RV viewer research name=research-viewer
$RS submitter research name=research-submitter
$RO operator research name=research-operator
$RA admin research name=research-admin
$OS submitter other name=other-submitter
$OO operator other name=other-operator
EOF
start_scheduler --token-file "$TMP/tokens"
call() { # token method path [body] -> status
  local t="$1" m="$2" p="$3" b="${4:-}"
  if [ -n "$b" ]; then
    curl -s -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $t" \
      -H 'Content-Type: application/json' --data-binary "$b" "$API$p"
  else
    curl -s -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $t" "$API$p"
  fi
}

# The role matrix. Each route of api.c's table with the least role it needs;
# the list must name every route of the table.
matrix="GET /healthz open
GET /readyz open
GET /metrics viewer
GET /v1/workers viewer
GET /v1/runs viewer
POST /v1/runs submitter
GET /v1/runs/{id} viewer
GET /v1/runs/{id}/tasks viewer
GET /v1/runs/{id}/logs viewer
POST /v1/runs/{id}/cancel operator
POST /v1/runs/{id}/approvals/{task} operator
POST /v1/runs/{id}/retry operator
DELETE /v1/runs/{id} operator
GET /v1/pipelines/{name}/versions/{v}/source viewer
POST /v1/pipelines operator
GET /v1/pipelines viewer
POST /v1/feedback submitter
GET /v1/feedback viewer
GET /v1/pipelines/{name}/stats viewer
POST /v1/labels submitter
GET /v1/labels viewer
POST /v1/labels/{id} submitter
GET /v1/models viewer
GET /v1/models/{name} viewer
POST /v1/models/{name}/versions operator
GET /v1/models/{name}/versions/{v} viewer
PUT /v1/models/{name}/aliases/{alias} operator
DELETE /v1/models/{name}/aliases/{alias} operator
GET /v1/models/{name}/history viewer
GET /v1/triggers viewer
GET /v1/triggers/{pipeline}/{trigger}/firings viewer
GET /v1/audit admin
PUT /v1/budgets/{tenant} admin
GET /v1/budgets viewer"
table=$(grep -oE '^\s*\{"[A-Z]+", "[^"]+", h_[a-z_]+' "$SRC/scheduler/api.c" |
        sed -E 's/^\s*\{"([A-Z]+)", "([^"]+)".*/\1 \2/' | sort)
listed=$(echo "$matrix" | awk '{print $1, $2}' | sort)
[ "$table" = "$listed" ] || fail "the matrix does not list api.c's routes: $(diff <(echo "$table") <(echo "$listed"))"
rank() { case "$1" in viewer) echo 1 ;; submitter) echo 2 ;; operator) echo 3 ;; admin) echo 4 ;; *) echo 0 ;; esac; }
n=0
while read -r method path need; do
  p=$(echo "$path" | sed -e 's/{id}/nope-1/; s/{name}/nope/; s/{v}/1/; s/{alias}/prod/;
                              s/{pipeline}/nope/; s/{trigger}/t/; s/{task}/t/; s/{tenant}/research/')
  body=""; [ "$method" != GET ] && body='{}'
  for role in viewer submitter operator admin; do
    case $role in viewer) t=$RV ;; submitter) t=$RS ;; operator) t=$RO ;; admin) t=$RA ;; esac
    st=$(call "$t" "$method" "$p" "$body")
    if [ "$(rank "$role")" -lt "$(rank "$need")" ]; then
      [ "$st" = 403 ] || fail "$method $path as $role: expected 403, got $st"
      assert_contains "$(cat "$TMP/body")" '"forbidden"' "$method $path as $role: code forbidden"
    else
      [ "$st" != 403 ] && [ "$st" != 401 ] || fail "$method $path as $role: got $st"
    fi
    n=$((n + 1))
  done
  if [ "$need" = open ]; then
    assert_eq "$(api_status "$API$p")" 200 "$path without a token"
  else
    assert_eq "$(api_status "$API$p")" 401 "$method $path without a token"
  fi
done <<<"$matrix"
ok "role matrix: $n route x role calls as expected"

# Budgets are per tenant: research's admin sets research's only; its viewer
# sees research's row, not other's; the cluster's admin sees both.
assert_eq "$(call "$RA" PUT /v1/budgets/research '{"cost": 5, "period": "day"}')" 200 "research's admin sets its budget"
assert_eq "$(call "$RA" PUT /v1/budgets/other '{"cost": 5, "period": "day"}')" 403 "research's admin cannot set other's"
assert_eq "$(call "$ROOT" PUT /v1/budgets/other '{"cost": 7, "period": "day"}')" 200 "the cluster's admin sets other's"
call "$RV" GET /v1/budgets >/dev/null
assert_eq "$(json_get 'sorted(b["tenant"] for b in j["budgets"])' <"$TMP/body")" '["research"]' "research's viewer sees research's budget only"
call "$ROOT" GET /v1/budgets >/dev/null
assert_eq "$(json_get 'sorted(b["tenant"] for b in j["budgets"])' <"$TMP/body")" '["other", "research"]' "the cluster's admin sees every tenant's"

# Two tenants. research registers and runs e2e-hello; other cannot see it.
src_body=$("$PY" -c 'import json,sys; print(json.dumps({"source": open(sys.argv[1]).read()}))' \
  "$SRC/tests/e2e/pipelines/hello.lua")
assert_eq "$(call "$RO" POST /v1/pipelines "$src_body")" 201 "research registers e2e-hello"
assert_eq "$(call "$OO" POST /v1/pipelines "$src_body")" 409 "other cannot take the name"
assert_contains "$(cat "$TMP/body")" '"conflict"' "409 conflict"
assert_eq "$(call "$RS" POST /v1/runs '{"pipeline": "e2e-hello"}')" 201 "research runs it by name"
RUN=$(json_get 'j["run_id"]' <"$TMP/body")
assert_eq "$(call "$OS" POST /v1/runs '{"pipeline": "e2e-hello"}')" 404 "other cannot run it"
for sub in "" /tasks /logs; do
  assert_eq "$(call "$RV" GET "/v1/runs/$RUN$sub")" 200 "research sees its run$sub"
  assert_eq "$(call "$OS" GET "/v1/runs/$RUN$sub")" 404 "other: 404 for research's run$sub"
  mine=$(sed "s/$RUN/ID/" "$TMP/body")
  call "$OS" GET "/v1/runs/r-0123456789abcdef$sub" >/dev/null
  random=$(sed "s/r-0123456789abcdef/ID/" "$TMP/body")
  assert_eq "$mine" "$random" "another tenant's run$sub answers like a random id"
  assert_eq "$(call "$ROOT" GET "/v1/runs/$RUN$sub")" 404 "default's admin: 404 too$sub"
done
assert_eq "$(call "$OO" POST "/v1/runs/$RUN/cancel" '{}')" 404 "other cannot cancel it"
assert_eq "$(call "$OS" POST /v1/feedback "{\"run_id\": \"$RUN\", \"score\": 1}")" 404 \
  "other cannot give feedback on it"
call "$OS" GET /v1/runs >/dev/null
assert_not_contains "$(cat "$TMP/body")" "$RUN" "other's run list"
call "$RV" GET /v1/runs >/dev/null
assert_contains "$(cat "$TMP/body")" "$RUN" "research's run list"
call "$OS" GET /v1/pipelines >/dev/null
assert_not_contains "$(cat "$TMP/body")" "e2e-hello" "other's pipeline list"
call "$RV" GET /v1/pipelines >/dev/null
assert_contains "$(cat "$TMP/body")" "e2e-hello" "research's pipeline list"

# The changes of each kind, by research.
assert_eq "$(call "$RS" POST /v1/feedback "{\"run_id\": \"$RUN\", \"score\": 1}")" 201 "feedback"
assert_eq "$(call "$RS" POST /v1/labels '{"pipeline": "e2e-hello", "item": "x", "uncertainty": 0.5}')" \
  201 "label item"
ITEM=$(json_get 'j["item_id"]' <"$TMP/body")
assert_eq "$(call "$OS" POST "/v1/labels/$ITEM" '{"label": "spam"}')" 404 "other cannot label it"
assert_eq "$(call "$RS" POST "/v1/labels/$ITEM" '{"label": "ham"}')" 200 "research labels it"
assert_eq "$(call "$RO" POST /v1/models/clf/versions '{"artifact": "s3://m/1"}')" 201 "a model"
assert_eq "$(call "$OO" POST /v1/models/clf/versions '{"artifact": "s3://m/2"}')" 409 \
  "other cannot add to research's model"
assert_eq "$(call "$OS" GET /v1/models/clf)" 404 "other cannot see research's model"
call "$OS" GET /v1/models >/dev/null
assert_not_contains "$(cat "$TMP/body")" '"clf"' "other's model list"
assert_eq "$(call "$RO" PUT /v1/models/clf/aliases/prod '{"version": 1}')" 200 "an alias move"
call "$OS" GET /v1/feedback >/dev/null
assert_not_contains "$(cat "$TMP/body")" "$RUN" "other's feedback list"
call "$OS" GET "/v1/labels?state=all" >/dev/null
assert_not_contains "$(cat "$TMP/body")" "$ITEM" "other's label list"
assert_eq "$(call "$RO" POST "/v1/runs/$RUN/cancel" '{}')" 200 "research cancels its run"
ok "two tenants: another tenant's runs, pipelines, feedback, labels and models are 404 or absent"

# The audit log: research's admin sees research's changes, with token names.
assert_eq "$(call "$RA" GET /v1/audit)" 200 "GET /v1/audit"
audit=$(cat "$TMP/body")
for action in pipeline.register run.start feedback.create label.create label.set \
    model.register alias.move run.cancel; do
  n=$(echo "$audit" | json_get "len([e for e in j['entries'] if e['action'] == '$action'])")
  [ "$n" -ge 1 ] || fail "no audit entry for $action: $audit"
done
echo "$audit" | json_get 'j["entries"]' | grep -q '"research-operator"' || fail "token names"
assert_eq "$(echo "$audit" | json_get "sorted(set(e['tenant'] for e in j['entries']))")" \
  '["research"]' "research's admin sees research's entries only"
echo "$audit" | "$PY" -c '
import json, sys
e = json.load(sys.stdin)["entries"]
c = [x for x in e if x["action"] == "run.cancel"][0]
assert c["object"] == sys.argv[1] and c["token"] == "research-operator" and c["role"] == "operator", c
assert all(x["at"].endswith("Z") for x in e)' "$RUN" || fail "the cancel entry"
assert_eq "$(call "$RA" GET "/v1/audit?tenant=other")" 403 "research's admin: not other's entries"
call "$ROOT" GET "/v1/audit?limit=1000" >/dev/null
all=$(cat "$TMP/body")
assert_contains "$all" '"research-operator"' "the cluster's admin sees every tenant's entries"
n_all=$(echo "$all" | json_get 'len(j["entries"])')
since=$(echo "$audit" | json_get '[e["ts"] for e in j["entries"] if e["action"] == "alias.move"][0]')
assert_eq "$(call "$RA" GET "/v1/audit?since=$since")" 200 "since"
assert_eq "$(json_get '[e["action"] for e in j["entries"]]' <"$TMP/body")" '["run.cancel"]' \
  "?since= gives the entries after it"
assert_eq "$(call "$RA" GET "/v1/audit?since=yesterday")" 400 "a bad since is 400"
out=$(TRELLIS_TOKEN="$RA" "$CLI" --api "$API" audit)
assert_contains "$out" "alias.move" "trellis audit lists the entries"
assert_contains "$out" "research-operator" "trellis audit names the token"
if TRELLIS_TOKEN="$RO" "$CLI" --api "$API" audit >"$TMP/cli.out" 2>&1; then
  fail "trellis audit worked for an operator"
fi
assert_contains "$(cat "$TMP/cli.out")" "needs the role admin" "trellis audit as an operator: refused"
ok "audit: an entry per change kind, with token, role, tenant, object and time; trellis audit"

# SIGHUP reloads the tokens; an open keep-alive connection keeps working.
NEW="new-$sfx"
"$PY" - "$API_PORT" "$RV" "$NEW" "$TMP/tokens" "$SCHED_PID" "$TMP/scheduler.log" <<'PYEOF' || fail "reload"
import http.client, os, signal, sys, time
port, old, new, path, pid, log = sys.argv[1:]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
def get(tok):
    c.request("GET", "/v1/runs", headers={"Authorization": "Bearer " + tok})
    r = c.getresponse(); r.read(); return r.status
assert get(old) == 200
sock = c.sock
lines = open(path).read().replace(old + " viewer", new + " viewer")
open(path + ".new", "w").write(lines)
os.rename(path + ".new", path)
os.kill(int(pid), signal.SIGHUP)
for _ in range(200):
    if "reloaded" in open(log).read(): break
    time.sleep(0.1)
else:
    sys.exit("no reload in the log")
assert get(new) == 200, "the new token"
assert get(old) == 401, "the old token"
assert c.sock is sock, "the connection was not kept"
# A bad file keeps the tokens in force.
open(path, "a").write("x-" + new + " chief\n")
os.kill(int(pid), signal.SIGHUP)
for _ in range(200):
    if "not reloaded" in open(log).read(): break
    time.sleep(0.1)
else:
    sys.exit("no refusal in the log")
assert get(new) == 200, "the tokens in force stay"
assert c.sock is sock
PYEOF
assert_contains "$(cat "$TMP/scheduler.log")" "unknown role 'chief'" "the bad reload is logged"
ok "SIGHUP reload: new tokens on the same keep-alive connection; a bad file keeps the old"

# Durable: a restarted scheduler has the same entries.
sed -i "/ chief$/d" "$TMP/tokens"
kill -TERM "$SCHED_PID"; wait "$SCHED_PID" 2>/dev/null || true
start_scheduler --token-file "$TMP/tokens"
call "$ROOT" GET "/v1/audit?limit=1000" >/dev/null
assert_eq "$(json_get 'len(j["entries"])' <"$TMP/body")" "$n_all" "entries after a restart"
assert_eq "$(call "$OS" GET "/v1/runs/$RUN")" 404 "isolation after a restart"
assert_eq "$(call "$NEW" GET "/v1/runs/$RUN")" 200 "research's run after a restart"

for t in "$ROOT" "$RV" "$RS" "$RO" "$RA" "$OS" "$OO" "$NEW"; do
  if grep -rqF -- "$t" "$TMP"/*.log; then fail "a token appears in a log"; fi
done
ok "no token in any log"
echo "6 passed, 0 failed"
