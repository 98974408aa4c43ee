/* SPDX-License-Identifier: MIT */
/*
 * kernels: the arithmetic of a conversion.  Cache-blocked 2-D transposes of
 * 2- and 4-byte elements, and casts between F32, F16 and BF16 with
 * round-to-nearest-even (as torch), infinities kept, NaN kept a NaN of the
 * same sign; and the move of one strided matrix (kern_op), which is what a
 * plan's op asks for in these terms.  Knows nothing of plans or files.  No
 * allocation, no I/O; safe from any thread.
 */
#ifndef CKPTCONV_KERNELS_H
#define CKPTCONV_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/dtype.h"

uint16_t kern_f32_to_bf16(float f);
uint16_t kern_f32_to_f16(float f);
float kern_bf16_to_f32(uint16_t h);
float kern_f16_to_f32(uint16_t h);

/* Whether kern_cast supports this pair (same dtype always is). */
int kern_can_cast(enum dtype from, enum dtype to);

/* n elements, contiguous; F16 <-> BF16 goes through F32 exactly, so it
 * rounds once; F64 -> F16/BF16 goes through F32 too, rounding twice as
 * torch does on a CPU (docs/consolidation.md §5.8), F64 -> F32 rounds to
 * nearest even with overflow to infinity, widening is exact.  A pair kern_can_cast refuses is a caller's bug: the process
 * aborts rather than write wrong bytes. */
void kern_cast(const void *src, enum dtype from, void *dst, enum dtype to, size_t n);

/* dst[c][r] = src[r][c] for a rows x cols matrix; strides in bytes; elements
 * of esize bytes (any size; 2 and 4 are blocked and fast).  src and dst must
 * not overlap; no alignment is required. */
void kern_transpose(const void *src, size_t src_stride, void *dst, size_t dst_stride,
		    size_t rows, size_t cols, size_t esize);

/* Transpose and cast in one pass (a 32 KiB tile buffer on the stack). */
void kern_transpose_cast(const void *src, enum dtype from, size_t src_stride,
			 void *dst, enum dtype to, size_t dst_stride,
			 size_t rows, size_t cols);

/* One strided matrix move: rows x cols elements of src_dtype, src_stride
 * bytes between source rows, written transposed (dst[c][r] = src[r][c])
 * or not, cast to dst_dtype or not, dst_stride bytes between destination
 * rows.  A plain copy is rows = 1.  The pair of dtypes must be one
 * kern_can_cast accepts. */
struct kern_op {
	bool transpose;
	enum dtype src_dtype, dst_dtype;
	size_t rows, cols;          /* of the source matrix, in elements */
	size_t src_stride;          /* bytes between source rows */
	size_t dst_stride;          /* bytes between destination rows */
};

/* Runs op: src points at the matrix's first source byte, dst at its first
 * destination byte.  Source and destination must not overlap. */
void kern_run_op(const struct kern_op *op, const void *src, void *dst);

#endif
