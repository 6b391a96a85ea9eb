#!/usr/bin/env bash
# lua-pipelines/batch_embed.lua end to end on a gpu pool without a GPU: two
# workers offer two devices each (--gpus 2, nothing behind them), every shard
# task gets one device in CUDA_VISIBLE_DEVICES, its Python program finds no
# CUDA and embeds on the CPU, and the last task merges the shards.
source "$(dirname "$0")/cluster.sh"
LP="$SRC/lua-pipelines"
start_scheduler
start_worker cpu --pool cpu --slots 4
start_worker g1 --pool gpu --gpus 2 --slots 4
start_worker g2 --pool gpu --gpus 2 --slots 4
wait_workers 3
IN="$LP/data/questions.jsonl"
n=$(grep -c . "$IN")
id=$(submit "$LP/batch_embed.lua" "{\"input\": \"$IN\", \"out_dir\": \"$TMP/out\", \"shards\": 6}")
out=$(wait_run "$id" 120)
assert_eq "$(echo "$out" | json_get 'j["state"]')" succeeded "batch_embed succeeds"
assert_eq "$(echo "$out" | json_get '[j["output"]["collect"]["vectors"], j["output"]["collect"]["shards"], j["output"]["collect"]["dim"], j["output"]["collect"]["devices"]]')" \
  "[$n, 6, 64, {\"cpu\": 6}]" "every line embedded once, by 6 shards, on the CPU"
assert_eq "$(grep -c '"vector"' "$TMP/out/embeddings.jsonl")" "$n" "the merged file has one vector per line"
tasks=$(api_get "/v1/runs/$id/tasks")
assert_eq "$(echo "$tasks" | json_get 'sorted(set(len(t["output"]["gpus"]) for t in j["tasks"] if t["name"]=="embed"))')" "[1]" "each shard held one GPU"
logs=$(api_get "/v1/runs/$id/logs")
assert_contains "$logs" "CUDA_VISIBLE_DEVICES='" "the program saw its device"
assert_contains "$logs" "running on cpu" "and fell back to the CPU"
echo "1 passed, 0 failed"
