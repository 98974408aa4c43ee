/* SPDX-License-Identifier: MIT */
/*
 * kernels: the arithmetic of a conversion.  Element casts between F32, F16
 * and BF16 that round to nearest even like torch, keep infinities and keep a
 * NaN a NaN of the same sign; cache-blocked 2-D transposes (an SSE2 8x8
 * micro-kernel for 16-bit elements and 4x4 for 32-bit ones, over tiles, or
 * over line-sized blocks copied out first when long source rows would
 * share cache sets; a portable path for other targets and element sizes);
 * and the runner of one strided matrix move, the op a plan's ops are made
 * of.  Pointers need no particular alignment.  No allocation, no I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "ckptconv/kernels.h"

/* A tile is TILE_ROWS source rows by TILE_BYTES bytes of each: the
 * destination rows of a tile are then written in whole cache lines, and
 * its source lines stay in L2 while the tile is worked through, even when
 * both strides are powers of two. */
#define TILE_ROWS 256
#define TILE_BYTES 128

static inline uint16_t load16(const unsigned char *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint32_t load32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void store16(unsigned char *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static inline void store32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static inline uint32_t float_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float bits_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* ---- scalar element conversions ---- */

static inline uint16_t bf16_from_bits(uint32_t w)
{
	if ((w & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((w >> 16) | 0x0040u); /* quiet, sign and payload kept */
	return (uint16_t)((w + 0x7fffu + ((w >> 16) & 1u)) >> 16);
}

static inline uint16_t f16_from_bits(uint32_t w)
{
	uint32_t sign = (w >> 16) & 0x8000u;
	uint32_t a = w & 0x7fffffffu;
	uint32_t m, q, rem, half;
	int shift;

	if (a > 0x7f800000u) /* NaN: quiet, payload's top bits */
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u) /* >= 65520 rounds to infinity */
		return (uint16_t)(sign | 0x7c00u);
	if (a >= 0x38800000u) { /* normal half: rebias, round */
		a -= 0x38000000u;
		return (uint16_t)(sign | ((a + 0xfffu + ((a >> 13) & 1u)) >> 13));
	}
	if (a <= 0x33000000u) /* <= 2^-25 rounds to zero */
		return (uint16_t)sign;
	/* Subnormal half: the value in units of 2^-24, rounded to even. */
	m = (a & 0x7fffffu) | 0x800000u;
	shift = 126 - (int)(a >> 23);
	q = m >> shift;
	rem = m & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return (uint16_t)(sign | q);
}

static inline uint32_t f16_to_bits(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	int shift;

	if (exp == 0x1f)
		return sign | 0x7f800000u | (man << 13);
	if (exp != 0)
		return sign | ((exp + 112) << 23) | (man << 13);
	if (man == 0)
		return sign;
	/* Subnormal half: normalise into an F32 normal. */
	shift = __builtin_clz(man) - 21; /* moves the top bit to bit 10 */
	man = (man << shift) & 0x3ffu;
	return sign | ((uint32_t)(113 - shift) << 23) | (man << 13);
}

uint16_t kern_f32_to_bf16(float f)
{
	return bf16_from_bits(float_bits(f));
}

uint16_t kern_f32_to_f16(float f)
{
	return f16_from_bits(float_bits(f));
}

float kern_bf16_to_f32(uint16_t h)
{
	return bits_float((uint32_t)h << 16);
}

float kern_f16_to_f32(uint16_t h)
{
	return bits_float(f16_to_bits(h));
}

/* ---- contiguous casts ---- */

static int is_float_type(enum dtype t)
{
	return t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16 || t == DTYPE_F64;
}

int kern_can_cast(enum dtype from, enum dtype to)
{
	return from == to || (is_float_type(from) && is_float_type(to));
}

/* One element through F32, which holds every F16 and BF16 value exactly,
 * so a half-to-half cast rounds once. */
static inline uint32_t element_to_f32(const unsigned char *p, enum dtype from)
{
	if (from == DTYPE_F32)
		return load32(p);
	if (from == DTYPE_BF16)
		return (uint32_t)load16(p) << 16;
	return f16_to_bits(load16(p));
}

static inline void element_from_f32(unsigned char *p, enum dtype to, uint32_t w)
{
	if (to == DTYPE_F32)
		store32(p, w);
	else if (to == DTYPE_BF16)
		store16(p, bf16_from_bits(w));
	else
		store16(p, f16_from_bits(w));
}

#ifdef __SSE2__
/* Four halves, one per 32-bit lane, to F32 bits: exact, NaN payload kept. */
static inline __m128i v_f16_to_f32(__m128i h)
{
	const __m128i exp_mask = _mm_set1_epi32(0x7c00);
	const __m128i rebias = _mm_set1_epi32(112 << 23);
	const __m128i half = _mm_set1_epi32(126 << 23);
	__m128i sign = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16);
	__m128i body = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
	__m128i exp = _mm_and_si128(h, exp_mask);
	__m128i is_special = _mm_cmpeq_epi32(exp, exp_mask);
	__m128i is_subnormal = _mm_cmpeq_epi32(exp, _mm_setzero_si128());
	__m128i normal = _mm_add_epi32(_mm_slli_epi32(body, 13), rebias);
	/* Subnormals: 0.5 + m * 2^-24, minus 0.5, is exact. */
	__m128i subnormal = _mm_castps_si128(
		_mm_sub_ps(_mm_castsi128_ps(_mm_or_si128(body, half)), _mm_castsi128_ps(half)));

	normal = _mm_add_epi32(normal, _mm_and_si128(is_special, rebias));
	return _mm_or_si128(sign, _mm_or_si128(_mm_and_si128(is_subnormal, subnormal),
					       _mm_andnot_si128(is_subnormal, normal)));
}

/* Four F32 to halves in the low 16 bits of each lane. */
static inline __m128i v_f32_to_f16(__m128i w)
{
	const __m128i inf = _mm_set1_epi32(0x7f800000);
	const __m128i half = _mm_set1_epi32(126 << 23);
	__m128i sign = _mm_and_si128(_mm_srli_epi32(w, 16), _mm_set1_epi32(0x8000));
	__m128i a = _mm_and_si128(w, _mm_set1_epi32(0x7fffffff));
	__m128i is_nan = _mm_cmpgt_epi32(a, inf);
	__m128i is_huge = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x477fefff));
	__m128i is_small = _mm_cmpgt_epi32(_mm_set1_epi32(0x38800000), a);
	__m128i nan = _mm_or_si128(_mm_set1_epi32(0x7e00),
				   _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(0x3ff)));
	__m128i rebased = _mm_sub_epi32(a, _mm_set1_epi32(0x38000000));
	__m128i lsb = _mm_and_si128(_mm_srli_epi32(rebased, 13), _mm_set1_epi32(1));
	__m128i normal = _mm_srli_epi32(
		_mm_add_epi32(_mm_add_epi32(rebased, _mm_set1_epi32(0xfff)), lsb), 13);
	/* Adding 0.5 rounds to a multiple of 2^-24 in hardware (to nearest
	 * even); the low bits then count those units. */
	__m128i subnormal = _mm_sub_epi32(
		_mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(half))), half);
	__m128i r = _mm_or_si128(_mm_and_si128(is_small, subnormal),
				 _mm_andnot_si128(is_small, normal));

	r = _mm_or_si128(_mm_and_si128(is_huge, _mm_set1_epi32(0x7c00)),
			 _mm_andnot_si128(is_huge, r));
	r = _mm_or_si128(_mm_and_si128(is_nan, nan), _mm_andnot_si128(is_nan, r));
	return _mm_or_si128(sign, r);
}

