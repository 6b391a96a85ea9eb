#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/<name>/ (seed-*): real
frames, JSON bodies, HTTP requests, SSE streams and pipeline files, plus
hostile ones. The fuzzer's own finds sit next to them under their SHA-1
names. Run from anywhere: python3 tests/fuzz/make_seeds.py"""
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def mp(v):
    """A minimal msgpack packer (no third-party module needed)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**8:
            return b"\xcc" + struct.pack(">B", v)
        if 0 <= v < 2**16:
            return b"\xcd" + struct.pack(">H", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogateescape")
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        if len(v) < 256:
            return b"\xc4" + bytes([len(v)]) + v
        return b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, list):
        h = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return h + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        h = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return h + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def put(name, seeds):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for i, (label, data) in enumerate(seeds):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        with open(os.path.join(d, "seed-%02d-%s" % (i, label)), "wb") as f:
            f.write(data)


def frame(t, body):
    return mp([1, t, body])


DIGEST = "9f" * 32
proto = [
    ("hello", frame(1, {"id": "w-host-1", "pool": "gpu", "slots": 4, "gpus": 2, "cpus": 8,
                        "mem_mb": 24000, "version": "0.1.0",
                        "labels": {"zone": "a", "gpu_model": "h100"}})),
    ("welcome", frame(2, {"heartbeat_ms": 1000, "epoch": 1765000000123})),
    ("heartbeat", frame(3, {})),
    ("task", frame(4, {"id": 77, "epoch": 3, "attempt": 1, "run": "r-0001", "task": "embed",
                       "index": 2, "digest": DIGEST, "params": mp({"k": 5}),
                       "args": mp([[1, 2], "x"]), "timeout": 30.0})),
    ("result-ok", frame(5, {"id": 77, "epoch": 3, "attempt": 1, "ok": True,
                            "output": mp({"answer": "42", "score": 0.5}), "error": "",
                            "timed_out": False, "cancelled": False, "started_at": 1.5,
                            "finished_at": 2.25, "logs": ["a", "b"],
                            "usage": mp([{"provider": "fake", "model": "m", "prompt_tokens": 3,
                                          "completion_tokens": 4, "cost": 0.001,
                                          "latency_ms": 12, "cached": False}])})),
    ("result-err", frame(5, {"id": 78, "epoch": 3, "attempt": 2, "ok": False, "output": b"",
                             "error": "boom\nstack traceback:\n\t[C]: in ?", "timed_out": True,
                             "cancelled": False, "started_at": 1, "finished_at": 2,
                             "logs": []})),
    ("cancel", frame(6, {"id": 77, "reason": "run cancelled"})),
    ("pipeline-get", frame(7, {"digest": DIGEST})),
    ("pipeline", frame(8, {"digest": DIGEST, "source": b"return 1", "error": "", "name": "x.lua"})),
    ("bye", frame(9, {"reason": "shutting down"})),
    ("log", frame(10, {"id": 77, "logs": ["line 1", "line 2"]})),
    ("bad-version", frame(2, {})[:1] + mp(2) + mp(2) + mp({})),
    ("unknown-type", frame(11, {})),
    ("map32-huge", b"\x93\x01\x03\xdf\xff\xff\xff\xff"),
    ("array32-huge", b"\xdd\x10\x00\x00\x00"),
    ("str32-huge", b"\x93\x01\x09\x81\xa6reason\xdb\xff\xff\xff\xff"),
    ("deep", b"\x91" * 40 + b"\xc0"),
    ("trailing", frame(3, {}) + b"\x00"),
    ("labels-wrong", frame(1, {"id": "w", "pool": "cpu", "slots": 1, "labels": {"a": 1}})),
    ("slots-u64", frame(1, {"id": "w", "pool": "cpu", "slots": 2**40})),
    ("float32", b"\x93\x01\x04\x84\xa2id\x01\xa4task\xa1t\xa6digest\xa1d\xa7timeout\xca\x7f\xc0\x00\x00"),
    ("many-logs", frame(10, {"id": 1, "logs": ["x"] * 80})),
    ("ext", b"\x93\x01\x09\x81\xa6reason\xd4\x01\x02"),
]
put("proto", proto)

