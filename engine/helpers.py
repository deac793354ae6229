"""Compatibility name: the helper table lives in :mod:`engine.formula.helpers`."""

from engine.formula.helpers import *  # noqa: F401,F403
from engine.formula.helpers import (  # noqa: F401
    HELPERS,
    MISSING,
    Resolver,
    bind_helpers,
    e164,
    get,
    phone_region,
    to_bool,
    to_float,
)
