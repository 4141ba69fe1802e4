"""Print the requirements of this project and the given extras, one per line, from pyproject.toml
alone (python docker/requirements.py serve cpu). The Dockerfiles install these before copying the
source, so that an edit to the code reuses the dependency layer (torch, vLLM, Ray) from cache."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    out = list(project["dependencies"])
    for extra in extras:
        out += project["optional-dependencies"][extra]  # KeyError: no such extra
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    print("\n".join(requirements(Path("pyproject.toml"), sys.argv[1:])))