mpj = [
    ("map", mp({"answer": "42", "n": [1, -2, 3.5, None, True, False], "nested": {"a": {"b": []}}})),
    ("ints", mp([0, 127, 128, 255, 65535, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -1, -33, -(2**63)])),
    ("bin", mp([b"\xff\xfe", "caf\u00e9", "bad\udcff utf8"])),
    ("keys", b"\x85\xc0\x01\xc3\x02\x05\x03\x91\x01\x04\x81\x01\x02\x05"),
    ("nan", b"\x92\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\xca\xff\x80\x00\x00"),
    ("deep32", b"\x91" * 31 + b"\x90"),
    ("deep33", b"\x91" * 32 + b"\x90"),
    ("ext", b"\xc7\x03\x05abc"),
    ("json-object", '{"source": "return 1", "params": {"k": [1, 2.5, "x", null, true]}}'),
    ("json-scalars", '[1e308, -0.0, 9223372036854775807, -9223372036854775808, "\\u0000", "\\ud83d\\ude00"]'),
    ("json-deep", "[" * 33 + "]" * 33),
    ("json-dupkeys", '{"a": 1, "a": 2}'),
    ("json-string", '"caf\u00e9"'),
    ("map32-huge", b"\xdf\xff\xff\xff\xff"),
    ("keys-nested", b"\x81" * 30 + b"\xa1a" + b"\xc0" * 30),
]
put("mp_json", mpj)


def req(method, path, headers=(), body=b"", version="1.1"):
    if isinstance(body, str):
        body = body.encode()
    h = "%s %s HTTP/%s\r\nHost: 127.0.0.1\r\n" % (method, path, version)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        h += "Content-Length: %d\r\n" % len(body)
    return h.encode("latin-1") + b"\r\n" + body


AUTH = ("Authorization", "Bearer fuzz-token")
JSON = ("Content-Type", "application/json")
RUN = '{"source": "local trellis = require \\"trellis\\"\\nreturn trellis.pipeline{}", "params": {"q": "x", "k": [1, 2]}}'
http = [
    ("get-runs", b"\x00" + req("GET", "/v1/runs?state=running&limit=10")),
    ("post-run", b"\x00" + req("POST", "/v1/runs", [JSON], RUN)),
    ("post-run-auth", b"\x01" + req("POST", "/v1/runs", [AUTH, JSON], RUN)),
    ("no-token", b"\x01" + req("GET", "/v1/workers")),
    ("healthz-auth", b"\x01" + req("GET", "/healthz")),
    ("run-get", b"\x00" + req("GET", "/v1/runs/r-0001")),
    ("long-poll", b"\x00" + req("GET", "/v1/runs/r-0001?wait=30")),
    ("long-poll-pipelined", b"\x00" + req("GET", "/v1/runs/r1?wait=1") + req("GET", "/v1/runs/r2/tasks?task=a%20b") + req("GET", "/metrics")),
    ("tasks", b"\x00" + req("GET", "/v1/runs/r%2F1/tasks/?task=embed+x&x=%zz")),
    ("logs-ctype", b"\x00" + req("GET", "/v1/runs/r1/logs", [("X-Fuzz-Type", "text/plain\r\n injected: 1")])),
    ("logs", b"\x00" + req("GET", "/v1/runs/r1/logs", [("X-Fuzz-Type", "text/plain")])),
    ("cancel", b"\x00" + req("POST", "/v1/runs/r1/cancel", [JSON], "{}")),
    ("cancel-empty", b"\x00" + req("POST", "/v1/runs/r1/cancel")),
    ("pipelines", b"\x00" + req("POST", "/v1/pipelines", [JSON], '{"source": "return 1"}')),
    ("method", b"\x00" + req("DELETE", "/v1/runs")),
    ("head", b"\x00" + req("HEAD", "/v1/runs")),
    ("404", b"\x00" + req("GET", "/nope/" + "a" * 200)),
    ("chunked", b"\x00" + req("POST", "/v1/runs", [JSON, ("Transfer-Encoding", "chunked")]) + b"5\r\n{\"pip\r\n15\r\neline\": \"p@1.0\"}   \r\n0\r\n\r\n"),
    ("expect", b"\x00" + req("POST", "/v1/runs", [JSON, ("Expect", "100-continue")], RUN)),
    ("http10", b"\x00" + req("GET", "/readyz", [("Connection", "keep-alive")], version="1.0") + req("GET", "/healthz", version="1.0")),
    ("absolute", b"\x00" + req("GET", "http://127.0.0.1:8080/v1/runs?limit=5#frag")),
    ("standby", b"\x00" + req("GET", "/v1/runs/r1?wait=1", [("X-Fuzz-Standby", "1")])),
    ("too-large-body", b"\x02" + req("POST", "/v1/runs", [JSON], '{"source": "' + "x" * 2000 + '"}')),
    ("too-large-head", b"\x02" + req("GET", "/v1/runs", [("X-Pad", "p" * 600)])),
    ("many-headers", b"\x00" + req("GET", "/v1/runs", [("X-H%d" % i, "v") for i in range(120)])),
    ("garbage", b"\x00\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n"),
    ("upgrade", b"\x00" + req("GET", "/v1/runs", [("Connection", "Upgrade"), ("Upgrade", "websocket")]) + b"\x81\x85binary"),
    ("bad-json", b"\x00" + req("POST", "/v1/runs", [JSON], '{"source": ')),
    ("deep-json", b"\x00" + req("POST", "/v1/runs", [JSON], '{"source": "x", "params": {"a": ' + "[" * 40 + "]" * 40 + "}}")),
    ("bearer-spaces", b"\x01" + req("GET", "/v1/workers", [("authorization", "bearer \t fuzz-token")])),
]
put("http", http)

