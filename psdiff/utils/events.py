"""Training metrics: an event storage the loop and hooks write scalars to, and its writers.

Detectron2's pattern: code anywhere in a training step calls `get_event_storage().put_scalar`;
writers periodically turn the latest values into a console line, `metrics.json` (one JSON
object per iteration) and TensorBoard events.
"""

import datetime
import json
import logging
import os
import resource
from collections import defaultdict

import torch
from fvcore.common.history_buffer import HistoryBuffer

from .io import json_safe

logger = logging.getLogger(__name__)

_CURRENT_STORAGE_STACK = []


def get_event_storage() -> "EventStorage":
    """The storage of the training loop that is running (inside `with EventStorage(...)`)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a `with EventStorage(...)`")
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalars by name, each a history of (value, iteration), plus the current iteration and
    the one training started (or resumed) at."""

    def __init__(self, start_iter: int = 0):
        self._history = defaultdict(HistoryBuffer)
        self._smoothing_hints = {}
        self._latest_scalars = {}
        self._iter = start_iter
        self.start_iter = start_iter

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        """Record `value` for `name` at the current iteration. `smoothing_hint` tells writers
        to report the window median (losses) rather than the last value (lr, eval metrics)."""
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, self._iter)
        self._latest_scalars[name] = (value, self._iter)
        previous_hint = self._smoothing_hints.setdefault(name, smoothing_hint)
        if previous_hint != smoothing_hint:
            raise ValueError(f"scalar {name!r} was put with two different smoothing hints")

    def put_scalars(self, *, smoothing_hint: bool = True, **scalars) -> None:
        """Several `put_scalar` calls at once."""
        for name, value in scalars.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        """The full history of one scalar."""
        if name not in self._history:
            raise KeyError(f"no history for scalar {name!r}")
        return self._history[name]

    def histories(self) -> dict:
        return self._history

    def latest(self) -> dict:
        """name -> (last value, iteration it was put at)."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict:
        """Like `latest()`, with smoothed scalars replaced by their median over `window_size`."""
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(window_size)
            result[name] = (value, itr)
        return result

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    def __enter__(self):
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Something that turns the storage's latest values into output; `write()` each period."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _new_scalars_by_iter(storage: EventStorage, last_write: int, window_size: int) -> dict:
    """iteration -> {name: value} for the scalars put after iteration `last_write`."""
    by_iter = defaultdict(dict)
    for name, (value, itr) in storage.latest_with_smoothing_hint(window_size).items():
        if itr > last_write:
            by_iter[itr][name] = value
    return dict(sorted(by_iter.items()))


def _truncate_from(path: str, start_iter: int) -> None:
    """Cut the JSON-lines file `path` (if any) before its first line of an iteration >=
    `start_iter`, or its first unreadable line (a write cut short by a crash)."""
    if not os.path.exists(path):
        return
    with open(path, "r+b") as f:
        keep = 0
        for line in f:
            try:
                if json.loads(line)["iteration"] >= start_iter:
                    break
            except (ValueError, KeyError, TypeError):
                break
            keep += len(line)
        f.truncate(keep)


class JSONWriter(EventWriter):
    """Appends one JSON object per iteration with its new scalars to `metrics.json`.

    The file is opened at the first write, after dropping its lines from the storage's
    `start_iter` on: a run resumed after a crash overwrites what the crashed run logged past
    its last checkpoint, so the file reads as one clean run (a fresh run starts it anew)."""

    def __init__(self, json_file: str, window_size: int = 20):
        self._json_file = json_file
        self._file_handle = None
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        if self._file_handle is None:
            _truncate_from(self._json_file, storage.start_iter)
            self._file_handle = open(self._json_file, "a")
        new = _new_scalars_by_iter(storage, self._last_write, self._window_size)
        for itr, scalars in new.items():
            line = json.dumps(json_safe({"iteration": itr, **scalars}), sort_keys=True)
            self._file_handle.write(line + "\n")
            self._last_write = itr
        self._file_handle.flush()
        os.fsync(self._file_handle.fileno())

    def close(self) -> None:
        if self._file_handle is not None:
            self._file_handle.close()


class TensorboardXWriter(EventWriter):
    """Writes the new scalars as TensorBoard events under `log_dir`."""

    def __init__(self, log_dir: str, window_size: int = 20):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new = _new_scalars_by_iter(storage, self._last_write, self._window_size)
        for itr, scalars in new.items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, itr)
            self._last_write = itr
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """The console line: ETA, iteration, every loss, time/iter, data time, lr and max memory."""

    def __init__(self, max_iter: int, window_size: int = 20):
        self._max_iter = max_iter
        self._window_size = window_size

    def _eta(self, storage: EventStorage) -> str:
        """Remaining time from the median iteration time (the IterationTimer hook's "time")."""
        if "time" not in storage.histories():
            return "N/A"
        seconds = storage.history("time").median(1000) * (self._max_iter - storage.iter - 1)
        return str(datetime.timedelta(seconds=int(seconds)))

    def write(self) -> None:
        storage = get_event_storage()
        histories = storage.histories()
        if storage.iter >= self._max_iter or "total_loss" not in histories:
            return  # after training only evaluation results are new; before, nothing is

        def median(name):
            return histories[name].median(self._window_size) if name in histories else None

        losses = "  ".join(
            f"{name}: {histories[name].median(self._window_size):.4g}"
            for name in sorted(histories) if "loss" in name
        )
        iter_time, data_time = median("time"), median("data_time")
        lr = histories["lr"].latest() if "lr" in histories else None
        if torch.cuda.is_available():  # peak tensor memory on this rank's GPU
            memory = f"  max_mem: {torch.cuda.max_memory_allocated() / 1024**2:.0f}M"
        else:  # peak resident memory of this process (Linux reports KiB)
            memory = f"  max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}M"
        logger.info(
            f" eta: {self._eta(storage)}  iter: {storage.iter}  {losses}"
            + (f"  time: {iter_time:.4f}" if iter_time is not None else "")
            + (f"  data_time: {data_time:.4f}" if data_time is not None else "")
            + (f"  lr: {lr:.5g}" if lr is not None else "")
            + memory
        )
