"""Search spaces. Importing this package registers the built-in spaces."""

from archsmith.tools.spaces.base import (
    EnumerableSpace,
    Mutation,
    SearchSpace,
    SpaceError,
    Validation,
    ValidationIssue,
    check_task,
    get_space,
    local_operators,
    register_space,
    space_names,
)
from archsmith.tools.spaces import template as _template  # noqa: F401,E402  (registers "template")
from archsmith.tools.spaces import nb201 as _nb201, positions as _positions  # noqa: F401,E402
from archsmith.tools.spaces import code as _code  # noqa: F401,E402  (registers "code")
from archsmith.tools.spaces import yolo as _yolo  # noqa: F401,E402  (registers "yolo"; ultralytics only in build)
from archsmith.tools.spaces import ofa_mbv3 as _ofa_mbv3  # noqa: F401,E402  (registers "ofa_mbv3"; torch only in build)
from archsmith.tools.spaces import spos_shufflenet as _spos  # noqa: F401,E402  (registers "spos_shufflenet"; torch only in build)
from archsmith.tools.spaces import tree as _tree  # noqa: F401,E402  (registers "tree"; torch only in build)

__all__ = [
    "EnumerableSpace",
    "Mutation",
    "SearchSpace",
    "SpaceError",
    "Validation",
    "ValidationIssue",
    "check_task",
    "get_space",
    "local_operators",
    "register_space",
    "space_names",
]
