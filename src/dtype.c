/* SPDX-License-Identifier: MIT */
/*
 * dtype: names and sizes of the safetensors element types.
 */
#include <string.h>

#include "ckptconv/dtype.h"

static const struct {
	const char *name;
	size_t size;
} dtypes[DTYPE_COUNT] = {
	[DTYPE_INVALID] = {"INVALID", 0},
	[DTYPE_F64] = {"F64", 8},      [DTYPE_F32] = {"F32", 4},
	[DTYPE_F16] = {"F16", 2},      [DTYPE_BF16] = {"BF16", 2},
	[DTYPE_I64] = {"I64", 8},      [DTYPE_I32] = {"I32", 4},
	[DTYPE_I16] = {"I16", 2},      [DTYPE_I8] = {"I8", 1},
	[DTYPE_U64] = {"U64", 8},      [DTYPE_U32] = {"U32", 4},
	[DTYPE_U16] = {"U16", 2},      [DTYPE_U8] = {"U8", 1},
	[DTYPE_BOOL] = {"BOOL", 1},
	[DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [DTYPE_F8_E5M2] = {"F8_E5M2", 1},
	[DTYPE_F8_E8M0] = {"F8_E8M0", 1},
};

enum dtype dtype_from_name(const char *name)
{
	int i;

	for (i = 1; i < DTYPE_COUNT; i++)
		if (strcmp(dtypes[i].name, name) == 0)
			return (enum dtype)i;
	return DTYPE_INVALID;
}

const char *dtype_name(enum dtype t)
{
	if ((int)t <= 0 || t >= DTYPE_COUNT)
		return dtypes[DTYPE_INVALID].name;
	return dtypes[t].name;
}

size_t dtype_size(enum dtype t)
{
	if ((int)t <= 0 || t >= DTYPE_COUNT)
		return 0;
	return dtypes[t].size;
}

int dtype_is_float8(enum dtype t)
{
	return t == DTYPE_F8_E4M3 || t == DTYPE_F8_E5M2 || t == DTYPE_F8_E8M0;
}

enum dtype dtype_from_torch_name(const char *name)
{
	if (!name)
		return DTYPE_INVALID;
	if (strcmp(name, "bfloat16") == 0)
		return DTYPE_BF16;
	if (strcmp(name, "float16") == 0)
		return DTYPE_F16;
	if (strcmp(name, "float32") == 0)
		return DTYPE_F32;
	return DTYPE_INVALID;
}
