// glibc's heap figures and allocation tracer for readiness-idle-bench (malloc.h and mcheck.h are not in
// Swift's Glibc module).
#ifndef C_HEAP_INFO_H
#define C_HEAP_INFO_H
#include <stddef.h>

/// Bytes the program holds from malloc: in use in the arenas (mallinfo2's uordblks) plus the blocks
/// mapped for large requests (hblkhd); chunk headers and rounding included.
size_t cheapinfo_in_use(void);

/// glibc's mtrace and muntrace: every allocation and free logged to the file named by MALLOC_TRACE,
/// when libc_malloc_debug.so is preloaded (nothing otherwise). Called from here, not looked up with
/// dlsym, which finds libc's stub.
void cheapinfo_trace_start(void);
void cheapinfo_trace_stop(void);

#endif
