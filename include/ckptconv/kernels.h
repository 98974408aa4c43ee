/* SPDX-License-Identifier: MIT */
/*
 * kernels: the arithmetic of a conversion.  Cache-blocked 2-D transposes of
 * 2- and 4-byte elements, and casts between F32, F16 and BF16 with
 * round-to-nearest-even (as torch), infinities kept, NaN kept a NaN of the
 * same sign.  No allocation, no I/O; safe from any thread.
 */
#ifndef CKPTCONV_KERNELS_H
#define CKPTCONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ckptconv/dtype.h"

struct plan_op;

uint16_t kern_f32_to_bf16(float f);
uint16_t kern_f32_to_f16(float f);
float kern_bf16_to_f32(uint16_t h);
float kern_f16_to_f32(uint16_t h);

/* Whether kern_cast supports this pair (same dtype always is). */
int kern_can_cast(enum dtype from, enum dtype to);

/* n elements, contiguous; F16 <-> BF16 goes through F32 exactly, so it
 * rounds once.  A pair kern_can_cast refuses is a caller's bug: the process
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

/* Runs one plan op: src points at the op's first source byte (src_offset
 * already applied), dst at the piece's first byte (dst_offset not applied). */
void kern_run_op(const struct plan_op *op, const void *src, void *dst);

#endif
