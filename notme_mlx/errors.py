"""User-facing errors: one clear line, non-zero exit.

Library code raises `NotmeError` (or a subclass) with a message that names the
file, the place and the fix; the CLI prints it as one line and exits with
`exit_code`. `assert` stays for internal invariants.
"""


class NotmeError(Exception):
    """A user mistake or bad input. The message is shown as one line."""

    exit_code = 1


class InputError(NotmeError):
    """Bad input file or record (names the file and line/record)."""


class ConfigError(NotmeError):
    """Bad recipe or option value."""