/* Four F32 to BF16 in the low 16 bits of each lane. */
static inline __m128i v_f32_to_bf16(__m128i w)
{
	__m128i is_nan = _mm_cmpgt_epi32(_mm_and_si128(w, _mm_set1_epi32(0x7fffffff)),
					 _mm_set1_epi32(0x7f800000));
	__m128i lsb = _mm_and_si128(_mm_srli_epi32(w, 16), _mm_set1_epi32(1));
	__m128i rounded = _mm_add_epi32(_mm_add_epi32(w, _mm_set1_epi32(0x7fff)), lsb);
	__m128i quieted = _mm_or_si128(w, _mm_set1_epi32(0x00400000));

	return _mm_srli_epi32(_mm_or_si128(_mm_and_si128(is_nan, quieted),
					   _mm_andnot_si128(is_nan, rounded)),
			      16);
}

/* Eight elements as F32 bits, in two vectors of four. */
static inline void v_load8(const unsigned char *p, enum dtype from, __m128i *lo, __m128i *hi)
{
	__m128i x;

	if (from == DTYPE_F32) {
		*lo = _mm_loadu_si128((const __m128i *)(const void *)p);
		*hi = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
		return;
	}
	x = _mm_loadu_si128((const __m128i *)(const void *)p);
	if (from == DTYPE_BF16) {
		*lo = _mm_unpacklo_epi16(_mm_setzero_si128(), x);
		*hi = _mm_unpackhi_epi16(_mm_setzero_si128(), x);
	} else {
		*lo = v_f16_to_f32(_mm_unpacklo_epi16(x, _mm_setzero_si128()));
		*hi = v_f16_to_f32(_mm_unpackhi_epi16(x, _mm_setzero_si128()));
	}
}