sse = [
    ("openai", b"\x00data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n"),
    ("anthropic", b"\x03event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"hi\"}}\n\n: ping\n\nevent: message_stop\ndata: {}\n\n"),
    ("crlf", b"\x01data: a\r\ndata: b\r\n\r\nid: 7\r\nretry: 10\r\ndata\r\n\r\n"),
    ("cr-only", b"\x00data:x\rdata: y\r\r:comment\revent:e\rdata:z\r\r"),
    ("stop", b"\x02event: stop\ndata: 1\n\ndata: never\n\n"),
    ("no-data", b"\x05event: lonely\n\nfield-without-colon\n\n"),
    ("long-line", b"\x00data: " + b"x" * 5000 + b"\n\n"),
    ("unterminated", b"\x04data: half an event"),
    ("bom", b"\x00\xef\xbb\xbfdata: bom\n\n"),
]
put("sse", sse)

pipes = []
for d in ("lua-pipelines", os.path.join("tests", "e2e", "pipelines")):
    for f in sorted(os.listdir(os.path.join(ROOT, d))):
        if f.endswith(".lua"):
            with open(os.path.join(ROOT, d, f), "rb") as fh:
                pipes.append((d.split(os.sep)[-1] + "-" + f[:-4], fh.read()))
H = "local trellis = require 'trellis'\n"
R = "run = function() end"
pipes += [
    ("cycle", H + "return trellis.pipeline{name='c', tasks={{name='a', after={'b'}, %s}, {name='b', after={'a'}, %s}}}" % (R, R)),
    ("dup", H + "return trellis.pipeline{name='d', tasks={{name='a', %s}, {name='a', %s}}}" % (R, R)),
    ("unknown-dep", H + "return trellis.pipeline{name='u', tasks={{name='a', after={'zz'}, %s}}}" % R),
    ("map-self", H + "return trellis.pipeline{name='m', tasks={{name='a', map='a', %s}}}" % R),
    ("holes", H + "local t = {}; t[1] = {name='a', %s}; t[3] = {name='c', %s}\nreturn trellis.pipeline{name='h', tasks=t}" % (R, R)),
    ("loop", "while true do end"),
    ("alloc", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) end"),
    ("strrep", "return string.rep('x', 2^40)"),
    ("recursion", "local function f() return f() + 1 end return f()"),
    ("error-table", "error(setmetatable({}, {__tostring = function() error('x') end}))"),
    ("metatables", H + "local p = trellis.pipeline{name='x', tasks={{name='a', %s}}}\nsetmetatable(p, {__index = function() error('no') end})\nreturn p" % R),
    ("bytecode", b"\x1bLuaT\x00\x19\x93\r\n\x1a\n\x04\x08\x08xV\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00(w@"),
    ("load-binary", "return load(string.dump(function() end))"),
    ("params-weird", H + "return trellis.pipeline{name='p', params={[1]=2, [true]=false, f=0/0, n={{{{}}}}}, tasks={{name='a', %s}}}" % R),
    ("worker-module", H + "local llm = require 'trellis.llm'\nllm.chat('x')"),
    ("many-tasks", H + "local t = {} for i = 1, 2000 do t[i] = {name='t'..i, %s} end\nreturn trellis.pipeline{name='big', tasks=t}" % R),
    ("coroutine", "local co = coroutine.wrap(function() while true do coroutine.yield() end end) for i=1,1e7 do co() end"),
    ("gsub", "return ('x'):rep(1e6):gsub('.', function(c) return c:rep(100) end)"),
]
put("pipeline", pipes)
print("seeds written under", CORPUS)
