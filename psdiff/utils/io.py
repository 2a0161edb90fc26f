"""Writing files safely: atomically (a crash or an error never leaves a half-written file under
its name), and JSON that standard parsers read.

Checkpoints, the predictions file and the teacher's e0 cache all go through `atomic_write`;
metrics files go through `json_safe`.
"""

import math
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


def json_safe(value):
    """`value` with every NaN or infinite float (nested in dicts and lists) replaced by None:
    `json.dumps` would write them as NaN / Infinity, which is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
