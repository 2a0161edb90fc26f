"""Installs psdiff; the dependencies are read from requirements.txt (one list for pip and us)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements():
    """(runtime, test) requirements: requirements.txt lists the test ones after '# Tests'."""
    runtime, test = [], []
    current = runtime
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if line == "# Tests":
            current = test
        elif line and not line.startswith("#"):
            current.append(line.split("#")[0].strip())
    return runtime, test


RUNTIME, TEST = requirements()


setup(
    name="psdiff",
    version="0.1.0",
    description="Person search with PSDiff: a diffusion model over boxes and ReID embeddings",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["psdiff", "psdiff.*"]),
    install_requires=RUNTIME,
    extras_require={"test": TEST},
)
