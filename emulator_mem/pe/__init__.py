"""PE files without a CPU: parsing the loader's view of an image (sections, relocations,
imports, exports) and writing small PE files (the samples and tests build theirs).

Imports only :mod:`emulator_mem.windows` and the errors.
"""
