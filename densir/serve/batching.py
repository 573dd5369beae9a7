"""Request batching: concurrent requests share one forward pass per model.

A :class:`Batcher` is a bounded queue and one worker thread. Requests are queued with a *kind*
(``"search"``, ``"rerank"``, ``"embed"``), a *key* (the settings that must be equal to share a
call, e.g. ``rerank_depth``) and a size (the texts they carry). The worker takes the oldest request,
waits at most ``max_wait_ms`` for more (no wait when requests are already queued: while a batch
runs, the next one fills), takes up to ``max_batch`` texts, and calls the handler of each kind once
per key with every request of that key: one encoder forward and one cross-encoder forward for the
batch. One worker runs the models, one batch at a time: on a CPU the runtime's threads (set once,
:func:`densir.threads.configure_cpu_threads`) already use every core, so two forwards at once
would only contend.

Bounds: at most ``max_queue`` requests wait; one more is refused (:class:`QueueFull`) instead of
queued. A request whose caller gives up (a timeout) is taken out of the queue at once
(:meth:`Batcher.cancel`), so it frees its slot; one already in a running batch finishes there
and its result is dropped.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The bounded queue is full: the request is refused, not queued."""


@dataclass(eq=False)
class Job:
    kind: str
    key: Hashable
    payload: Any
    size: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None  # when its batch began (the queue wait ends)
    batch_size: int = 0  # texts in the batch it ran in


# a handler scores the payloads of one kind and key together: one result (or exception) per payload
Handler = Callable[[Hashable, list], list]


class Batcher:
    def __init__(self, handlers: dict[str, Handler], max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_start: Callable[[], None] | None = None,
                 on_stop: Callable[[], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.handlers = handlers
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._on_start, self._on_stop = on_start, on_stop
        self.batches = 0  # batches run, for /health
        self._thread = threading.Thread(target=self._run, name="densir-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers
    def submit(self, kind: str, key: Hashable, payload: Any, size: int = 1) -> Job:
        if kind not in self.handlers:
            raise ValueError(f"no handler for {kind!r}")
        job = Job(kind, key, payload, max(int(size), 1))
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are queued, the limit (--max_queue)")
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> bool:
        """Take a job out of the queue (its slot is free at once); False when its batch already runs."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            self._cond.notify_all()  # the worker's wait may have been this job's
        job.future.cancel()
        return True

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker
    def _take(self) -> list[Job] | None:
        with self._cond:
            while True:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return None  # stopping, nothing left
                # the oldest request still queued sets the wait: one cancelled meanwhile has left the queue
                # and no longer cuts short the wait of the next
                left = self._queue[0].queued_at + self.max_wait - time.perf_counter()
                if sum(j.size for j in self._queue) >= self.max_batch or self._stopping or left <= 0:
                    break
                self._cond.wait(left)
            batch, size = [], 0
            while self._queue and (not batch or size + self._queue[0].size <= self.max_batch):
                job = self._queue.popleft()
                batch.append(job)
                size += job.size
            return batch

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        try:
            while (batch := self._take()) is not None:
                self._run_batch(batch)
        finally:
            if self._on_stop is not None:
                self._on_stop()

    def _run_batch(self, batch: list[Job]) -> None:
        now = time.perf_counter()
        jobs = [j for j in batch if j.future.set_running_or_notify_cancel()]
        size = sum(j.size for j in jobs)
        groups: dict[tuple, list[Job]] = {}
        for j in jobs:
            j.started_at, j.batch_size = now, size
            groups.setdefault((j.kind, j.key), []).append(j)
        for (kind, key), group in groups.items():
            try:
                results = self.handlers[kind](key, [j.payload for j in group])
                if len(results) != len(group):
                    raise RuntimeError(f"{kind} handler returned {len(results)} results for {len(group)} requests")
            except Exception as e:  # noqa: BLE001 - handed to each caller, the worker goes on
                logger.exception("%s batch of %d failed", kind, len(group))
                results = [e] * len(group)
            for j, r in zip(group, results):
                if isinstance(r, BaseException):
                    j.future.set_exception(r)
                else:
                    j.future.set_result(r)
        self.batches += 1
