"""One error policy for every command (``python -m pipeline <command>``).

An *expected* failure (a bad file, an unknown key or name, a bad row, a missing run dir, a run name
already taken, a pickled weights file, ...) is raised as a :class:`UserError`. Its message is one line
that names the file / key / row and says what to do. The dispatcher (``pipeline/__main__.py``) catches
it in one place, prints ``<command>: error: <message>`` and exits 2; ``--debug`` shows the traceback.

The error types of the stages join this family (``CorpusError``, ``ConfigError``, ``PredictError``,
``WeightsError``, ...) and keep their old built-in bases (``ValueError``, ``KeyError``,
``FileNotFoundError``) so callers that catch those still do. Anything else that escapes a command is
a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
import traceback

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input the user can fix. The message names the file / key / row and what to do."""

    def __str__(self) -> str:  # KeyError would quote the message; one plain line for every subtype
        return str(self.args[0]) if self.args else type(self).__name__


class UserValueError(UserError, ValueError):
    """A bad value in a file or an argument."""


class UnknownName(UserError, KeyError):
    """An unknown registered name (corpus, encoder, method) or key (feature column, catalog entry)."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder that should be there is not (run dir, cache, corpus file)."""


class AlreadyExists(UserError, FileExistsError):
    """Something the command would create is already there (a run dir of that name)."""


# OSErrors about a named path are expected too: the path and the OS' reason make the one line.
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def user_message(exc: BaseException) -> str | None:
    """The one line to print for an expected failure, or ``None`` when ``exc`` is a bug (traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, _PATH_ERRORS):
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror or exc}"
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return None  # decoding is the readers' job (pipeline.corpora.common.read_text); escaping here is a bug
    return None


def run_command(command: str, func, argv: list[str], *, debug: bool = False) -> int:
    """Run one command's ``cli(argv)`` under the policy: expected failures -> one line on stderr, exit 2."""
    try:
        return int(func(argv) or 0)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into expected (one line) and bugs (re-raised) below
        message = user_message(e)
        if message is None or debug:
            if message is not None:
                traceback.print_exc()
                print(f"{command}: error: {message}", file=sys.stderr)
                return EXIT_USER_ERROR
            raise
        one_line = " ".join(message.split())
        print(f"{command}: error: {one_line}  (--debug shows the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
