/*
 * lua_llm.h - `require "trellis.llm"`: chat and embeddings over HTTP
 * (OpenAI-compatible and Anthropic providers, and the built-in extractive
 * one), with retries, fallbacks, streaming, a response cache and usage
 * accounting. The logic is Lua (worker/lua/trellis/llm.lua); this is its C
 * half: JSON, hashing, the provider configuration, API keys, Retry-After,
 * the cache, and the per-task usage list. See docs/llm.md.
 *
 * The providers file is read once at start-up, before any loop runs, and is
 * read-only afterwards, so every loop thread may use it. API keys are read
 * from the environment when a call needs them and never logged.
 */
#ifndef TR_WORKER_LUA_LLM_H
#define TR_WORKER_LUA_LLM_H

#include <lua.h>

#include "lib/base/error.h"

/* Largest providers file, and largest response body decoded as JSON. */
#define TR_LLM_PROVIDERS_MAX (1u << 20)
#define TR_LLM_JSON_MAX (64u << 20)

/* Cached responses kept per worker thread, and their total size. */
#define TR_LLM_CACHE_ENTRIES 1024
#define TR_LLM_CACHE_BYTES (64u << 20)

/*
 * Reads and checks the providers file at path (JSON: name -> {kind,
 * base_url, api_key_env, models, prices, default}). Call once before the
 * loops start. 0, or TR_ENOENT / TR_EIO / TR_EJSON / TR_EINVAL / TR_ENOMEM
 * with err saying which provider or field is wrong.
 */
int tr_llm_providers_load(const char *path, struct tr_error *err) TR_MUST_CHECK;

/* Forgets the providers file (tests, shutdown). */
void tr_llm_providers_free(void);

/* lua_CFunction that require runs: returns the module table. May raise. */
int tr_lua_llm_open(lua_State *L);

/* trellis.json: {encode, decode} on jansson (the functions trellis.llm uses). May raise. */
int tr_lua_json_open(lua_State *L);

#endif
