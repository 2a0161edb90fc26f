"""The one exception type users see: a single line naming the file, key or value at fault.

Command-line tools catch `PsdiffError` and print its message alone, without a traceback, so
every check of user input (paths, config keys, dataset files, checkpoints) raises it.
"""

import sys


class PsdiffError(Exception):
    """Bad input from the user: the message is one line that names what is wrong and where."""


def exit_status(body, *args, resumable: bool = False) -> int:
    """Run a command-line tool's body and return its exit status: 0, or 2 after printing a
    `PsdiffError` as one `error: ...` line; with `resumable`, Ctrl-C says to use --resume (130)."""
    try:
        body(*args)
    except PsdiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if not resumable:
            raise
        # the first Ctrl-C saves and says where; a second one (Python's own, empty) stops at once
        reason = str(e) or "stopped at once, without saving this iteration"
        print(f"interrupted: {reason}; continue with --resume", file=sys.stderr)
        return 130
    return 0
