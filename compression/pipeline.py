"""Training batches drawn ahead of the training step, in the order a serial loop draws them.

A thread calls the trainer's ``draw`` (crops as uint8, the batch's codec qualities, pinned for a GPU) and
keeps ``depth`` batches queued, so the step never waits for the sampler. Each draw uses only the sampler's
and the quality generator's own states, so the stream yields exactly the batches a loop drawing them itself
would; each batch carries those states as they were once it was drawn, which is what a checkpoint must store
when the batch has been trained on (the thread has drawn further by then).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    pixels: torch.Tensor  # uint8 Bx3xCxC on the host (pinned when feeding a GPU)
    qualities: list[int]  # the codec quality of each image
    rng_after: dict[str, torch.Tensor]  # the input generators' states once this batch was drawn


@dataclass
class _Failed:
    error: BaseException


class BatchStream:
    """``next()`` returns the batches ``draw()`` makes, drawn by a thread ``depth`` ahead (0: by ``next``)."""

    def __init__(self, draw: Callable[[], Batch], depth: int = 2):
        self.draw = draw
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        if depth:
            self._thread = threading.Thread(target=self._fill, name="shrink-batches", daemon=True)
            self._thread.start()

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                self._put(self.draw())
        except BaseException as error:  # handed to the training thread, which raises it
            self._put(_Failed(error))

    def next(self) -> Batch:
        if self._thread is None:
            return self.draw()
        item = self._queue.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread; batches it drew ahead are dropped (their draws are redone from ``rng_after``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
