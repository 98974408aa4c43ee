/* SPDX-License-Identifier: MIT */
/*
 * dtype: the element types safetensors knows, their names and sizes.
 */
#ifndef CKPTCONV_DTYPE_H
#define CKPTCONV_DTYPE_H

#include <stddef.h>

enum dtype {
	DTYPE_INVALID = 0,
	DTYPE_F64, DTYPE_F32, DTYPE_F16, DTYPE_BF16,
	DTYPE_I64, DTYPE_I32, DTYPE_I16, DTYPE_I8,
	DTYPE_U64, DTYPE_U32, DTYPE_U16, DTYPE_U8,
	DTYPE_BOOL,
	DTYPE_F8_E4M3, DTYPE_F8_E5M2, DTYPE_F8_E8M0,
	DTYPE_COUNT
};

/* "BF16" -> DTYPE_BF16; DTYPE_INVALID for unknown names. */
enum dtype dtype_from_name(const char *name);
const char *dtype_name(enum dtype t);   /* "BF16"; "INVALID" for bad values */
size_t dtype_size(enum dtype t);        /* bytes per element; 0 for invalid */
int dtype_is_float8(enum dtype t);
/* torch_dtype names of config.json: "bfloat16", "float16", "float32". */
enum dtype dtype_from_torch_name(const char *name);

#endif
