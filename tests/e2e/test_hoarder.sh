#!/usr/bin/env bash
# A worker cannot take tasks by claiming slots: a HELLO with 1,000,000 slots
# counts as --max-slots, and a worker holds only a small window of tasks
# until it returns results (slow start), so a hoarder that returns nothing
# holds 16 of 200 tasks while the real worker runs the rest.
source "$(dirname "$0")/cluster.sh"
start_scheduler
start_worker real --slots 4
wait_workers 1
"$BUILD/tests/zmq_impostor" "tcp://127.0.0.1:$WPORT" hoard w-hoard 12 >"$TMP/hoard.out" &
HOARD=$!
PIDS+=("$HOARD")
wait_workers 2
grep -q "claims 1000000 slots: counted as 10000" "$TMP/scheduler.log" || fail "the claim was not capped"
ok "1,000,000 claimed slots count as 10,000 (--max-slots)"

"$PY" - "$TMP/wide.lua" <<'PYEOF'
import sys
tasks = ",\n".join('  trellis.task { name = "t%d", run = function() trellis.sleep(0.01) return %d end }' % (i, i) for i in range(200))
open(sys.argv[1], "w").write('local trellis = require "trellis"\nreturn trellis.pipeline { name = "wide", version = "1", tasks = {\n' + tasks + "\n} }\n")
PYEOF
id=$(submit "$TMP/wide.lua")
wait_for 10 bash -c "[ \"\$(curl -s $API/v1/runs/$id | $PY -c 'import json,sys; print(json.load(sys.stdin)[\"tasks\"][\"succeeded\"])')\" -ge 184 ]" \
  || fail "the real worker did not run the tasks the hoarder does not hold: $(api_get "/v1/runs/$id" | json_get 'j["tasks"]')"
held=$(api_get /v1/workers | json_get '[w["busy"] for w in j["workers"] if w["id"] == "w-hoard"][0]')
[ "$held" -le 16 ] || fail "the hoarder holds $held tasks"
ok "the hoarder holds $held tasks; the real worker ran the other $(api_get "/v1/runs/$id" | json_get 'j["tasks"]["succeeded"]')"
wait "$HOARD"
got=$(cat "$TMP/hoard.out")
[ "${got#tasks }" -le 16 ] || fail "the hoarder was sent ${got#tasks } tasks"
assert_eq "$(wait_run "$id" | json_get 'j["state"]')" succeeded "its tasks run elsewhere once it is gone"
echo "1 passed, 0 failed"
