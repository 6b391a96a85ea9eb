#!/usr/bin/env python3
"""slow_server.py - the HTTP server of trellis-bench's workload H.

Answers every request (HTTP/1.1, keep-alive) after a fixed delay: the `ms`
query parameter, else --latency-ms (200). One asyncio loop on one thread, so
a thousand connections waiting at once cost a thousand sockets and
coroutines, not a thousand threads: what H measures is the Trellis worker,
not the server's thread start-up. (tests/llm/fake_llm.py answers the same
requests, with a thread per connection; `trellis-bench --h-server` runs it
instead.)

Listens on 127.0.0.1 (port 0 unless --port, backlog 4096) and prints the port
on its first line of stdout. GET /stats -> {"total": answered requests,
"max_in_flight": the most requests waiting at once, "connections": TCP
connections accepted}. Python 3 standard library only.
"""
import argparse
import asyncio
import json
from urllib.parse import parse_qs, urlsplit

STATS = {"total": 0, "in_flight": 0, "max_in_flight": 0, "connections": 0}


def reply(status, body):
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def handle(reader, writer, default_ms):
    STATS["connections"] += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(reply("400 Bad Request", b'{"error": "bad request line"}'))
                break
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            url = urlsplit(parts[1])
            if url.path == "/stats":
                body = json.dumps({k: STATS[k] for k in
                                   ("total", "max_in_flight", "connections")}).encode()
            else:
                ms = int(parse_qs(url.query).get("ms", [default_ms])[0])
                STATS["in_flight"] += 1
                STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
                try:
                    await asyncio.sleep(ms / 1000.0)
                finally:
                    STATS["in_flight"] -= 1
                STATS["total"] += 1
                body = b'{"ok": true}'
            writer.write(reply("200 OK", body))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
            ValueError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=int, default=200)
    args = ap.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.latency_ms), "127.0.0.1", args.port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