/* Packs the low halves of eight 32-bit lanes (SSE2 only packs signed, so
 * each half is sign-extended first, which the pack passes through). */
static inline __m128i v_pack16(__m128i lo, __m128i hi)
{
	lo = _mm_srai_epi32(_mm_slli_epi32(lo, 16), 16);
	hi = _mm_srai_epi32(_mm_slli_epi32(hi, 16), 16);
	return _mm_packs_epi32(lo, hi);
}

static inline void v_store8(unsigned char *p, enum dtype to, __m128i lo, __m128i hi)
{
	__m128i *q = (__m128i *)(void *)p;

	if (to == DTYPE_F32) {
		_mm_storeu_si128(q, lo);
		_mm_storeu_si128((__m128i *)(void *)(p + 16), hi);
	} else if (to == DTYPE_BF16) {
		_mm_storeu_si128(q, v_pack16(v_f32_to_bf16(lo), v_f32_to_bf16(hi)));
	} else {
		_mm_storeu_si128(q, v_pack16(v_f32_to_f16(lo), v_f32_to_f16(hi)));
	}
}
#endif

/* The loop is instantiated per dtype pair so the dtype tests fold away. */
static inline __attribute__((always_inline)) void
cast_run(const unsigned char *s, enum dtype from, unsigned char *d, enum dtype to, size_t n)
{
	size_t fs = from == DTYPE_F32 ? 4 : 2, ts = to == DTYPE_F32 ? 4 : 2, i = 0;

#ifdef __SSE2__
	for (; i + 8 <= n; i += 8) {
		__m128i lo, hi;

		v_load8(s + i * fs, from, &lo, &hi);
		v_store8(d + i * ts, to, lo, hi);
	}
#endif
	for (; i < n; i++)
		element_from_f32(d + i * ts, to, element_to_f32(s + i * fs, from));
}

#define CAST_PAIR(name, from, to)                                            \
	static void name(const unsigned char *s, unsigned char *d, size_t n) \
	{                                                                    \
		cast_run(s, from, d, to, n);                                 \
	}
