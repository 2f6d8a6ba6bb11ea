"""Keep converters' progress bars and native log lines out of zoo's terminal output.

coremltools (tqdm), litert-torch (rich) and their C++ cores (absl logging) print while they
convert. :func:`quiet_output` sends file descriptors 1 and 2 (and Python's ``sys.stdout`` /
``sys.stderr``) to a temporary file for the duration; when the block fails, the captured
tail is attached to the exception as a note, so nothing that explains a failure is lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

TAIL_CHARS = 2000


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Silence fds 1 and 2 inside the block; on an exception, add the captured tail."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        py_out, py_err = sys.stdout, sys.stderr
        text = open(sink.fileno(), "w", closefd=False, encoding="utf-8",  # noqa: SIM115
                    errors="replace")
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            sys.stdout = sys.stderr = text
            yield
        except BaseException as exc:
            text.flush()
            sink.seek(0)
            tail = sink.read().decode("utf-8", "replace")[-TAIL_CHARS:].strip()
            if tail:
                exc.add_note(f"converter output (last {TAIL_CHARS} characters):\n{tail}")
            raise
        finally:
            text.flush()
            sys.stdout, sys.stderr = py_out, py_err
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            text.close()
