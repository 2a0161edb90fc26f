"""Writing files atomically: a crash or an error never leaves a half-written file under its name.

Checkpoints, the predictions file and the teacher's e0 cache all go through `atomic_write`.
"""

import os


def atomic_write(path: str, write_fn) -> None:
    """Call `write_fn(file)` on a temporary binary file beside `path`, sync it, then rename it
    to `path`; on any error the temporary file is removed and `path` is untouched."""
    tmp_path = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp_path, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
