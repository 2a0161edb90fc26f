"""Writing files safely: atomically (a crash or an error never leaves a half-written file under
its name), and JSON that standard parsers read.

Checkpoints, the predictions file and the teacher's e0 cache all go through `atomic_write`;
`remove_stale_temporaries` clears what a killed writer left; metrics files go through
`json_safe`.
"""

import math
import os
import re
import shutil

_TEMPORARY = re.compile(r".+\.tmp\.(\d+)")  # atomic_write's temporary files: <name>.tmp.<pid>


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


def _running(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (this process included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str) -> list:
    """Delete the `<name>.tmp.<pid>` files (`atomic_write`) and folders (the synthetic
    generator's) left in `folder` by a process killed mid-write (SIGKILL skips the clean-up);
    those of a process still running are kept. Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = _TEMPORARY.fullmatch(name)
        if match and not _running(int(match.group(1))):
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
    return removed


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
