"""Weight-sharing supernets: elastic networks whose subnets inherit trained weights.

Now: the once-for-all MobileNetV3 supernet (``OFAMobileNetV3``) and the SPOS ShuffleNetV2
supernet (``SPOSShuffleNetV2``), both with official state-dict names, so the published
checkpoints load strictly, and ``extract_subnet``, which cuts a static subnet with inherited
weights out of a checkpoint of either. ``ofa_arch`` and ``spos_arch`` (archs, settings,
closed-form sizes) need no torch; the names below are imported on first use, so importing this
package does not import torch either.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "extract_subnet": "extract",
    "load_checkpoint": "extract",
    "load_supernet": "extract",
    "supernet_settings": "extract",
    "MobileNetV3": "ofa_layers",
    "count_params": "ofa_layers",
    "OFAMobileNetV3": "ofa_mbv3",
    "build_static_subnet": "ofa_mbv3",
    "OFAArch": "ofa_arch",
    "OFAMbv3Settings": "ofa_arch",
    "subnet_param_count": "ofa_arch",
    "SPOSShuffleNetV2": "spos_shufflenet",
    "SPOSSubnet": "spos_shufflenet",
    "build_spos_subnet": "spos_shufflenet",
    "spos_subnet_with_weights": "spos_shufflenet",
    "SPOSArch": "spos_arch",
    "SPOSSettings": "spos_arch",
    "spos_param_count": "spos_arch",
    "spos_macs": "spos_arch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
