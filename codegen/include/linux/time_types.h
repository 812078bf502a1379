/* Stand-in for the kernel's <linux/time_types.h>: the timespec io_uring.h embeds. */
#ifndef _UBLK_CODEGEN_LINUX_TIME_TYPES_H
#define _UBLK_CODEGEN_LINUX_TIME_TYPES_H

#include <linux/types.h>

typedef long long __kernel_time64_t;

struct __kernel_timespec {
	__kernel_time64_t	tv_sec;		/* seconds */
	long long		tv_nsec;	/* nanoseconds */
};

#endif
