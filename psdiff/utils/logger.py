"""Logging setup, the one place it is done: a console line on rank 0 and `log.txt` in a run's
output folder.

Detectron2's `setup_logger` in a few lines: every module logs through
`logging.getLogger(__name__)`, so configuring the "psdiff" logger once captures them all. The
training tools call it through `default_setup`; every other tool calls it first thing.
"""

import logging
import os
import sys

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"


def setup_logger(output: str = None, distributed_rank: int = 0, name: str = "psdiff",
                 console_level: int = logging.INFO):
    """Send `name`'s records to the console and to a log file, on rank 0 only.

    `output` is a folder (the file is `output/log.txt`) or a file path ending in .txt/.log.
    Rank 0's console shows `console_level` and above (a tool whose printed result is its
    output passes WARNING); other ranks print warnings and errors and write no file. Calling it
    again (a new run in the same process) replaces the handlers of the previous call.
    """
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if getattr(h, "_psdiff_run", False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)

    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(console_level if distributed_rank == 0 else logging.WARNING)
    handlers = [console]

    if output is not None and distributed_rank == 0:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        file_handler = logging.FileHandler(filename, mode="a")
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._psdiff_run = True
        logger.addHandler(handler)
    return logger