CAST_PAIR(cast_f32_bf16, DTYPE_F32, DTYPE_BF16)
CAST_PAIR(cast_bf16_f32, DTYPE_BF16, DTYPE_F32)
CAST_PAIR(cast_f32_f16, DTYPE_F32, DTYPE_F16)
CAST_PAIR(cast_f16_f32, DTYPE_F16, DTYPE_F32)
CAST_PAIR(cast_f16_bf16, DTYPE_F16, DTYPE_BF16)
CAST_PAIR(cast_bf16_f16, DTYPE_BF16, DTYPE_F16)

/* F64 to or from F32, F16, BF16 as torch converts on a CPU: to a narrower
 * type through F32 (double -> float rounds to nearest even, overflowing
 * to infinity; then float -> 16 bits rounds again), to F64 exactly. */
static void cast_f64(const unsigned char *s, enum dtype from, unsigned char *d, enum dtype to,
		     size_t n)
{
	size_t i, fs = dtype_size(from), ts = dtype_size(to);
	uint32_t w;
	double v;
	float f;

	for (i = 0; i < n; i++) {
		if (from == DTYPE_F64) {
			memcpy(&v, s + i * 8, 8);
			f = (float)v;
			memcpy(&w, &f, 4);
			element_from_f32(d + i * ts, to, w);
		} else {
			w = element_to_f32(s + i * fs, from);
			memcpy(&f, &w, 4);
			v = f;
			memcpy(d + i * 8, &v, 8);
		}
	}
}

void kern_cast(const void *src, enum dtype from, void *dst, enum dtype to, size_t n)
{
	const unsigned char *s = src;
	unsigned char *d = dst;

	if (from == to) {
		memmove(d, s, n * dtype_size(from));
		return;
	}
	if (from == DTYPE_F64 || to == DTYPE_F64)
		cast_f64(s, from, d, to, n);
	else if (from == DTYPE_F32 && to == DTYPE_BF16)
		cast_f32_bf16(s, d, n);
	else if (from == DTYPE_BF16 && to == DTYPE_F32)
		cast_bf16_f32(s, d, n);
	else if (from == DTYPE_F32 && to == DTYPE_F16)
		cast_f32_f16(s, d, n);
	else if (from == DTYPE_F16 && to == DTYPE_F32)
		cast_f16_f32(s, d, n);
	else if (from == DTYPE_F16 && to == DTYPE_BF16)
		cast_f16_bf16(s, d, n);
	else if (from == DTYPE_BF16 && to == DTYPE_F16)
		cast_bf16_f16(s, d, n);
	else {
		/* Plans only hold pairs kern_can_cast accepts; anything else
		 * would silently write wrong bytes. */
		fprintf(stderr, "kern_cast: unsupported cast %s -> %s\n", dtype_name(from),
			dtype_name(to));
		abort();
	}
}

/* ---- transposes ---- */

#ifdef __SSE2__
static inline __m128i loadu(const unsigned char *p)
{
	return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static inline void storeu(unsigned char *p, __m128i v)
{
	_mm_storeu_si128((__m128i *)(void *)p, v);
}

/* 8x8 block of 16-bit elements. */
static inline void micro16(const unsigned char *s, size_t ss, unsigned char *d, size_t ds)
{
	__m128i a0 = loadu(s), a1 = loadu(s + ss), a2 = loadu(s + 2 * ss), a3 = loadu(s + 3 * ss);
	__m128i a4 = loadu(s + 4 * ss), a5 = loadu(s + 5 * ss), a6 = loadu(s + 6 * ss);
	__m128i a7 = loadu(s + 7 * ss);
	__m128i t0 = _mm_unpacklo_epi16(a0, a1), t1 = _mm_unpackhi_epi16(a0, a1);
	__m128i t2 = _mm_unpacklo_epi16(a2, a3), t3 = _mm_unpackhi_epi16(a2, a3);
	__m128i t4 = _mm_unpacklo_epi16(a4, a5), t5 = _mm_unpackhi_epi16(a4, a5);
	__m128i t6 = _mm_unpacklo_epi16(a6, a7), t7 = _mm_unpackhi_epi16(a6, a7);
	__m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);
	__m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
	__m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);
	__m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);

	storeu(d, _mm_unpacklo_epi64(u0, u4));
	storeu(d + ds, _mm_unpackhi_epi64(u0, u4));
	storeu(d + 2 * ds, _mm_unpacklo_epi64(u1, u5));
	storeu(d + 3 * ds, _mm_unpackhi_epi64(u1, u5));
	storeu(d + 4 * ds, _mm_unpacklo_epi64(u2, u6));
	storeu(d + 5 * ds, _mm_unpackhi_epi64(u2, u6));
	storeu(d + 6 * ds, _mm_unpacklo_epi64(u3, u7));
	storeu(d + 7 * ds, _mm_unpackhi_epi64(u3, u7));
}

