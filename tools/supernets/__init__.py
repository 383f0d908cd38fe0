"""Weight-sharing supernets: elastic networks whose subnets inherit trained weights.

Now: the once-for-all MobileNetV3 supernet (``OFAMobileNetV3``, official state-dict names, so the
published checkpoints load strictly) and ``extract_subnet``, which cuts a static subnet with
inherited weights out of a checkpoint.
"""

from archsmith.tools.supernets.extract import extract_subnet, load_checkpoint, load_supernet, supernet_settings
from archsmith.tools.supernets.ofa_layers import MobileNetV3, count_params
from archsmith.tools.supernets.ofa_mbv3 import OFAArch, OFAMbv3Settings, OFAMobileNetV3

__all__ = [
    "MobileNetV3",
    "OFAArch",
    "OFAMbv3Settings",
    "OFAMobileNetV3",
    "count_params",
    "extract_subnet",
    "load_checkpoint",
    "load_supernet",
    "supernet_settings",
]
