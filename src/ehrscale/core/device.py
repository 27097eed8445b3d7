"""The torch device a job runs on, from a setting such as ``auto``, ``cpu``, ``cuda`` or ``cuda:1``."""

from __future__ import annotations

from ehrscale.core.errors import EhrscaleError


def pick_device(name: str, setting: str):
    """``auto`` takes CUDA when present; asking for CUDA without it is an error naming ``setting``."""
    import torch  # here, not at import: planning and the DAG import this package without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise EhrscaleError(f"{setting}: {name!r} is not a device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EhrscaleError(f"{setting} is {name!r} but CUDA is not available")
    return device
