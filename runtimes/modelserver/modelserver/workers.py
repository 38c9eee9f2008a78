"""Several worker processes that agree, and come back.

With `--workers N` the parent process spawns N workers sharing the ports (SO_REUSEPORT), so a
client's connection lands on any of them. The parent is their coordinator:

- A repository call (index, load, unload) that reaches a worker is checked there (who calls,
  and where a load fetches from), then handed to the parent over the worker's channel. For a
  load with a `storage_uri`, the parent has that worker fetch it, once, into the repository
  folder they share; then every worker applies the change, and the call answers when all have,
  with the first failure if any failed. Changes to one model take turns; the index is the
  workers' indexes merged, the least ready state winning, so it reads the same whichever
  worker answers.
- The parent keeps a journal of the changes made through the API. A worker that dies (killed,
  out of memory, crashed) is replaced, and the replacement loads what the journal says the
  others serve before it counts as ready; readiness (`/v2/health/ready`, in every worker) is
  false meanwhile. A worker that exits with an error before it was ever ready (a model given
  to the server does not load) stops the server instead.
- SIGTERM (or SIGINT) to the parent is passed on to every worker, which drains within the
  grace period; the parent exits with the highest of their exit codes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .core.dataplane import DataPlane
from .core.turns import Turns
from .errors import ServingError, Unavailable

log = logging.getLogger(__name__)

# name -> (loaded, the storage_uri its files were fetched from): the last change of each model
# made through the repository API.
Journal = dict[str, tuple[bool, str | None]]
_STATES = {"UNAVAILABLE": 0, "LOADING": 1, "READY": 2}
_SIZE = struct.Struct("!I")
# A worker that dies sooner than this after it started is replaced after a growing delay.
STEADY_SECONDS = 30.0
MAX_RESTART_DELAY = 30.0


@dataclass
class Workers:
    """What a worker is given by the parent: its place among the others, and what they share."""

    index: int
    ready: Any  # one flag per worker: its models have loaded
    metrics: Path  # the folder their metrics snapshots meet in
    channel: socket.socket  # to the parent
    journal: Journal = field(default_factory=dict)  # the changes made before it started

    def all_ready(self) -> bool:
        return all(self.ready)


# -- a channel: calls both ways over one socket -------------------------------------------------
class Channel:
    """Parent and worker call each other over one socket: `call(op, *args)` runs the other
    side's `handle(op, *args)` and returns its result, or raises what it raised. Both are our
    own processes, so messages are pickles, each behind its length."""

    def __init__(self, sock: socket.socket, handle: Callable[..., Awaitable[Any]]):
        self.sock = sock
        self.handle = handle
        self.writer: asyncio.StreamWriter | None = None
        self.open = asyncio.Event()  # set once serving, and once closed
        self.closed = False
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()

    async def serve(self) -> None:
        """Answer calls and take answers until the other side has gone."""
        try:
            reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
            self.open.set()
            while True:
                size, = _SIZE.unpack(await reader.readexactly(_SIZE.size))
                kind, number, *rest = pickle.loads(await reader.readexactly(size))
                if kind == "call":
                    task = asyncio.get_running_loop().create_task(self._answer(number, *rest))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif (future := self._pending.pop(number, None)) and not future.done():
                    if kind == "ok":
                        future.set_result(rest[0])
                    else:
                        future.set_exception(rest[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.close()

    async def call(self, op: str, *args: Any) -> Any:
        await self.open.wait()  # calls made before the channel opened go out in their order
        if self.closed:
            raise ConnectionError("the other process has gone")
        number = next(self._ids)
        future = self._pending[number] = asyncio.get_running_loop().create_future()
        self._send(("call", number, op, args))
        return await future

    def close(self) -> None:
        self.closed = True
        self.open.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the other process has gone"))
        self._pending.clear()
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()

    async def _answer(self, number: int, op: str, args: tuple) -> None:
        try:
            message = ("ok", number, await self.handle(op, *args))
        except ServingError as exc:
            message = ("error", number, exc)
        except Exception as exc:  # noqa: BLE001 - answered, as the error it is
            log.exception("%s failed", op)
            message = ("error", number, ServingError(f"{type(exc).__name__}: {exc}"))
        if not self.closed:
            self._send(message)

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message)
        self.writer.write(_SIZE.pack(len(data)) + data)


# -- the parent ----------------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    process: Any  # multiprocessing's SpawnProcess
    channel: Channel | None
    started: float


class Supervisor:
    """The parent of `count` workers, each `target(*args, workers)` in a spawned process."""

    def __init__(self, count: int, target: Callable, args: tuple, metrics: Path,
                 grace_seconds: float):
        # Spawned, not forked: a child forked after a framework's thread pool has run deadlocks.
        self.context = multiprocessing.get_context("spawn")
        self.target, self.args, self.metrics = target, args, metrics
        self.grace_seconds = grace_seconds
        self.ready = self.context.RawArray("b", count)
        self.slots: list[_Slot | None] = [None] * count
        self.delays = [0.0] * count  # before a slot's next worker starts
        self.journal: Journal = {}
        self._turns = Turns()  # changes to one model take turns
        self._tasks: set[asyncio.Task] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        return asyncio.run(self._run())

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        for index in range(len(self.slots)):
            self._start(index)
        await self.stopped.wait()
        return self.exit_code

    # -- worker processes -------------------------------------------------------------------------
    def _start(self, index: int) -> None:
        """Spawn the worker of slot `index`; it starts from what the journal says now, and
        every change from now on goes to it too."""
        if self.stopping:
            return
        ours, theirs = socket.socketpair()
        self.ready[index] = 0
        shared = Workers(index, self.ready, self.metrics, theirs, dict(self.journal))
        process = self.context.Process(target=self.target, args=(*self.args, shared),
                                       name=f"worker-{index}")
        process.start()
        theirs.close()
        slot = self.slots[index] = _Slot(index, process, None, time.monotonic())
        slot.channel = Channel(ours, partial(self._handle, slot))
        self._spawn(slot.channel.serve())
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, slot)

    def _exited(self, slot: _Slot) -> None:
        asyncio.get_running_loop().remove_reader(slot.process.sentinel)
        slot.process.join()
        was_ready, self.ready[slot.index] = self.ready[slot.index], 0
        slot.channel.close()
        self.slots[slot.index] = None
        code = slot.process.exitcode
        if self.stopping:
            self.exit_code = max(self.exit_code, code if code and code > 0 else 0)
            if not any(self.slots):
                self.stopped.set()
            return
        why = _why(code)
        if code and code > 0 and not was_ready:  # its own decision: it cannot serve
            log.error("worker %d (pid %d) %s before it was ready: stopping the server",
                      slot.index, slot.process.pid, why)
            self.exit_code = code
            self.stop(signal.SIGTERM)
            return
        lived = time.monotonic() - slot.started
        delay = self.delays[slot.index] = (
            0.0 if lived > STEADY_SECONDS
            else min(MAX_RESTART_DELAY, max(1.0, 2 * self.delays[slot.index])))
        log.error("worker %d (pid %d) %s; starting another%s", slot.index, slot.process.pid, why,
                  f" in {delay:g}s" if delay else "")
        self._timers.append(asyncio.get_running_loop().call_later(delay, self._start,
                                                                  slot.index))

    def stop(self, signum: int) -> None:
        """Pass the signal on to every worker; the ones that outlive the grace period by far
        are killed."""
        if self.stopping:
            return
        self.stopping = True
        for timer in self._timers:
            timer.cancel()
        live = [slot for slot in self.slots if slot is not None]
        for slot in live:
            os.kill(slot.process.pid, signum)
        if not live:
            self.stopped.set()
            return
        asyncio.get_running_loop().call_later(self.grace_seconds + 10, self._kill_the_rest)

    def _kill_the_rest(self) -> None:
        for slot in self.slots:
            if slot is not None and slot.process.is_alive():
                log.error("worker %d (pid %d) did not stop in time: killing it", slot.index,
                          slot.process.pid)
                slot.process.kill()

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- repository changes, asked by a worker ----------------------------------------------------
    async def _handle(self, asker: _Slot, op: str, *args: Any) -> Any:
        if op == "index":
            return await self.index(*args)
        if op not in ("load", "unload"):
            raise ValueError(f"unknown call {op!r}")
        async with self._turns.of(args[0]):
            if op == "load":
                return await self.load(asker, *args)
            return await self.unload(*args)

    async def load(self, asker: _Slot, name: str, uri: str | None) -> None:
        if uri is not None:  # fetched once, by the worker asked, into the folder all share
            await asker.channel.call("fetch", name, uri)
        source = uri if uri is not None else self.journal.get(name, (True, None))[1]
        await self._change(name, (True, source), "load", name, uri)

    async def unload(self, name: str) -> None:
        await self._change(name, (False, self.journal.get(name, (False, None))[1]), "unload",
                           name)

    async def _change(self, name: str, entry: tuple[bool, str | None], op: str,
                      *args: Any) -> None:
        """Have every worker make a change, journaled first so that a worker started meanwhile
        makes it too; a change that every worker refused is no change."""
        before = self.journal.get(name)
        self.journal[name] = entry
        slots, answers = await self._ask_all(op, *args)
        failed = [answer for answer in answers if isinstance(answer, BaseException)]
        if failed and len(failed) == len(answers):
            if before is None:
                del self.journal[name]
            else:
                self.journal[name] = before
        if failed:
            raise _failure(slots, answers)

    async def index(self, ready_only: bool) -> list[dict[str, str]]:
        slots, answers = await self._ask_all("index")
        failed = [answer for answer in answers if isinstance(answer, BaseException)]
        if failed:
            raise _failure(slots, answers)
        merged = merge_indexes(answers)
        return [entry for entry in merged if entry["state"] == "READY"] if ready_only else merged

    async def _ask_all(self, op: str, *args: Any) -> tuple[list[_Slot], list]:
        slots = [slot for slot in self.slots if slot is not None]
        answers = await asyncio.gather(*(slot.channel.call(op, *args) for slot in slots),
                                       return_exceptions=True)
        return slots, answers


def merge_indexes(indexes: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """The workers' repository indexes as one: for each model, the least ready worker's entry
    (the first such worker's), so that it reads the same from whichever worker answers."""
    by_worker = [{entry["name"]: entry for entry in index} for index in indexes]
    merged = []
    for name in sorted({name for entries in by_worker for name in entries}):
        entries = [entries.get(name) or {"name": name, "version": "", "state": "UNAVAILABLE",
                                         "reason": "not loaded"} for entries in by_worker]
        worst = min(entries, key=lambda entry: _STATES.get(entry["state"], 0))
        versions = sorted({entry["version"] for entry in entries})
        if worst["state"] == "READY" and len(versions) > 1:
            worst = {**worst, "state": "UNAVAILABLE",
                     "reason": f"the workers serve different versions ({', '.join(versions)})"}
        merged.append(worst)
    return merged


def _failure(slots: list[_Slot], answers: list) -> ServingError:
    """The first worker's failure as the call's, saying which workers failed when some did
    not."""
    failed = [(slot, answer) for slot, answer in zip(slots, answers, strict=True)
              if isinstance(answer, BaseException)]
    slot, error = failed[0]
    if not isinstance(error, ServingError):  # its channel closed: the worker died meanwhile
        error = Unavailable(f"worker {slot.index} stopped before it answered; the worker that "
                            "replaces it loads what the others serve")
    if len(failed) < len(slots):
        which = ", ".join(str(slot.index) for slot, _ in failed)
        error = error.reworded(f"{error.message} (in worker {which} of {len(slots)}; the others "
                               "did it)")
    return error


def _why(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"was killed by {name}" + (", perhaps out of memory" if -code == signal.SIGKILL
                                          else "")
    return f"exited with code {code}"


# -- a worker's side -----------------------------------------------------------------------------
class WorkerPeers:
    """A worker's link to the parent: the data plane's `peers` (repository calls go to the
    parent, readiness is every worker's), and what applies the parent's changes here."""

    def __init__(self, shared: Workers, dataplane: DataPlane):
        self.shared = shared
        self.dataplane = dataplane
        self.channel = Channel(shared.channel, self._handle)
        self.started = asyncio.Event()  # this worker's own models have loaded

    async def serve(self) -> None:
        """Until the parent has gone."""
        await self.channel.serve()

    def loaded(self) -> None:
        """This worker's models have loaded: it is ready, and takes changes from now on."""
        self.shared.ready[self.shared.index] = 1
        self.started.set()

    # -- what the data plane asks ----------------------------------------------------------------
    def ready(self) -> bool:
        return self.shared.all_ready()

    async def index(self, ready_only: bool) -> list[dict[str, str]]:
        return await self._ask("index", ready_only)

    async def load(self, name: str, uri: str | None) -> None:
        await self._ask("load", name, uri)

    async def unload(self, name: str) -> None:
        await self._ask("unload", name)

    async def _ask(self, op: str, *args: Any) -> Any:
        try:
            return await self.channel.call(op, *args)
        except ConnectionError:
            raise Unavailable("the server is stopping") from None

    # -- what the parent asks --------------------------------------------------------------------
    async def _handle(self, op: str, *args: Any) -> Any:
        repository = self.dataplane.repository
        if op == "index":
            return repository.index()
        await self.started.wait()  # changes come after this worker's own models have loaded
        if op == "fetch":
            return await self.dataplane.fetch(*args)
        if op == "load":
            name, uri = args
            return await self.dataplane.apply_load(name, uri, fetched=True)
        if op == "unload":
            return await self.dataplane.apply_unload(*args)
        raise ValueError(f"unknown change {op!r}")
