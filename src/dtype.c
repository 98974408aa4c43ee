/* SPDX-License-Identifier: MIT */
/*
 * dtype: names and widths of the safetensors element types, as the
 * reference implementation (huggingface/safetensors, Dtype::bitsize)
 * defines them.
 */
#include <string.h>

#include "ckptconv/dtype.h"

static const struct {
	const char *name;
	unsigned bits;
} dtypes[DTYPE_COUNT] = {
	[DTYPE_INVALID] = {"INVALID", 0}, [DTYPE_F64] = {"F64", 64},
	[DTYPE_F32] = {"F32", 32},	  [DTYPE_F16] = {"F16", 16},
	[DTYPE_BF16] = {"BF16", 16},	  [DTYPE_I64] = {"I64", 64},
	[DTYPE_I32] = {"I32", 32},	  [DTYPE_I16] = {"I16", 16},
	[DTYPE_I8] = {"I8", 8},		  [DTYPE_U64] = {"U64", 64},
	[DTYPE_U32] = {"U32", 32},	  [DTYPE_U16] = {"U16", 16},
	[DTYPE_U8] = {"U8", 8},		  [DTYPE_BOOL] = {"BOOL", 8},
	[DTYPE_F8_E4M3] = {"F8_E4M3", 8}, [DTYPE_F8_E5M2] = {"F8_E5M2", 8},
	[DTYPE_F8_E8M0] = {"F8_E8M0", 8}, [DTYPE_F4] = {"F4", 4},
	[DTYPE_F6_E2M3] = {"F6_E2M3", 6}, [DTYPE_F6_E3M2] = {"F6_E3M2", 6},
	[DTYPE_C64] = {"C64", 64},
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

unsigned dtype_bits(enum dtype t)
{
	if ((int)t <= 0 || t >= DTYPE_COUNT)
		return 0;
	return dtypes[t].bits;
}

size_t dtype_size(enum dtype t)
{
	unsigned bits = dtype_bits(t);

	return bits % 8 == 0 ? bits / 8 : 0;
}

bool dtype_bytes(enum dtype t, uint64_t nelems, uint64_t *bytes)
{
	unsigned bits = dtype_bits(t);

	if (bits == 0)
		return false;
	if (bits % 8 == 0) {
		if (nelems > UINT64_MAX / (bits / 8))
			return false;
		*bytes = nelems * (bits / 8);
		return true;
	}
	if (nelems > UINT64_MAX / bits || nelems * bits % 8 != 0)
		return false;
	*bytes = nelems * bits / 8;
	return true;
}

int dtype_is_float8(enum dtype t)
{
	return t == DTYPE_F8_E4M3 || t == DTYPE_F8_E5M2 || t == DTYPE_F8_E8M0;
}

bool dtype_copy_only(enum dtype t)
{
	return t == DTYPE_F4 || t == DTYPE_F6_E2M3 || t == DTYPE_F6_E3M2 || t == DTYPE_C64;
}

enum dtype dtype_element(enum dtype t)
{
	return dtype_bits(t) % 8 != 0 ? DTYPE_U8 : t;
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
