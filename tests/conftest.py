"""Root of the test tree: being a conftest.py outside any package, pytest puts tests/ on sys.path,
so every test folder imports the shared helpers `tools_loader` and `tiny_config` by name.

Without a CUDA GPU the session runs Triton kernels in Triton's CPU interpreter: Triton reads
TRITON_INTERPRET once, when it is first imported, so it is set here, before any test imports it.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
