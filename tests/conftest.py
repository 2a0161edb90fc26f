"""Root of the test tree: being a conftest.py outside any package, pytest puts tests/ on sys.path,
so every test folder imports the shared helpers `tools_loader` and `tiny_config` by name.

A tool run in-process calls `setup_logger`, whose console handler holds the `sys.stdout` of that
moment: pytest's capture stream of that test, closed when the test ends. The handlers are
dropped after every test, so a later test's log records never meet a closed stream (logging
would print "--- Logging error ---" into that test's captured stderr).

Without a CUDA GPU the session runs Triton kernels in Triton's CPU interpreter: Triton reads
TRITON_INTERPRET once, when it is first imported, so it is set here, before any test imports it.
"""

import logging
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _drop_psdiff_log_handlers():
    yield
    logger = logging.getLogger("psdiff")
    for handler in [h for h in logger.handlers if getattr(h, "_psdiff_run", False)]:
        logger.removeHandler(handler)
        handler.close()
