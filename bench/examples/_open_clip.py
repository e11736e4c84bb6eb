"""OpenCLIP's own loss module, for comparisons."""

import importlib.util
from pathlib import Path


def open_clip_losses():
    """OpenCLIP's ``open_clip/loss.py``, loaded from the installed package without running the package's
    ``__init__`` (which imports torchvision, whose wheels need a CUDA build of torch); None if not installed."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
