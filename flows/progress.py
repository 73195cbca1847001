"""Stage timings and counts, told to the Prefect log and to whoever listens.

The CLI listens to print one line per stage; the Prefect UI gets the same line
in the run's log. Stages run in worker threads, so listeners must be cheap and
thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


@dataclass
class StageRecord:
    stage: str
    subject: str
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def counts_text(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.counts.items())

    def line(self) -> str:
        where = f" {self.subject}" if self.subject else ""
        return f"{self.stage}{where}: {self.counts_text()} ({self.seconds:.2f}s)"


_listeners: list[Callable[[StageRecord], None]] = []
_lock = threading.Lock()


def add_listener(listener: Callable[[StageRecord], None]) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[StageRecord], None]) -> None:
    with _lock:
        _listeners.remove(listener)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("memberlink")


@contextmanager
def stage(name: str, subject: str = "") -> Iterator[StageRecord]:
    """Time a stage; the body fills `record.counts`, which are logged on success."""
    record = StageRecord(name, subject)
    started = time.perf_counter()
    yield record
    record.seconds = time.perf_counter() - started
    _logger().info(record.line())
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(record)