/* 4x4 block of 32-bit elements. */
static inline void micro32(const unsigned char *s, size_t ss, unsigned char *d, size_t ds)
{
	__m128i a0 = loadu(s), a1 = loadu(s + ss), a2 = loadu(s + 2 * ss), a3 = loadu(s + 3 * ss);
	__m128i t0 = _mm_unpacklo_epi32(a0, a1), t1 = _mm_unpacklo_epi32(a2, a3);
	__m128i t2 = _mm_unpackhi_epi32(a0, a1), t3 = _mm_unpackhi_epi32(a2, a3);

	storeu(d, _mm_unpacklo_epi64(t0, t1));
	storeu(d + ds, _mm_unpackhi_epi64(t0, t1));
	storeu(d + 2 * ds, _mm_unpacklo_epi64(t2, t3));
	storeu(d + 3 * ds, _mm_unpackhi_epi64(t2, t3));
}
#endif

/* Element by element, for block edges and unblocked sizes. */
static void transpose_scalar(const unsigned char *s, size_t ss, unsigned char *d, size_t ds,
			     size_t rows, size_t cols, size_t esize)
{
	size_t r, c;

	switch (esize) {
	case 1:
		for (r = 0; r < rows; r++)
			for (c = 0; c < cols; c++)
				d[c * ds + r] = s[r * ss + c];
		break;
	case 2:
		for (r = 0; r < rows; r++)
			for (c = 0; c < cols; c++)
				store16(d + c * ds + 2 * r, load16(s + r * ss + 2 * c));
		break;
	case 4:
		for (r = 0; r < rows; r++)
			for (c = 0; c < cols; c++)
				store32(d + c * ds + 4 * r, load32(s + r * ss + 4 * c));
		break;
	default:
		for (r = 0; r < rows; r++)
			for (c = 0; c < cols; c++)
				memcpy(d + c * ds + esize * r, s + r * ss + esize * c, esize);
		break;
	}
}

/* One tile of 2- or 4-byte elements, a column block at a time so each
 * destination row is filled front to back. */
static void transpose_tile(const unsigned char *s, size_t ss, unsigned char *d, size_t ds,
			   size_t rows, size_t cols, size_t esize)
{
	size_t c = 0;

#ifdef __SSE2__
	size_t block = esize == 2 ? 8 : 4;
	size_t r;

	for (; c + block <= cols; c += block) {
		const unsigned char *scol = s + c * esize;
		unsigned char *drow = d + c * ds;

		for (r = 0; r + block <= rows; r += block) {
			if (esize == 2)
				micro16(scol + r * ss, ss, drow + 2 * r, ds);
			else
				micro32(scol + r * ss, ss, drow + 4 * r, ds);
		}
		if (r < rows)
			transpose_scalar(scol + r * ss, ss, drow + r * esize, ds, rows - r, block,
					 esize);
	}
#endif
	if (c < cols)
		transpose_scalar(s + c * esize, ss, d + c * ds, ds, rows, cols - c, esize);
}

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

#ifdef __SSE2__
/* A block is a cache line's worth of source elements in each direction:
 * BLOCK_BYTES / esize rows by as many columns.  Its source rows are first
 * copied into a contiguous buffer, so source strides that are powers of
 * two (every expert's) cannot evict one another's lines from the same
 * cache set; each destination row of the block is then one whole line,
 * completed by consecutive micro-kernels. */
