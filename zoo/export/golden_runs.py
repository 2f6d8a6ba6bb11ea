"""Running the golden inputs through a model during an export: the specs, the runs (here or
on a second thread while the exporter prepares), and their manifest summaries."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from zoo.catalog.schema import ModelCard
from zoo.export.manifest import GoldenCase, GoldenInput, GoldenOutput

GOLDEN_MAX_SIDE = 256
GOLDEN_SEEDS = {"noise": 0, "scene": 1}
#: Side of the noise input as a share of the scene input's, for models that take any size:
#: the noise case checks the numbers (every op, at any size), the scene case the labels
#: (argmax agreement on a natural-looking image), so only the scene needs the larger input.
NOISE_SIDE = 0.5
#: Python's GIL switch interval (seconds) while golden inputs run on background threads.
SWITCH_INTERVAL = 0.0005


def golden_shape(input_size: tuple[int, int], static: bool) -> list[int]:
    """The scene input's shape: the export size, scaled down to keep the check fast.

    Fully convolutional models give the same per-pixel function at any size; a traced or
    statically exported model is shape-specialised, so it keeps the export size.
    """
    h, w = input_size
    longest = max(h, w)
    if static or longest <= GOLDEN_MAX_SIDE:
        return [1, 3, h, w]
    return [1, 3, *_scaled((h, w), GOLDEN_MAX_SIDE / longest)]


def _scaled(sides: tuple[int, int], scale: float) -> list[int]:
    return [max(32, round(side * scale / 16) * 16) for side in sides]


def golden_specs(card: ModelCard, input_size: tuple[int, int],
                 static: bool) -> dict[str, GoldenInput]:
    """The golden inputs (noise and scene) with the card's preprocessing: the scene at
    :func:`golden_shape`, the noise at :data:`NOISE_SIDE` of it unless ``static``."""
    pre = card.preprocessing
    scene = golden_shape(input_size, static)
    noise = scene if static else [1, 3, *_scaled((scene[2], scene[3]), NOISE_SIDE)]
    shapes = {"noise": noise, "scene": scene}
    return {name: GoldenInput(kind=name, seed=seed,  # type: ignore[arg-type]
                              shape=shapes[name], scale=pre.scale_divisor,
                              mean=list(pre.mean), std=list(pre.std))
            for name, seed in GOLDEN_SEEDS.items()}


def run_cases(fn: Callable[..., Any], specs: dict[str, GoldenInput]) -> dict[str, Any]:
    """``{case: (input, output)}`` of ``fn`` on each golden input, without autograd."""
    import torch

    from zoo.export.golden import golden_input

    results = {}
    with torch.no_grad():
        for name, spec in specs.items():
            x = golden_input(spec.model_dump())
            results[name] = (x, fn(x))
    return results


def summaries(results: dict[str, Any], specs: dict[str, GoldenInput],
              key: str | None) -> list[GoldenCase]:
    """The manifest's golden cases from :func:`run_cases` results (``key``: the dict output's
    key to summarise, or None for a bare tensor)."""
    from zoo.export.golden import select_output, summarize

    return [GoldenCase(name=name, input=specs[name],
                       output=GoldenOutput(**summarize(select_output(results[name][1], key),
                                                       specs[name].seed)))
            for name in specs]


class BackgroundCases:
    """:func:`run_cases` on background threads, one per golden input, so the eager golden
    runs (each on one torch thread, for reproducible sums) overlap the exporter's ``prepare``
    and each other on the machine's other cores.

    Each thread runs on the caller's torch thread count (set again there: OpenMP keeps it
    per thread) inside ``contain`` (the plugin_code block that names the builder's mistakes);
    the first exception, in the specs' order, is raised by :meth:`result`.
    """

    def __init__(self, fn: Callable[..., Any], specs: dict[str, GoldenInput],
                 contain: Callable[[], Any]) -> None:
        import torch

        self._threads = torch.get_num_threads()
        self._outcomes: dict[str, tuple[bool, Any]] = {}
        self._order = list(specs)
        self._workers = [threading.Thread(target=self._run, args=(fn, name, spec, contain),
                                          name=f"zoo-golden-{name}", daemon=True)
                         for name, spec in specs.items()]
        self._turns: contextlib.ExitStack | None = contextlib.ExitStack()
        self._turns.enter_context(short_gil_turns())
        try:
            for worker in self._workers:
                worker.start()
        except BaseException:
            self.close()
            raise

    def _run(self, fn: Callable[..., Any], name: str, spec: GoldenInput,
             contain: Callable[[], Any]) -> None:
        import torch

        torch.set_num_threads(self._threads)
        try:
            with contain():
                self._outcomes[name] = (True, run_cases(fn, {name: spec})[name])
        except BaseException as exc:  # handed to the caller by result()
            self._outcomes[name] = (False, exc)

    def result(self) -> dict[str, Any]:
        """Wait for the runs; their results (as :func:`run_cases` gives them), or the first
        exception raised here."""
        try:
            for worker in self._workers:
                worker.join()
        finally:
            self.close()
        results = {}
        for name in self._order:
            done, value = self._outcomes[name]
            if not done:
                raise value
            results[name] = value
        return results

    def close(self) -> None:
        """Give back the short GIL turns (idempotent; :meth:`result` does it, and callers
        call it on every other way out, e.g. when prepare raised or the user interrupted):
        threads still running finish on their own (daemons)."""
        if self._turns is not None:
            self._turns.close()
            self._turns = None


_turns_lock = threading.Lock()
_turns_users = 0
_turns_saved = 0.0


@contextlib.contextmanager
def short_gil_turns() -> Iterator[None]:
    """Python's GIL switch interval at :data:`SWITCH_INTERVAL` for the block: each op of an
    eager forward on a background thread returns to Python and waits for the GIL, which a
    Python-heavy main thread (scripting) holds for up to the interval (5 ms by default), so
    the runs would wait about as long as they compute. Blocks nest and overlap across
    threads (exports in threads of one process): the first in sets it, the last out puts
    the saved value back."""
    global _turns_users, _turns_saved
    with _turns_lock:
        if _turns_users == 0:
            _turns_saved = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        _turns_users += 1
    try:
        yield
    finally:
        with _turns_lock:
            _turns_users -= 1
            if _turns_users == 0:
                sys.setswitchinterval(_turns_saved)
