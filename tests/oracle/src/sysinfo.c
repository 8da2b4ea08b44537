/*
 * GetSystemInfo: the fields that do not depend on the machine (page size, allocation
 * granularity, the user address range, the architecture and processor type).
 */
#include "oracle.h"

static void run(void)
{
    SYSTEM_INFO si;
    memset(&si, 0xcc, sizeof(si));
    FRESH();
    GetSystemInfo(&si);
    say("sysinfo.last_error %u\n", ERR());
    say("sysinfo.architecture %u\n", (DWORD)si.wProcessorArchitecture);
    say("sysinfo.reserved %u\n", (DWORD)si.wReserved);
    say("sysinfo.page_size %x\n", si.dwPageSize);
    say("sysinfo.allocation_granularity %x\n", si.dwAllocationGranularity);
    say("sysinfo.minimum_address %z\n", (ULONG_PTR)si.lpMinimumApplicationAddress);
    say("sysinfo.maximum_address %z\n", (ULONG_PTR)si.lpMaximumApplicationAddress);
    say("sysinfo.processor_type %u\n", si.dwProcessorType);
    say("sysinfo.has_processors %u\n", (DWORD)(si.dwNumberOfProcessors >= 1));
    say("sysinfo.mask_nonzero %u\n", (DWORD)(si.dwActiveProcessorMask != 0));
    say("sysinfo.mask_fits %u\n", (DWORD)(si.dwNumberOfProcessors >= sizeof(ULONG_PTR) * 8 ||
        (si.dwActiveProcessorMask >> si.dwNumberOfProcessors) == 0));
}
