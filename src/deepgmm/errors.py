"""Exceptions raised by the library; the CLI turns them into one line on stderr."""

from __future__ import annotations


class DeepGMMError(Exception):
    """Base class of every error the library raises on purpose."""


class InputError(DeepGMMError, ValueError):
    """A file, argument or array is not what was expected. The message names it."""


class CheckpointError(DeepGMMError):
    """A checkpoint is corrupt or does not match the data it is applied to."""


class FitError(DeepGMMError):
    """A fit could not be carried out on valid input: it diverged or ran out of memory."""
