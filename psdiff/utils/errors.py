"""The one exception type users see: a single line naming the file, key or value at fault.

Command-line tools catch `PsdiffError` and print its message alone, without a traceback, so
every check of user input (paths, config keys, dataset files, checkpoints) raises it.
"""


class PsdiffError(Exception):
    """Bad input from the user: the message is one line that names what is wrong and where."""
