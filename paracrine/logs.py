"""The `paracrine` logger: notes (INFO) and warnings of the commands on stderr.

Every message of the application goes through `logging.getLogger("paracrine")` (children by
command: `paracrine.run`, `paracrine.fit`, ...), one line each, prefixed with the command. The
handler writes to whatever `sys.stderr` is at the time (so captured streams see it) and is
installed once, at import; `configure(verbosity)` (the CLI's `-q`/`-v`) or the standard logging
API (`logging.getLogger("paracrine").setLevel(logging.WARNING)`) choose what is shown. Errors
that end a command are not logged but printed by the CLI as its last line.
"""

from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("paracrine")
#: verbosity (the CLI's -q: -1, default: 0, -v: 1, -vv: 2) -> level
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Stderr(logging.Handler):
    """One line per record on the current sys.stderr: 'paracrine run: message' ('warning: ' for warnings)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            command = record.name.split(".", 1)[1] if "." in record.name else ""
            head = f"paracrine {command}: " if command else "paracrine: "
            kind = "warning: " if record.levelno == logging.WARNING else ("debug: " if record.levelno < logging.INFO else "")
            print(head + kind + record.getMessage(), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


if not any(isinstance(h, _Stderr) for h in LOG.handlers):
    LOG.addHandler(_Stderr())
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


def logger(command: str) -> logging.Logger:
    """The logger of one command (`paracrine.run`, ...)."""
    return logging.getLogger(f"paracrine.{command}")


def configure(verbosity: int) -> None:
    """-q (-1): warnings only; 0: notes and warnings; -v (1 or more): debug details too."""
    LOG.setLevel(LEVELS[max(-1, min(1, verbosity))])
