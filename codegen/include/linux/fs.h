/* Stand-in for the kernel's <linux/fs.h>: io_uring.h includes it for __kernel_rwf_t. */
#ifndef _UBLK_CODEGEN_LINUX_FS_H
#define _UBLK_CODEGEN_LINUX_FS_H

#include <linux/types.h>

typedef int __kernel_rwf_t;

#endif
