"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations


class PrunekitError(Exception):
    """A user-facing failure: bad input, bad option, unavailable plugin.

    The CLI prints ``str(err)`` on one line and exits with ``exit_code``
    (1 = failure, 2 = usage error). Never raised for programming errors.
    """

    exit_code = 1


class UsageError(PrunekitError):
    """A wrong option or option value (exit code 2)."""

    exit_code = 2


class InputError(PrunekitError):
    """A file that cannot be read as what it claims to be (exit code 1).

    The message names the file, the field and what was expected.
    """


class PluginError(PrunekitError):
    """A plugin that is unknown, disabled or failed to load."""


class PluginUsageError(PluginError, UsageError):
    """A plugin name that is unknown, or a plugin asked for what it does not do (exit code 2)."""

    exit_code = 2


def run_script(main) -> None:
    """Exit with ``main()``'s return code; a :class:`PrunekitError` becomes one stderr line
    (``error: ...``) and its ``exit_code``. The ``__main__`` guard of the scripts under ``scripts/``."""
    import sys

    try:
        code = main()
    except PrunekitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    sys.exit(code)
