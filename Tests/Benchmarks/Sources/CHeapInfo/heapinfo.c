#include "CHeapInfo.h"
#include <malloc.h>
#include <mcheck.h>

size_t cheapinfo_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

void cheapinfo_trace_start(void) { mtrace(); }

void cheapinfo_trace_stop(void) { muntrace(); }
