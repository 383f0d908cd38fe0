"""Module mining: find ``nn.Module`` classes in real code, probe them in the sandbox, store them.

:func:`~archsmith.tools.modules.mining.mine` parses sources with ``ast`` (never importing them in
this process), :mod:`~archsmith.tools.modules.probe` builds and runs each class in the sandbox,
and :class:`~archsmith.tools.modules.library.ModuleLibrary` keeps the records (LLMasTool's
"modules mined from arbitrary source code").
"""

from __future__ import annotations

from archsmith.tools.modules.library import ModuleLibrary, default_library_path
from archsmith.tools.modules.mining import (
    ArgInfo,
    MiningError,
    MiningReport,
    ModuleRecord,
    SkippedFile,
    mine,
    probe_records,
    resolve_source,
)

__all__ = [
    "ArgInfo", "MiningError", "MiningReport", "ModuleLibrary", "ModuleRecord", "SkippedFile",
    "default_library_path", "mine", "probe_records", "resolve_source",
]  # fmt: skip
