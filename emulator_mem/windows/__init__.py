"""Windows facts, no machinery: ``winnt.h`` constants, the NTSTATUS→Win32 table and the
``PAGE_*`` rules (which protections are valid, what rights they grant).

The bottom layer: it imports only :mod:`emulator_mem.errors`, so every layer above can ask
it a Windows question without pulling in Unicorn.
"""
