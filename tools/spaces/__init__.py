"""Search spaces. Importing this package registers the built-in spaces."""

from archsmith.tools.spaces.base import (
    EnumerableSpace,
    Mutation,
    SearchSpace,
    SpaceError,
    Validation,
    ValidationIssue,
    get_space,
    local_operators,
    register_space,
    space_names,
)
from archsmith.tools.spaces import template as _template  # noqa: F401,E402  (registers "template")
from archsmith.tools.spaces import nb201 as _nb201, positions as _positions  # noqa: F401,E402
from archsmith.tools.spaces import code as _code  # noqa: F401,E402  (registers "code")

__all__ = [
    "EnumerableSpace",
    "Mutation",
    "SearchSpace",
    "SpaceError",
    "Validation",
    "ValidationIssue",
    "get_space",
    "local_operators",
    "register_space",
    "space_names",
]