#define BLOCK_BYTES 64

static inline __attribute__((always_inline)) void
transpose_block(const unsigned char *s, size_t ss, unsigned char *d, size_t ds, size_t esize)
{
	const size_t n = BLOCK_BYTES / esize, micro = esize == 2 ? 8 : 4;
	unsigned char in[(BLOCK_BYTES / 2) * BLOCK_BYTES] __attribute__((aligned(64)));
	unsigned char out[(BLOCK_BYTES / 2) * BLOCK_BYTES] __attribute__((aligned(64)));
	size_t r, c, k;

	for (r = 0; r < n; r++)
		for (k = 0; k < BLOCK_BYTES; k += 16)
			storeu(in + r * BLOCK_BYTES + k, loadu(s + r * ss + k));
	for (c = 0; c < n; c += micro)
		for (r = 0; r < n; r += micro) {
			if (esize == 2)
				micro16(in + r * BLOCK_BYTES + 2 * c, BLOCK_BYTES,
					out + c * BLOCK_BYTES + 2 * r, BLOCK_BYTES);
			else
				micro32(in + r * BLOCK_BYTES + 4 * c, BLOCK_BYTES,
					out + c * BLOCK_BYTES + 4 * r, BLOCK_BYTES);
		}
	for (c = 0; c < n; c++)
		for (k = 0; k < BLOCK_BYTES; k += 16)
			storeu(d + c * ds + k, loadu(out + c * BLOCK_BYTES + k));
}

/* Whole blocks of 2- or 4-byte elements, a tile at a time (BTILE_ROWS
 * source rows by BTILE_BYTES bytes of each, which stay in L2), the blocks
 * of a tile a column of blocks at a time so each destination row is
 * written front to back; the edges that fill no whole block go through
 * transpose_tile. */
#define BTILE_ROWS 128
#define BTILE_BYTES 128
static void transpose_blocked(const unsigned char *s, size_t ss, unsigned char *d, size_t ds,
			      size_t rows, size_t cols, size_t esize)
{
	const size_t n = BLOCK_BYTES / esize, tile_cols = BTILE_BYTES / esize;
	size_t r0, c0, r, c, rb = rows - rows % n, cb = cols - cols % n;

	for (r0 = 0; r0 < rb; r0 += BTILE_ROWS)
		for (c0 = 0; c0 < cb; c0 += tile_cols) {
			size_t rn = min_size(rb, r0 + BTILE_ROWS),
			       cn = min_size(cb, c0 + tile_cols);

			for (c = c0; c < cn; c += n)
				for (r = r0; r < rn; r += n) {
					if (esize == 2)
						transpose_block(s + r * ss + c * 2, ss,
								d + c * ds + r * 2, ds, 2);
					else
						transpose_block(s + r * ss + c * 4, ss,
								d + c * ds + r * 4, ds, 4);
				}
		}
	if (cb < cols) /* the last columns, every row */
		transpose_tile(s + cb * esize, ss, d + cb * ds, ds, rows, cols - cb, esize);
	if (rb < rows) /* the last rows, the blocked columns */
		transpose_tile(s + rb * ss, ss, d + rb * esize, ds, rows - rb, cb, esize);
}
#endif

