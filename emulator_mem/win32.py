"""Public path of the kernel32 layer (``emulator_mem.win32``); the code is in :mod:`.api.win32`."""

from __future__ import annotations

from .api.win32 import *  # noqa: F403
from .api.win32 import __all__  # noqa: F401
