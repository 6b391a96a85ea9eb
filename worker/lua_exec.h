/*
 * lua_exec.h - trellis.exec: a task runs a program without blocking the
 * worker's loop.
 *
 *   local r = trellis.exec { argv = {"python3", "embed.py", shard},
 *                            env = {HF_HOME = "/cache"}, cwd = "/work",
 *                            stdin = "...", timeout = 600,
 *                            max_output = 1048576, grace = 5 }
 *   -- r.status, r.signal, r.stdout, r.stderr, r.timed_out,
 *   -- r.stdout_dropped, r.stderr_dropped
 *
 * The process starts on libuv's process handles (uv_spawn) in a new session
 * (so it leads its own process group) with the worker's environment plus
 * `env`, and CUDA_VISIBLE_DEVICES set to the task's devices (ctx.gpus; empty
 * when it has none) with CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA numbers
 * devices as NVML does. The task's coroutine yields until the process has
 * exited and its output is read to the end. Each output keeps max_output
 * bytes (1 MiB by default); the rest is counted, not kept. Lines go to the
 * task's log as they arrive (stderr lines marked "[stderr] ").
 *
 * Its timeout, the task's timeout, CANCEL and the worker stopping end the
 * whole process group: SIGTERM, then SIGKILL after `grace` seconds (5 by
 * default). When the program itself exits, what is left of its group is
 * killed too, so nothing it started outlives it holding its pipes. libuv
 * reaps the process; no zombie is left.
 *
 * status is the exit code, or 128 + the signal that ended it; signal is that
 * signal or 0. A program that cannot start raises an error in the task.
 *
 * Loop thread only.
 */
#ifndef TR_WORKER_LUA_EXEC_H
#define TR_WORKER_LUA_EXEC_H

#include <lua.h>

/* lua_CFunction trellis.exec (the worker adds it to the trellis module). */
int tr_lua_exec(lua_State *L);

/* Defaults: bytes kept per output, and seconds between SIGTERM and SIGKILL. */
#define TR_EXEC_MAX_OUTPUT (1u << 20)
#define TR_EXEC_GRACE_S 5.0

#endif
