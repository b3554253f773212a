"""The server's dynamic batcher: requests that arrive within `max_wait_s` of the first (up to
`max_batch`) with equal DecodeOptions are decoded by one `transcribe()` call, in one worker thread,
so the event loop never runs model code. `Metrics` counts what /metrics reports.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..decoding import DecodeOptions
from ..errors import DiffasrError
from ..pipeline.transcribe import Transcription, transcribe

log = logging.getLogger("diffasr.serve")


@dataclass(eq=False)  # compared by identity: `in`/`remove` on the queue must not compare arrays
class _Job:
    audio: np.ndarray
    options: DecodeOptions
    future: asyncio.Future
    queued: float  # loop.time() at submission


@dataclass
class Metrics:
    started: float = field(default_factory=time.time)
    responses: collections.Counter = field(default_factory=collections.Counter)  # status code -> count
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)  # jobs per batch -> count
    batches: int = 0
    items: int = 0
    model_seconds: float = 0.0
    audio_seconds: float = 0.0
    in_flight: int = 0


class Batcher:
    """Queue of decode jobs; a single loop groups them and runs each group in the model thread.

    A group is the oldest pending job plus every later job with equal options, closed when it holds
    `max_batch` jobs or when the oldest has waited `max_wait_s`. Jobs with other options wait for a
    later group; none is dropped or reordered within its options.
    """

    def __init__(self, model, max_batch: int, max_wait_s: float, metrics: Metrics):
        self.model, self.max_batch, self.max_wait_s, self.metrics = model, max_batch, max_wait_s, metrics
        self.pending: collections.deque[_Job] = collections.deque()
        self.wakeup = asyncio.Event()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="diffasr-model")  # torch work stays on one thread
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="diffasr-batcher")

    async def close(self) -> None:
        """Finish the jobs already queued, then stop (uvicorn calls this after in-flight requests end)."""
        while self.pending and self.task and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.worker.shutdown(wait=True)

    async def submit(self, audio: np.ndarray, options: DecodeOptions) -> tuple[Transcription, int]:
        """Decode one array; returns its Transcription and the size of the batch it ran in."""
        loop = asyncio.get_running_loop()
        job = _Job(audio, options, loop.create_future(), loop.time())
        self.pending.append(job)
        self.wakeup.set()
        try:
            return await job.future
        finally:
            if job in self.pending:  # its request timed out or went away: nobody waits for it
                self.pending.remove(job)
                self.wakeup.set()

    def _group(self) -> list[_Job]:
        # a job whose request timed out or went away is dropped, not decoded for nobody
        for j in [j for j in self.pending if j.future.done()]:
            self.pending.remove(j)
        if not self.pending:
            return []
        first = self.pending[0]
        return [j for j in self.pending if j.options == first.options][: self.max_batch]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            if not self._group():
                continue
            deadline = self.pending[0].queued + self.max_wait_s
            while self.pending and len(self._group()) < self.max_batch and (left := deadline - loop.time()) > 0:
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), left)
            jobs = self._group()
            if not jobs:
                continue
            for j in jobs:
                self.pending.remove(j)
            await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        options = jobs[0].options
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.worker, self._decode, [j.audio for j in jobs], options)
        except Exception as e:
            if len(jobs) > 1:  # find the culprit: the others must not fail with it
                log.warning("batch of %d failed (%r); decoding its requests one by one", len(jobs), e)
                for j in jobs:
                    await self._run([j])
                return
            if not isinstance(e, DiffasrError):
                log.exception("decoding failed")
            if not jobs[0].future.done():
                jobs[0].future.set_exception(e)
            return
        seconds = time.perf_counter() - t0
        audio_s = sum(r.duration for r in results)
        m = self.metrics
        m.batches += 1
        m.items += len(jobs)
        m.batch_sizes[len(jobs)] += 1
        m.model_seconds += seconds
        m.audio_seconds += audio_s
        log.info("batch size=%d audio=%.1fs steps=%d seconds=%.3f", len(jobs), audio_s, options.steps, seconds)
        for j, r in zip(jobs, results):
            if not j.future.done():  # the client may have gone away
                j.future.set_result((r, len(jobs)))

    def _decode(self, audios: list[np.ndarray], options: DecodeOptions) -> list[Transcription]:
        return transcribe(self.model, audios, options=options, batch_size=self.max_batch)
