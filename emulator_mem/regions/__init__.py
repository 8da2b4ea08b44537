"""Regions that are more than private pages: sections and their views, MMIO ranges, write
watch, and PE images mapped like the loader.

Each feature receives the narrow services it needs through :class:`~.host.RegionHost` (the
address space, physical memory, the MMU), not the whole manager, so this layer sits below
:mod:`emulator_mem.manager`.
"""