void kern_transpose(const void *src, size_t src_stride, void *dst, size_t dst_stride, size_t rows,
		    size_t cols, size_t esize)
{
	const unsigned char *s = src;
	unsigned char *d = dst;
	size_t tile_cols = esize && esize <= TILE_BYTES ? TILE_BYTES / esize : 1;
	size_t r0, c0, rn, cn;

#ifdef __SSE2__
	/* Long source rows a multiple of 512 bytes apart (an expert's rows
	 * of the hidden size, read into a shorter destination row) share
	 * cache sets, so the tiles below lose their source lines between
	 * uses: blocks copy them out first.  Measured on [256, 2048] and
	 * [64, 8192] BF16 bands: about twice the tiles' rate; with short
	 * source rows or other strides the tiles are as fast or faster. */
	if ((esize == 2 || esize == 4) && src_stride > dst_stride && src_stride % 512 == 0) {
		transpose_blocked(s, src_stride, d, dst_stride, rows, cols, esize);
		return;
	}
#endif
	for (r0 = 0; r0 < rows; r0 += TILE_ROWS) {
		rn = min_size(rows - r0, TILE_ROWS);
		for (c0 = 0; c0 < cols; c0 += tile_cols) {
			const unsigned char *st = s + r0 * src_stride + c0 * esize;
			unsigned char *dt = d + c0 * dst_stride + r0 * esize;

			cn = min_size(cols - c0, tile_cols);
			if (esize == 2 || esize == 4)
				transpose_tile(st, src_stride, dt, dst_stride, rn, cn, esize);
			else
				transpose_scalar(st, src_stride, dt, dst_stride, rn, cn, esize);
		}
	}
}

void kern_transpose_cast(const void *src, enum dtype from, size_t src_stride, void *dst,
			 enum dtype to, size_t dst_stride, size_t rows, size_t cols)
{
	/* Each tile is transposed into a small buffer in the source dtype,
	 * then each of its rows is cast into a destination row: both steps
	 * run their fast kernels, and the cast writes long contiguous runs. */
	enum { BUF_ROWS = 32 };
	unsigned char buf[BUF_ROWS * TILE_ROWS * 4] __attribute__((aligned(64)));
	const unsigned char *s = src;
	unsigned char *d = dst;
	size_t from_size = dtype_size(from), to_size = dtype_size(to);
	size_t r0, c0, c, rn, cn;

	if (from == to) {
		kern_transpose(src, src_stride, dst, dst_stride, rows, cols, from_size);
		return;
	}
	if (from_size > 4) {
		/* F64, rare: element by element. */
		for (c = 0; c < cols; c++)
			for (r0 = 0; r0 < rows; r0++)
				kern_cast(s + r0 * src_stride + c * from_size, from,
					  d + c * dst_stride + r0 * to_size, to, 1);
		return;
	}
	for (r0 = 0; r0 < rows; r0 += TILE_ROWS) {
		rn = min_size(rows - r0, TILE_ROWS);
		for (c0 = 0; c0 < cols; c0 += BUF_ROWS) {
			cn = min_size(cols - c0, BUF_ROWS);
			transpose_tile(s + r0 * src_stride + c0 * from_size, src_stride, buf,
				       rn * from_size, rn, cn, from_size);
			for (c = 0; c < cn; c++)
				kern_cast(buf + c * rn * from_size, from,
					  d + (c0 + c) * dst_stride + r0 * to_size, to, rn);
		}
	}
}

/* ---- strided matrix moves ---- */

void kern_run_op(const struct kern_op *op, const void *src, void *dst)
{
	const unsigned char *s = src;
	unsigned char *d = dst;
	size_t esize = dtype_size(op->src_dtype);
	size_t r;

	if (op->transpose) {
		if (op->src_dtype == op->dst_dtype)
			kern_transpose(s, op->src_stride, d, op->dst_stride, op->rows, op->cols,
				       esize);
		else
			kern_transpose_cast(s, op->src_dtype, op->src_stride, d, op->dst_dtype,
					    op->dst_stride, op->rows, op->cols);
		return;
	}
	for (r = 0; r < op->rows; r++) {
		const unsigned char *srow = s + r * op->src_stride;
		unsigned char *drow = d + r * op->dst_stride;

		if (op->src_dtype == op->dst_dtype)
			memcpy(drow, srow, op->cols * esize);
		else
			kern_cast(srow, op->src_dtype, drow, op->dst_dtype, op->cols);
	}
}
