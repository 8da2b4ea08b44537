"""The Windows calling conventions on top of the manager: NT (``Nt*`` returning NTSTATUS)
and kernel32 (BOOL/handle results plus ``GetLastError``).

These layers never raise for a guest's mistake; they translate the manager's typed errors
into the status a Windows program would see. They use only the manager's public methods.
"""
