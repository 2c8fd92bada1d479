"""A TCP proxy that delays every chunk it forwards, or holds them all (a paused link), for
tests and benchmarks that put a slow or stalled network between workers and the database.

Each direction of each connection has a queue: a chunk read at t is written at t + delay, in
order, so the link's latency grows without its throughput shrinking. It runs its own asyncio
loop in a daemon thread:

    with LatencyProxy(("127.0.0.1", 5432), delay=2.0) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/name"
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any


class LatencyProxy:
    def __init__(self, upstream: tuple[str, int], delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        """Closes the listener and every connection through it."""
        assert self._server is not None
        self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def set_delay(self, seconds: float) -> None:
        """From now on each chunk is held `seconds` (chunks already queued keep theirs)."""
        self.delay = seconds

    def pause(self) -> None:
        """Holds every chunk until `resume()`: connections stay open, nothing gets through."""
        self._loop.call_soon_threadsafe(self._flowing_event().clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing_event().set)

    def _flowing_event(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connect, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while data := await reader.read(65536):
                await chunks.put((time.monotonic() + self.delay, data))
            await chunks.put((time.monotonic() + self.delay, b""))

        async def write() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._flowing_event().wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await asyncio.gather(read(), write())
        with contextlib.suppress(Exception):
            writer.close()


def main(argv: Any = None) -> None:
    """`python -m tests.latency_proxy PORT DELAY`: a proxy to PostgreSQL on 127.0.0.1:5432."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("delay", type=float)
    args = parser.parse_args(argv)
    with LatencyProxy(("127.0.0.1", 5432), args.delay) as proxy:
        print(proxy.port, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
