"""Every module of the package imports in the environment the project's own files install.

A dependency that a module imports but pyproject does not declare fails here (CI installs into a
fresh virtual environment), instead of hiding behind a package installed by hand.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import diffasr

# __main__ runs the CLI on import, by design.
MODULES = sorted(m.name for m in pkgutil.walk_packages(diffasr.__path__, "diffasr.") if m.name != "diffasr.__main__")


def test_walk_finds_the_package():
    assert "diffasr.pipeline.transcribe" in MODULES and "diffasr.training.corpus.augment" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
