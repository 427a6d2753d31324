"""The user's mistakes, told apart from the library's: :class:`UserError` and its three kinds.

Everything a user can get wrong (a setting, a path, a file's contents, an output folder in use) raises a subclass of
:class:`UserError`; the command line (``python -m anncore``) prints its message as one line and exits with status 2,
and any other exception keeps its traceback, since it is a bug to report. ``--debug`` shows the traceback of both.
Each kind also derives from the built-in exception that callers of the Python API already catch (``ValueError``,
``FileNotFoundError``, ``FileExistsError``).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave is wrong; the message names the file, parameter or value and what was expected."""


class BadInput(UserError, ValueError):
    """A value, setting or file content is not what was expected."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputInUse(UserError, FileExistsError):
    """An output folder or file is taken: it holds another run, or another process is writing it."""
