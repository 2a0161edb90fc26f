"""Load a script of tools/ as a module, without putting tools/ on sys.path (it is no package)."""

import importlib.util
import os

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def load_tool(name: str):
    """tools/<name>.py as a fresh module (its `main(argv)` or `run(argv)` runs it in-process)."""
    path = os.path.join(TOOLS, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
