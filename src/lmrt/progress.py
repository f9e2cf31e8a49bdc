"""Progress on stderr for work a user waits on: numbered steps, each with its time, and bars where the
work can be counted. On a terminal a step's line shows its running time while it works; elsewhere (logs,
pipes) each step prints one line when it starts and one when it ends."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")
_TICK_S = 0.5


class Steps:
    """``num_steps`` numbered steps: ``with steps.step("tokenizer"):`` or ``for x in steps.bar(xs, "weights")``."""

    def __init__(self, num_steps: int, out: Optional[TextIO] = None):
        self.num_steps, self.done = num_steps, 0
        self.out = out or sys.stderr
        self.live = bool(getattr(self.out, "isatty", lambda: False)())

    def _label(self, what: str) -> str:
        self.done += 1
        return f"  [{self.done}/{self.num_steps}] {what}"

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """A step whose work cannot be counted: its label, then its time when it ends."""
        label, start = self._label(what), time.monotonic()
        stop = threading.Event()
        if self.live:

            def tick() -> None:
                while not stop.wait(_TICK_S):
                    self.out.write(f"\r{label} ... {time.monotonic() - start:.0f} s")
                    self.out.flush()

            ticker = threading.Thread(target=tick, daemon=True)
            self.out.write(f"{label} ...")
            self.out.flush()
            ticker.start()
        else:
            self.out.write(f"{label} ...\n")
            self.out.flush()
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            if self.live:
                ticker.join()
            end = f"done in {time.monotonic() - start:.1f} s" if ok else "failed"
            self.out.write(f"\r{label} ... {end}\n" if self.live else f"{label} ... {end}\n")
            self.out.flush()

    def bar(self, items: Iterable[T], what: str, total: Optional[int] = None, unit: str = "it") -> Iterator[T]:
        """A step over counted work: a progress bar."""
        from tqdm import tqdm

        label = self._label(what)
        yield from tqdm(
            items, desc=label, total=total, unit=unit, file=self.out, leave=True, mininterval=0.2 if self.live else 5.0
        )
