"""Public path of the NT layer (``emulator_mem.nt``); the code lives in :mod:`.api.nt`."""

from __future__ import annotations

from .api.nt import *  # noqa: F403
from .api.nt import __all__  # noqa: F401
