/* SPDX-License-Identifier: MIT */
/*
 * dtype: the element types the safetensors format defines (the Dtype enum
 * of the reference implementation, huggingface/safetensors), their names
 * and their widths in bits.  Four are not whole bytes wide or are not a
 * single number: F4 (4 bits), F6_E2M3 and F6_E3M2 (6 bits), packed with no
 * padding, and C64 (a complex number, two F32).  ckptconv copies tensors of
 * these byte for byte and never transposes or casts them.
 *
 * Every function here is pure and may be called from any thread.
 */
#ifndef CKPTCONV_DTYPE_H
#define CKPTCONV_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* New values are appended: the numbers of the others never change. */
enum dtype {
	DTYPE_INVALID = 0,
	DTYPE_F64, DTYPE_F32, DTYPE_F16, DTYPE_BF16,
	DTYPE_I64, DTYPE_I32, DTYPE_I16, DTYPE_I8,
	DTYPE_U64, DTYPE_U32, DTYPE_U16, DTYPE_U8,
	DTYPE_BOOL,
	DTYPE_F8_E4M3, DTYPE_F8_E5M2, DTYPE_F8_E8M0,
	DTYPE_F4, DTYPE_F6_E2M3, DTYPE_F6_E3M2,
	DTYPE_C64,
	DTYPE_COUNT
};

/* "BF16" -> DTYPE_BF16; DTYPE_INVALID for unknown names. */
enum dtype dtype_from_name(const char *name);
const char *dtype_name(enum dtype t);   /* "BF16"; "INVALID" for bad values */
/* Bits per element (4 for F4, 6 for F6_*, 64 for C64); 0 for invalid. */
unsigned dtype_bits(enum dtype t);
/* Bytes per element; 0 for invalid values and for the dtypes narrower than
 * a byte, whose elements have no byte of their own. */
size_t dtype_size(enum dtype t);
/* The bytes of nelems elements into *bytes: false when nelems x bits is not
 * a whole number of bytes (a tensor of F4 with an odd element count; the
 * format requires whole bytes) or overflows 64 bits, or t is invalid. */
bool dtype_bytes(enum dtype t, uint64_t nelems, uint64_t *bytes);
int dtype_is_float8(enum dtype t);
/* Whether tensors of t may only be copied byte for byte, never transposed
 * or cast: the dtypes narrower than a byte (F4, F6_E2M3, F6_E3M2) and the
 * complex C64. */
bool dtype_copy_only(enum dtype t);
/* The dtype whose elements a plan's ops move for a tensor of t: t itself,
 * or U8 for the dtypes narrower than a byte (moved as whole bytes). */
enum dtype dtype_element(enum dtype t);
/* torch_dtype names of config.json: "bfloat16", "float16", "float32". */
enum dtype dtype_from_torch_name(const char *name);

#endif
