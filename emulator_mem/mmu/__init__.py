"""The software MMU: physical windows, the TLB-fill hook, fetch traps, fault decoding.

The only layer that talks to Unicorn's memory API (``mem_map_ptr``, ``mmio_map``, the TLB
controls). It reads :mod:`emulator_mem.space` to translate and never decides a Windows
rule itself.
"""
