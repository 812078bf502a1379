/* Stand-in for the kernel's <linux/stddef.h>: only what UAPI structs use. */
#ifndef _UBLK_CODEGEN_LINUX_STDDEF_H
#define _UBLK_CODEGEN_LINUX_STDDEF_H

/*
 * A flexible array member that may sit alone in a struct or union.  The kernel wraps it
 * in an anonymous struct with an empty struct; a GNU zero-length array has the same
 * size, alignment and offset, and is what the generated ctypes class holds.
 */
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]

#endif
