"""Finding the first NaN or inf in arrays of rows grouped by offsets (image i owns the rows
`offsets[i]:offsets[i+1]`), so files read from disk can be refused naming the image at fault.

Shared by the predictions file and the teacher's e0 cache.
"""

import numpy as np

_CHUNK_ROWS = 1 << 16  # rows checked at a time: a full-size gallery holds millions


def first_non_finite_row(array: np.ndarray) -> int:
    """Index of the first row (along axis 0) holding NaN or inf, or -1."""
    if not array.size:
        return -1
    rows = array.reshape(len(array), -1)
    for start in range(0, len(rows), _CHUNK_ROWS):
        bad = ~np.isfinite(rows[start: start + _CHUNK_ROWS]).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return -1


def first_non_finite_value(row: np.ndarray) -> float:
    """The first NaN or inf of a row that has one."""
    values = np.asarray(row, dtype=np.float64).ravel()
    return float(values[~np.isfinite(values)][0])


def owner_of_row(offsets: np.ndarray, row: int) -> int:
    """The index i of the group (image) whose rows `offsets[i]:offsets[i+1]` hold `row`."""
    return int(np.searchsorted(offsets, row, side="right")) - 1
