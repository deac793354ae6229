"""Where the files that ship with the engine are: the mapping collections and the JSON Schemas
(with Klaviyo's OpenAPI specs).

In a checkout they are the repository's ``collections/`` and ``schemas/`` folders beside
``engine/``.  In an installed wheel they are inside the package, ``engine/_data/collections``
and ``engine/_data/schemas`` (setup.py copies them there when the wheel is built).  Every
module finds them through :func:`shipped`, so both layouts work the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

_PACKAGE: Final = Path(__file__).resolve().parent
INSTALLED: Final = _PACKAGE / "_data"  # inside an installed wheel
CHECKOUT: Final = _PACKAGE.parent  # the repository root of a checkout (or an editable install)
FOLDERS: Final = ("collections", "schemas")


def shipped(folder: str, *parts: str) -> Path:
    """The path of ``folder/parts...`` among the shipped files; ``folder`` is one of
    ``collections`` or ``schemas``.  The wheel's copy wins when there is one."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown shipped folder {folder!r}; one of {', '.join(FOLDERS)}")
    base = INSTALLED if (INSTALLED / folder).is_dir() else CHECKOUT
    return base.joinpath(folder, *parts)


__all__ = ["shipped", "FOLDERS"]
