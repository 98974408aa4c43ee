/* SPDX-License-Identifier: MIT */
/*
 * bench/kernels: throughput of the transpose and cast kernels on the shapes
 * a Ling-mini-2.0 conversion runs (experts of [512, 2048] and [2048, 512]),
 * with memcpy of the same bytes as the yardstick.  Each kernel streams over
 * 128 MiB of distinct source matrices, so the figures include memory
 * traffic, not just cache-resident work.  Prints figures, never fails on
 * time.  Build: make bench/kernels (or link against libckptconv.a).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/kernels.h"
#include "ckptconv/util.h"

#define SPAN (128u << 20)
#define ROUNDS 5

struct job {
	const char *name;
	enum dtype from, to;
	size_t rows, cols; /* source matrix */
	int transpose;
	size_t src_stride, dst_stride; /* bytes; 0 = rows packed */
};

static void run_one(const struct job *j, unsigned char *src, unsigned char *dst)
{
	size_t fs = dtype_size(j->from), ts = dtype_size(j->to);
	size_t in = j->rows * j->cols * fs, out = j->rows * j->cols * ts;
	size_t ss = j->src_stride ? j->src_stride : j->cols * fs;
	size_t ds = j->dst_stride ? j->dst_stride : (j->transpose ? j->rows : j->cols) * ts;
	size_t src_span = j->transpose ? j->rows * ss : in,
	       dst_span = j->transpose ? j->cols * ds : out;
	size_t count = SPAN / (src_span > dst_span ? src_span : dst_span), k;
	double best = 1e30, t;
	int round;

	for (round = 0; round < ROUNDS; round++) {
		t = now_seconds();
		for (k = 0; k < count; k++) {
			const unsigned char *s = src + k * src_span;
			unsigned char *d = dst + k * dst_span;

			if (!j->transpose && j->from == j->to)
				memcpy(d, s, in);
			else if (!j->transpose)
				kern_cast(s, j->from, d, j->to, j->rows * j->cols);
			else if (j->from == j->to)
				kern_transpose(s, ss, d, ds, j->rows, j->cols, fs);
			else
				kern_transpose_cast(s, j->from, ss, d, j->to, ds, j->rows, j->cols);
		}
		t = now_seconds() - t;
		if (t < best)
			best = t;
	}
	printf("%-34s %5zux%-5zu %7.2f GB/s read  %7.2f GB/s read+written\n", j->name, j->rows,
	       j->cols, (double)(count * in) / best / 1e9,
	       (double)(count * (in + out)) / best / 1e9);
}

int main(void)
{
	static const struct job jobs[] = {
		{"memcpy BF16 (yardstick)", DTYPE_BF16, DTYPE_BF16, 512, 2048, 0, 0, 0},
		{"transpose BF16", DTYPE_BF16, DTYPE_BF16, 512, 2048, 1, 0, 0},
		{"transpose BF16", DTYPE_BF16, DTYPE_BF16, 2048, 512, 1, 0, 0},
		{"transpose BF16 odd", DTYPE_BF16, DTYPE_BF16, 509, 2053, 1, 0, 0},
		/* from_hf: gate_e [I, H] into half of gate_and_up [H, 2I] */
		{"transpose BF16 gate into [H,2I]", DTYPE_BF16, DTYPE_BF16, 512, 2048, 1, 4096,
		 2048},
		/* to_hf: gate_and_up[e][:, 0:I] out to [I, H] */
		{"transpose BF16 [H,2I] half to gate", DTYPE_BF16, DTYPE_BF16, 2048, 512, 1, 2048,
		 4096},
		/* Ling-1T: H 8192, I 2048 */
		{"transpose BF16 1T gate into [H,2I]", DTYPE_BF16, DTYPE_BF16, 2048, 8192, 1, 16384,
		 8192},
		{"transpose BF16 1T down", DTYPE_BF16, DTYPE_BF16, 8192, 2048, 1, 0, 0},
		{"transpose F32", DTYPE_F32, DTYPE_F32, 512, 2048, 1, 0, 0},
		{"transpose+cast F32->BF16", DTYPE_F32, DTYPE_BF16, 512, 2048, 1, 0, 0},
		{"transpose+cast F32->BF16 [H,2I]", DTYPE_F32, DTYPE_BF16, 512, 2048, 1, 8192,
		 2048},
		{"transpose+cast F32->F16", DTYPE_F32, DTYPE_F16, 512, 2048, 1, 0, 0},
		{"transpose+cast BF16->F32", DTYPE_BF16, DTYPE_F32, 512, 2048, 1, 0, 0},
		{"cast F32->BF16", DTYPE_F32, DTYPE_BF16, 512, 2048, 0, 0, 0},
		{"cast F32->F16", DTYPE_F32, DTYPE_F16, 512, 2048, 0, 0, 0},
		{"cast BF16->F32", DTYPE_BF16, DTYPE_F32, 512, 2048, 0, 0, 0},
		{"cast F16->F32", DTYPE_F16, DTYPE_F32, 512, 2048, 0, 0, 0},
		{"cast BF16->F16", DTYPE_BF16, DTYPE_F16, 512, 2048, 0, 0, 0},
	};
	unsigned char *src = malloc(SPAN), *dst = malloc(SPAN);
	uint64_t x = 88172645463325252ULL;
	size_t i;

	if (!src || !dst)
		return 1;
	for (i = 0; i < SPAN / 8; i++) {
		/* small finite floats in both halves of each word */
		uint64_t w;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w = (x & 0x807fffff807fffffULL) | 0x3c0000003c000000ULL;
		memcpy(src + 8 * i, &w, 8);
	}
	memset(dst, 0, SPAN);
	for (i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++)
		run_one(&jobs[i], src, dst);
	free(src);
	free(dst);
	return 0;
}
