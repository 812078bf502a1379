/*
 * Stand-in for the kernel's <linux/types.h>, bundled with ublk-bindings-gen so that
 * generation never depends on (or reads) the build machine's /usr/include/linux.
 * The fixed-width UAPI types as asm-generic/int-ll64.h defines them: every Linux
 * architecture uses int-ll64 for userspace.
 */
#ifndef _UBLK_CODEGEN_LINUX_TYPES_H
#define _UBLK_CODEGEN_LINUX_TYPES_H

#include <linux/stddef.h>

typedef signed char		__s8;
typedef unsigned char		__u8;
typedef signed short		__s16;
typedef unsigned short		__u16;
typedef signed int		__s32;
typedef unsigned int		__u32;
typedef signed long long	__s64;
typedef unsigned long long	__u64;

typedef __u16 __le16;
typedef __u16 __be16;
typedef __u32 __le32;
typedef __u32 __be32;
typedef __u64 __le64;
typedef __u64 __be64;
typedef __u16 __sum16;
typedef __u32 __wsum;
typedef unsigned __poll_t;

/* 8-byte alignment even on 32-bit x86, where a plain __u64 member is 4-aligned. */
#define __aligned_u64 __u64 __attribute__((aligned(8)))
#define __aligned_be64 __be64 __attribute__((aligned(8)))
#define __aligned_le64 __le64 __attribute__((aligned(8)))

#endif
