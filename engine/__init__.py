"""klaviyo-sync: a Klaviyo integration engine run from declarative YAML mapping collections.

Table of contents (modules):

- :mod:`engine.errors`   the exception hierarchy and stable error codes
- :mod:`engine.catalog`  the specification's error texts, word for word
- :mod:`engine.cli`      the ``klaviyo-sync`` command line
"""

from __future__ import annotations

from engine import catalog
from engine.errors import KlaviyoSyncError

__all__ = ["catalog", "KlaviyoSyncError"]
