"""Exceptions raised by the library; the CLI turns them into one line on stderr.

Messages name the library's parameters (``max_iter``), never command-line flags; an error
lists the parameters its message names in ``params`` so that the command line can print
its own flag names instead (``max_iter`` -> ``--max-iter``).
"""

from __future__ import annotations

from collections.abc import Sequence


class DeepGMMError(Exception):
    """Base class of every error the library raises on purpose.

    Args:
        message: what went wrong, naming the parameters, files or slices concerned.
        params: the parameter names the message mentions.
    """

    def __init__(self, message: str = "", *, params: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.params: tuple[str, ...] = tuple(params)


class InputError(DeepGMMError, ValueError):
    """A file, argument or array is not what was expected. The message names it."""


class CheckpointError(DeepGMMError):
    """A checkpoint is corrupt or does not match the data it is applied to."""


class FitError(DeepGMMError):
    """A fit could not be carried out on valid input: it diverged or ran out of memory."""


class OutputError(InputError):
    """An output could not be written (read-only folder, full disk, no permission). The
    message names the path and the reason; nothing partial is left under its name."""
