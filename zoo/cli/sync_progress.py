"""What `zoo sync` shows while it works: on a terminal, one line per running export under an
overall bar (rich); elsewhere (CI, pipes, ``--json``) no animation, one line (or one JSON
object on stdout) per finished artifact."""

from __future__ import annotations

import json
import os
import sys
from types import TracebackType
from typing import Any


def interactive() -> bool:
    """A terminal a person watches: stderr is a TTY, not CI, not TERM=dumb."""
    return sys.stderr.isatty() and not os.environ.get("CI") and \
        os.environ.get("TERM", "") != "dumb"


class SyncDisplay:
    """``finished(event)`` and ``watch(key, state)`` callbacks for :func:`zoo.sets.sync.sync`,
    used as a context manager (the live display ends with it)."""

    def __init__(self, *, as_json: bool = False, enabled: bool | None = None) -> None:
        self.as_json = as_json
        self.out = sys.stdout  # kept: an engine may redirect sys.stdout while it runs
        self.live = interactive() if enabled is None else enabled
        self.keys: set[str] = set()
        self.counts = {"done": 0, "failed": 0}
        self.running: dict[str, Any] = {}  # key -> rich task id
        self._progress: Any = None
        self._overall: Any = None

    def __enter__(self) -> SyncDisplay:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True)
            self._progress.start()
            self._overall = self._progress.add_task("zoo sync", total=None)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)

    def _refresh(self) -> None:
        if self._progress is None:
            return
        done, failed = self.counts["done"], self.counts["failed"]
        label = f"zoo sync: {done} done, {len(self.running)} running, {failed} failed"
        self._progress.update(self._overall, description=label, total=len(self.keys),
                              completed=done + failed)

    def watch(self, key: str, state: str) -> None:
        """An export's state changed: queued, running, done or failed."""
        self.keys.add(key)
        if self._progress is None:
            if state == "failed":
                self.counts["failed"] += 1
            return
        if state == "running" and key not in self.running:
            self.running[key] = self._progress.add_task(f"  {key}", total=None)
        elif state in ("done", "failed"):
            task = self.running.pop(key, None)
            if task is not None:
                self._progress.remove_task(task)
            if state == "failed":
                self.counts["failed"] += 1
                self._line(f"zoo: failed          {key}")
        self._refresh()

    def finished(self, event: dict[str, Any]) -> None:
        """One artifact is staged (or already in place, or what a dry run would do)."""
        self.keys.add(event["key"])
        self.counts["done"] += 1
        if self.as_json:
            self.out.write(json.dumps(event, sort_keys=True) + "\n")
            self.out.flush()
        else:
            from zoo.cli.output import human_bytes

            size = human_bytes(event["size"]) if event.get("size") is not None else "?"
            self._line(f"zoo: {event['action']:<15} {event['key']}  ({size})")
        self._refresh()
