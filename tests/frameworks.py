"""The frameworks the integrations are tested against (optional extras): a missing one skips its tests on a
user's machine and fails them under CI (the ``CI`` variable set), which installs them all."""

import importlib
import os

import pytest

from bench.examples._open_clip import open_clip_losses


def require(module_name):
    """``module_name`` imported, or the calling test module skipped (failed under CI)."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        if os.environ.get("CI"):
            pytest.fail(f"{module_name} must be installed under CI: {error}", pytrace=False)
        pytest.skip(f"{module_name} is not installed", allow_module_level=True)


def require_open_clip_losses():
    module = open_clip_losses()
    if module is None:
        if os.environ.get("CI"):
            pytest.fail("open_clip_torch must be installed under CI (pip install --no-deps open_clip_torch)")
        pytest.skip("open_clip_torch is not installed", allow_module_level=True)
    return module
