/* SPDX-License-Identifier: MIT */
/*
 * check_kernels: the casts and transposes against references written
 * independently of the kernels: casts against exact arithmetic in double
 * (nearest representable value, ties to the even pattern), exhaustively over
 * every BF16 and F16 pattern and over random and hand-picked F32 values;
 * transposes against an element-by-element loop on odd sizes, all element
 * sizes, padded strides and unaligned pointers; plan ops of every kind.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/kernels.h"
#include "testutil.h"

/* Check records every ck_assert it passes, which dominates loops over
 * millions of values: these reach Check only on failure. */
#define expect(cond, ...)                          \
	do {                                       \
		if (!(cond))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static float bits_f(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static uint32_t f_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

/* ---- reference decoding and rounding, in double ---- */

static double ref_f16_value(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	double v;

	if (exp == 0x1f)
		v = man ? NAN : INFINITY;
	else if (exp == 0)
		v = ldexp(man, -24);
	else
		v = ldexp(1024 + man, exp - 25);
	return (h & 0x8000) ? -v : v;
}

static double ref_bf16_value(uint16_t h)
{
	int exp = (h >> 7) & 0xff, man = h & 0x7f;
	double v;

	if (exp == 0xff)
		v = man ? NAN : INFINITY;
	else if (exp == 0)
		v = ldexp(man, -133);
	else
		v = ldexp(128 + man, exp - 134);
	return (h & 0x8000) ? -v : v;
}

/* Magnitude of a non-negative pattern, where the pattern just past the
 * largest finite one counts as the next binade's first value: rounding
 * there gives infinity, as IEEE 754 says. */
static double ref_magnitude(uint16_t pattern, int is_f16)
{
	if (is_f16)
		return pattern == 0x7c00 ? 65536.0 : ref_f16_value(pattern);
	return pattern == 0x7f80 ? ldexp(1.0, 128) : ref_bf16_value(pattern);
}

/* Round-to-nearest-even of a finite double into F16 or BF16, by binary
 * search over the non-negative patterns (ordered like their values). */
static uint16_t ref_round(double x, int is_f16)
{
	uint16_t sign = signbit(x) ? 0x8000 : 0, lo = 0, hi = is_f16 ? 0x7c00 : 0x7f80, mid;
	double a = fabs(x), dlo, dhi;

	if (a >= ref_magnitude(hi, is_f16))
		return sign | hi;
	while (hi - lo > 1) { /* invariant: value(lo) <= a < value(hi) */
		mid = (uint16_t)((lo + hi) / 2);
		if (ref_magnitude(mid, is_f16) <= a)
			lo = mid;
		else
			hi = mid;
	}
	dlo = a - ref_magnitude(lo, is_f16);
	dhi = ref_magnitude(hi, is_f16) - a;
	if (dlo < dhi || (dlo == dhi && (lo & 1) == 0))
		return sign | lo;
	return sign | hi;
}

/* What a cast of F32 bits must give: NaN is checked apart (any NaN of the
 * same sign passes), so this returns 0xffff for it. */
static uint16_t ref_from_f32(uint32_t w, int is_f16)
{
	float f = bits_f(w);

	if (isnan(f))
		return 0xffff;
	if (isinf(f))
		return (uint16_t)((w >> 16) & 0x8000) | (is_f16 ? 0x7c00 : 0x7f80);
	return ref_round((double)f, is_f16);
}

static int is_nan16(uint16_t h, int is_f16)
{
	return is_f16 ? (h & 0x7c00) == 0x7c00 && (h & 0x3ff) :
			(h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

static void check_from_f32(uint32_t w)
{
	uint16_t bf = kern_f32_to_bf16(bits_f(w)), h = kern_f32_to_f16(bits_f(w));
	uint16_t want_bf = ref_from_f32(w, 0), want_h = ref_from_f32(w, 1);

	if (isnan(bits_f(w))) {
		expect(is_nan16(bf, 0) && (bf & 0x8000) == ((w >> 16) & 0x8000),
		       "F32 %08x -> BF16 %04x: not a NaN of the same sign", w, bf);
		expect(is_nan16(h, 1) && (h & 0x8000) == ((w >> 16) & 0x8000),
		       "F32 %08x -> F16 %04x: not a NaN of the same sign", w, h);
		return;
	}
	expect(bf == want_bf, "F32 %08x -> BF16 %04x, want %04x", w, bf, want_bf);
	expect(h == want_h, "F32 %08x -> F16 %04x, want %04x", w, h, want_h);
}

static void fill_random(unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)rng_next();
}

/* ---- casts ---- */

START_TEST(bf16_exhaustive)
{
	uint32_t i;

	for (i = 0; i < 65536; i++) {
		uint16_t h = (uint16_t)i;
		float f = kern_bf16_to_f32(h);
		uint16_t back = kern_f32_to_bf16(f);

		expect(f_bits(f) == (uint32_t)h << 16, "BF16 %04x -> F32 %08x", h, f_bits(f));
		if (is_nan16(h, 0)) {
			expect(isnan(f) && !!signbit(f) == !!(h & 0x8000), "%04x", h);
			expect(is_nan16(back, 0) && (back & 0x8000) == (h & 0x8000),
			       "BF16 NaN %04x came back as %04x", h, back);
		} else {
			expect((double)f == ref_bf16_value(h), "BF16 %04x", h);
			expect(back == h, "BF16 %04x -> F32 -> %04x", h, back);
		}
	}
}
END_TEST

START_TEST(f16_exhaustive)
{
	uint32_t i;

	for (i = 0; i < 65536; i++) {
		uint16_t h = (uint16_t)i;
		float f = kern_f16_to_f32(h);
		uint16_t back = kern_f32_to_f16(f);

		if (is_nan16(h, 1)) {
			expect(isnan(f) && !!signbit(f) == !!(h & 0x8000), "F16 %04x", h);
			expect(is_nan16(back, 1) && (back & 0x8000) == (h & 0x8000),
			       "F16 NaN %04x came back as %04x", h, back);
		} else {
			expect((double)f == ref_f16_value(h) && !!signbit(f) == !!(h & 0x8000),
			       "F16 %04x -> %a, want %a", h, (double)f, ref_f16_value(h));
			expect(back == h, "F16 %04x -> F32 -> %04x", h, back);
		}
	}
}
END_TEST

START_TEST(half_to_half_exhaustive)
{
	uint32_t i;

	for (i = 0; i < 65536; i++) {
		uint16_t h = (uint16_t)i, out;

		kern_cast(&h, DTYPE_F16, &out, DTYPE_BF16, 1);
		if (is_nan16(h, 1))
			expect(is_nan16(out, 0) && (out & 0x8000) == (h & 0x8000),
			       "F16 NaN %04x -> %04x", h, out);
		else
			expect(out == ref_round(ref_f16_value(h), 0), "F16 %04x -> BF16 %04x", h,
			       out);
		kern_cast(&h, DTYPE_BF16, &out, DTYPE_F16, 1);
		if (is_nan16(h, 0))
			expect(is_nan16(out, 1) && (out & 0x8000) == (h & 0x8000),
			       "BF16 NaN %04x -> %04x", h, out);
		else
			expect(out == ref_from_f32((uint32_t)h << 16, 1),
			       "BF16 %04x -> F16 %04x, want %04x", h, out,
			       ref_from_f32((uint32_t)h << 16, 1));
	}
}
END_TEST

START_TEST(f32_random)
{
	uint32_t i;

	rng_state = 1;
	for (i = 0; i < 2000000; i++)
		check_from_f32((uint32_t)rng_next());
}
END_TEST

/* Every BF16 and F16 midpoint (exact ties) and its F32 neighbours. */
START_TEST(f32_halfway_neighbours)
{
	uint32_t i;

	for (i = 0; i < 0x7f80; i++) {
		uint32_t mid = (i << 16) | 0x8000; /* halfway between BF16 i and i+1 */
		uint32_t s;

		for (s = 0; s < 2; s++) {
			uint32_t w = mid | (s << 31);

			check_from_f32(w);
			check_from_f32(w + 1);
			check_from_f32(w - 1);
		}
	}
	for (i = 0; i < 0x7c00; i++) {
		double lo = ref_f16_value((uint16_t)i), hi = ref_magnitude((uint16_t)(i + 1), 1);
		float mid = (float)((lo + hi) / 2); /* exact: F16 midpoints fit F32 */

		expect((double)mid == (lo + hi) / 2, "midpoint of F16 %04x", i);
		check_from_f32(f_bits(mid));
		check_from_f32(f_bits(mid) + 1);
		check_from_f32(f_bits(mid) - 1);
		check_from_f32(f_bits(-mid));
	}
}
END_TEST

/* F64 as torch converts it on a CPU: to 16 bits through float (double
 * rounding), to float with overflow to infinity, widening exactly. */
START_TEST(f64_casts)
{
	const double in[] = {1.0 + 0x1p-8 + 0x1p-30, 1e300, -1e300, 0.1, -0.0, 3 * 0x1p-25};
	uint16_t bf[6], h[6];
	float f[6];
	double back[3];
	const float narrow[3] = {1.5f, -0x1p-149f, 65504.0f};
	const uint16_t halves[3] = {0x3c00, 0x0001, 0x7bff};
	double from_half[3];

	kern_cast(in, DTYPE_F64, bf, DTYPE_BF16, 6);
	ck_assert_uint_eq(bf[0], 0x3f80);          /* not 0x3f81: rounded twice */
	ck_assert_uint_eq(bf[1], 0x7f80);
	ck_assert_uint_eq(bf[2], 0xff80);
	ck_assert_uint_eq(bf[3], kern_f32_to_bf16(0.1f));
	ck_assert_uint_eq(bf[4], 0x8000);
	kern_cast(in, DTYPE_F64, h, DTYPE_F16, 6);
	ck_assert_uint_eq(h[1], 0x7c00);
	ck_assert_uint_eq(h[5], 0x0002);
	kern_cast(in, DTYPE_F64, f, DTYPE_F32, 6);
	ck_assert(isinf(f[1]) && f[1] > 0);
	ck_assert(f[3] == 0.1f);
	ck_assert(signbit(f[4]));
	kern_cast(narrow, DTYPE_F32, back, DTYPE_F64, 3);
	ck_assert(back[0] == 1.5 && back[1] == -0x1p-149 && back[2] == 65504.0);
	kern_cast(halves, DTYPE_F16, from_half, DTYPE_F64, 3);
	ck_assert(from_half[0] == 1.0 && from_half[1] == 0x1p-24 && from_half[2] == 65504.0);
	ck_assert(kern_can_cast(DTYPE_F64, DTYPE_BF16) && kern_can_cast(DTYPE_BF16, DTYPE_F64));
	ck_assert(!kern_can_cast(DTYPE_F64, DTYPE_I64));
	{
		/* transposed: a 2 x 3 F64 matrix to 3 x 2 BF16 */
		const double m[6] = {1, 2, 3, 4, 5, 6};
		uint16_t t[6];
		size_t i;

		kern_transpose_cast(m, DTYPE_F64, 3 * 8, t, DTYPE_BF16, 2 * 2, 2, 3);
		for (i = 0; i < 6; i++)
			ck_assert_uint_eq(t[i], kern_f32_to_bf16((float)m[(i % 2) * 3 + i / 2]));
	}
}
END_TEST

START_TEST(f32_special_values)
{
	/* ties to even, just above and below halfway */
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x3f808000)), 0x3f80);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x3f818000)), 0x3f82);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x3f808001)), 0x3f81);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x3f807fff)), 0x3f80);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0xbf818000)), 0xbf82);
	ck_assert_uint_eq(kern_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
	ck_assert_uint_eq(kern_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
	ck_assert_uint_eq(kern_f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01);
	ck_assert_uint_eq(kern_f32_to_f16(1.0f + 0x1p-11f - 0x1p-23f), 0x3c00);
	/* infinities and NaN of both signs */
	ck_assert_uint_eq(kern_f32_to_bf16(INFINITY), 0x7f80);
	ck_assert_uint_eq(kern_f32_to_bf16(-INFINITY), 0xff80);
	ck_assert_uint_eq(kern_f32_to_f16(INFINITY), 0x7c00);
	ck_assert_uint_eq(kern_f32_to_f16(-INFINITY), 0xfc00);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x7fc00000)), 0x7fc0);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0xffc00000)), 0xffc0);
	/* signalling, payload only in the low bits */
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x7f800001)), 0x7fc0);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0xff800001)), 0xffc0);
	/* a NaN must not round over into the sign bit */
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x7fffffff)), 0x7fff);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0xffffffff)), 0xffff);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0x7fc00000)), 0x7e00);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0xffc00000)), 0xfe00);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0x7f800001)), 0x7e00);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0xff800001)), 0xfe00);
	/* overflow */
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x7f7fffff)), 0x7f80);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0xff7fffff)), 0xff80);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x7f7f7fff)), 0x7f7f);
	ck_assert_uint_eq(kern_f32_to_f16(65504.0f), 0x7bff);
	ck_assert_uint_eq(kern_f32_to_f16(65519.996f), 0x7bff);
	ck_assert_uint_eq(kern_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(kern_f32_to_f16(-1e5f), 0xfc00);
	ck_assert_uint_eq(kern_f32_to_f16(3.0e38f), 0x7c00);
	/* F16 subnormals and underflow */
	ck_assert_uint_eq(kern_f32_to_f16(0x1p-24f), 0x0001);
	ck_assert_uint_eq(kern_f32_to_f16(0x1p-25f), 0x0000);
	ck_assert_uint_eq(kern_f32_to_f16(-0x1p-25f), 0x8000);
	ck_assert_uint_eq(kern_f32_to_f16(0x1.000002p-25f), 0x0001);
	ck_assert_uint_eq(kern_f32_to_f16(3 * 0x1p-25f), 0x0002);
	ck_assert_uint_eq(kern_f32_to_f16(5 * 0x1p-25f), 0x0002);
	ck_assert_uint_eq(kern_f32_to_f16(0x1p-14f), 0x0400);
	ck_assert_uint_eq(kern_f32_to_f16(1023.5f * 0x1p-24f), 0x0400);
	ck_assert_uint_eq(kern_f32_to_f16(1022.5f * 0x1p-24f), 0x03fe);
	ck_assert_uint_eq(kern_f32_to_f16(-1023.0f * 0x1p-24f), 0x83ff);
	ck_assert_uint_eq(kern_f32_to_f16(1e-30f), 0x0000);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0x00000001)), 0x0000);
	ck_assert_uint_eq(kern_f32_to_f16(bits_f(0x80000001)), 0x8000);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x00000001)), 0x0000);
	ck_assert_uint_eq(kern_f32_to_bf16(bits_f(0x00018000)), 0x0002);
	ck_assert(kern_f16_to_f32(0x0001) == 0x1p-24f);
	ck_assert(kern_f16_to_f32(0x83ff) == -1023.0f * 0x1p-24f);
	ck_assert(kern_f16_to_f32(0x0200) == 0x1p-15f);
	ck_assert(isinf(kern_f16_to_f32(0xfc00)) && kern_f16_to_f32(0xfc00) < 0);
}
END_TEST

/* One element cast by the scalar conversions (checked above). */
static void ref_convert(const unsigned char *s, enum dtype from, unsigned char *d, enum dtype to)
{
	float f;
	uint16_t h;
	uint32_t w;

	if (from == to) {
		memcpy(d, s, dtype_size(from));
		return;
	}
	if (from == DTYPE_F32) {
		memcpy(&f, s, 4);
	} else {
		memcpy(&h, s, 2);
		f = from == DTYPE_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
	}
	if (to == DTYPE_F32) {
		w = f_bits(f);
		memcpy(d, &w, 4);
	} else {
		h = to == DTYPE_F16 ? kern_f32_to_f16(f) : kern_f32_to_bf16(f);
		memcpy(d, &h, 2);
	}
}

/* Bulk casts agree with the scalar ones for every length around the
 * vector width and with unaligned pointers. */
static void check_bulk_case(const unsigned char *src, enum dtype from, enum dtype to, size_t n,
			    size_t align, unsigned char *dst, size_t dst_len)
{
	size_t fs = dtype_size(from), ts = dtype_size(to), k;
	unsigned char want[4];

	memset(dst, 0xab, dst_len);
	kern_cast(src + align, from, dst + align, to, n);
	for (k = 0; k < n; k++) {
		ref_convert(src + align + k * fs, from, want, to);
		expect(memcmp(dst + align + k * ts, want, ts) == 0, "%s->%s n=%zu k=%zu",
		       dtype_name(from), dtype_name(to), n, k);
	}
	expect(dst[align + n * ts] == 0xab, "cast wrote past %zu elements", n);
}

START_TEST(bulk_casts_match_scalar)
{
	static const enum dtype types[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
	enum { N = 1029 };
	unsigned char *src = malloc(4 * N + 8), *dst = malloc(4 * N + 8);
	size_t fi, ti, n, align;

	rng_state = 7;
	fill_random(src, 4 * N + 8);
	for (fi = 0; fi < 3; fi++)
		for (ti = 0; ti < 3; ti++) {
			ck_assert(kern_can_cast(types[fi], types[ti]));
			for (align = 0; align < 3; align++)
				for (n = 0; n < N; n += (n < 40 ? 1 : 197))
					check_bulk_case(src, types[fi], types[ti], n, align, dst,
							4 * N + 8);
		}
	ck_assert(!kern_can_cast(DTYPE_F32, DTYPE_I32));
	ck_assert(!kern_can_cast(DTYPE_F8_E4M3, DTYPE_BF16));
	ck_assert(kern_can_cast(DTYPE_I64, DTYPE_I64));
	free(src);
	free(dst);
}
END_TEST

/* The bulk (vector) casts over every half pattern and over every tie and
 * its neighbours, against the scalar conversions checked above. */
START_TEST(bulk_casts_exhaustive)
{
	enum { NH = 65536, NF = 6 * 0x7f80 + 6 * 0x7c00 + 16 };
	uint16_t *halves = malloc(NH * 2), *out16 = malloc(NF * 2);
	uint32_t *words = malloc(NF * 4), *out32 = malloc(NH * 4);
	size_t i, n = 0, s;

	for (i = 0; i < NH; i++)
		halves[i] = (uint16_t)i;
	kern_cast(halves, DTYPE_BF16, out32, DTYPE_F32, NH);
	for (i = 0; i < NH; i++)
		expect(out32[i] == f_bits(kern_bf16_to_f32(halves[i])), "BF16 %04zx", i);
	kern_cast(halves, DTYPE_F16, out32, DTYPE_F32, NH);
	for (i = 0; i < NH; i++)
		expect(out32[i] == f_bits(kern_f16_to_f32(halves[i])), "F16 %04zx -> %08x", i,
		       out32[i]);
	kern_cast(halves, DTYPE_F16, out16, DTYPE_BF16, NH);
	for (i = 0; i < NH; i++)
		expect(out16[i] == kern_f32_to_bf16(kern_f16_to_f32(halves[i])), "F16 %04zx", i);
	kern_cast(halves, DTYPE_BF16, out16, DTYPE_F16, NH);
	for (i = 0; i < NH; i++)
		expect(out16[i] == kern_f32_to_f16(kern_bf16_to_f32(halves[i])), "BF16 %04zx", i);

	for (i = 0; i < 0x7f80; i++)
		for (s = 0; s < 2; s++) {
			uint32_t mid = (uint32_t)(i << 16) | 0x8000u | (uint32_t)(s << 31);

			words[n++] = mid;
			words[n++] = mid + 1;
			words[n++] = mid - 1;
		}
	for (i = 0; i < 0x7c00; i++)
		for (s = 0; s < 2; s++) {
			float mid = (float)((ref_f16_value((uint16_t)i) +
					     ref_magnitude((uint16_t)(i + 1), 1)) /
					    2);
			uint32_t w = f_bits(s ? -mid : mid);

			words[n++] = w;
			words[n++] = w + 1;
			words[n++] = w - 1;
		}
	for (i = 0; i < 16; i++) /* infinities, NaNs, extremes */
		words[n++] = (uint32_t[]){0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
					  0x7f800001, 0xff800001, 0x7fffffff, 0xffffffff,
					  0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000001,
					  0x477fefff, 0x477ff000, 0x33000000, 0x33000001}[i];
	ck_assert_uint_eq(n, NF);
	kern_cast(words, DTYPE_F32, out16, DTYPE_BF16, n);
	for (i = 0; i < n; i++)
		expect(out16[i] == kern_f32_to_bf16(bits_f(words[i])), "F32 %08x -> BF16 %04x",
		       words[i], out16[i]);
	kern_cast(words, DTYPE_F32, out16, DTYPE_F16, n);
	for (i = 0; i < n; i++)
		expect(out16[i] == kern_f32_to_f16(bits_f(words[i])), "F32 %08x -> F16 %04x",
		       words[i], out16[i]);
	free(halves);
	free(out16);
	free(words);
	free(out32);
}
END_TEST

/* ---- transposes ---- */

static const size_t sizes[][2] = {
	{1, 1}, {1, 37},  {37, 1},  {1, 200}, {200, 1}, {2, 3},	   {7, 9},   {8, 8},   {4, 4},
	{9, 7}, {17, 31}, {61, 67}, {63, 65}, {64, 64}, {65, 129}, {128, 8}, {8, 128}, {300, 513},
};

/* Destination padding and the bytes around must stay untouched. */
#define GUARD 0x5a

static void check_transpose_strided(size_t rows, size_t cols, size_t esize, size_t ss, size_t ds,
				    size_t misalign)
{
	size_t src_len = rows * ss + misalign, dst_len = cols * ds + misalign + 16;
	unsigned char *src = malloc(src_len), *dst = malloc(dst_len), *want = malloc(dst_len);
	size_t r, c;

	fill_random(src, src_len);
	memset(dst, GUARD, dst_len);
	memset(want, GUARD, dst_len);
	for (r = 0; r < rows; r++)
		for (c = 0; c < cols; c++)
			memcpy(want + misalign + c * ds + r * esize,
			       src + misalign + r * ss + c * esize, esize);
	kern_transpose(src + misalign, ss, dst + misalign, ds, rows, cols, esize);
	ck_assert_msg(memcmp(dst, want, dst_len) == 0,
		      "transpose %zux%zu esize %zu strides %zu/%zu misalign %zu", rows, cols, esize,
		      ss, ds, misalign);
	free(src);
	free(dst);
	free(want);
}

static void check_transpose_case(size_t rows, size_t cols, size_t esize, size_t src_pad,
				 size_t dst_pad, size_t misalign)
{
	check_transpose_strided(rows, cols, esize, cols * esize + src_pad, rows * esize + dst_pad,
				misalign);
}

/* Long source rows a multiple of 512 bytes apart, into shorter
 * destination rows (an expert's weights into a grouped tensor): the
 * blocked path, with rows and columns that fill whole blocks, and every
 * edge they leave (fewer rows or columns than a block, one more, one
 * less), misaligned or not. */
START_TEST(transpose_long_source_rows)
{
	static const size_t shapes[][2] = {
		{32, 256}, {64, 1024}, {31, 256}, {33, 255}, {1, 2048}, {95, 97}, {7, 1000},
		{256, 2048}, {129, 1539}, {16, 16}, {17, 4},
	};
	static const size_t esizes[] = {2, 4};
	size_t i, k, ss;

	rng_state = 97;
	for (i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		for (k = 0; k < 2; k++) {
			size_t rows = shapes[i][0], cols = shapes[i][1], es = esizes[k];

			ss = (cols * es + 511) / 512 * 512;
			if (ss <= rows * es)
				ss = (rows * es / 512 + 1) * 512;
			check_transpose_strided(rows, cols, es, ss, rows * es, 0);
			check_transpose_strided(rows, cols, es, ss, rows * es + 6, 3);
			check_transpose_strided(rows, cols, es, 2 * ss, rows * es * 2, 1);
		}
}
END_TEST

START_TEST(transpose_all_sizes)
{
	static const size_t esizes[] = {1, 2, 4, 8, 3};
	size_t i = (size_t)_i, k;

	rng_state = 11 + i;
	for (k = 0; k < sizeof(esizes) / sizeof(esizes[0]); k++) {
		size_t es = esizes[k];

		check_transpose_case(sizes[i][0], sizes[i][1], es, 0, 0, 0);
		check_transpose_case(sizes[i][0], sizes[i][1], es, 3 * es, 5 * es, 0);
		check_transpose_case(sizes[i][0], sizes[i][1], es, 6, 2, 1);
		check_transpose_case(sizes[i][0], sizes[i][1], es, 1, 7, 3);
	}
}
END_TEST

START_TEST(transpose_cast_all_sizes)
{
	static const enum dtype types[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
	size_t i = (size_t)_i, fi, ti, pad;

	rng_state = 101 + i;
	for (fi = 0; fi < 3; fi++)
		for (ti = 0; ti < 3; ti++)
			for (pad = 0; pad < 2; pad++) {
				enum dtype from = types[fi], to = types[ti];
				size_t rows = sizes[i][0], cols = sizes[i][1];
				size_t fs = dtype_size(from), ts = dtype_size(to);
				size_t ss = cols * fs + pad * 10, ds = rows * ts + pad * 6;
				size_t src_len = rows * ss + 1, dst_len = cols * ds + 17;
				unsigned char *src = malloc(src_len), *dst = malloc(dst_len);
				unsigned char *want = malloc(dst_len);
				size_t r, c, off = pad; /* pad 1 also misaligns both sides */

				fill_random(src, src_len);
				memset(dst, GUARD, dst_len);
				memset(want, GUARD, dst_len);
				for (r = 0; r < rows; r++)
					for (c = 0; c < cols; c++)
						ref_convert(src + off + r * ss + c * fs, from,
							    want + off + c * ds + r * ts, to);
				kern_transpose_cast(src + off, from, ss, dst + off, to, ds, rows,
						    cols);
				ck_assert_msg(memcmp(dst, want, dst_len) == 0,
					      "%s->%s %zux%zu pad %zu", dtype_name(from),
					      dtype_name(to), rows, cols, pad);
				free(src);
				free(dst);
				free(want);
			}
}
END_TEST

/* ---- strided matrix moves ---- */

static void run_op_case(const struct kern_op *op, size_t dst_offset, size_t src_len, size_t dst_len)
{
	unsigned char *src = malloc(src_len), *dst = malloc(dst_len), *want = malloc(dst_len);
	size_t fs = dtype_size(op->src_dtype), ts = dtype_size(op->dst_dtype);
	uint64_t r, c;

	fill_random(src, src_len);
	memset(dst, GUARD, dst_len);
	memset(want, GUARD, dst_len);
	for (r = 0; r < op->rows; r++)
		for (c = 0; c < op->cols; c++) {
			const unsigned char *s = src + r * op->src_stride + c * fs;
			unsigned char *d = op->transpose ?
						   want + dst_offset + c * op->dst_stride + r * ts :
						   want + dst_offset + r * op->dst_stride + c * ts;

			ref_convert(s, op->src_dtype, d, op->dst_dtype);
		}
	kern_run_op(op, src, dst + dst_offset);
	ck_assert_msg(memcmp(dst, want, dst_len) == 0, "op %s->%s %s %llux%llu",
		      dtype_name(op->src_dtype), dtype_name(op->dst_dtype),
		      op->transpose ? "transposed" : "straight", (unsigned long long)op->rows,
		      (unsigned long long)op->cols);
	free(src);
	free(dst);
	free(want);
}

START_TEST(run_op_kinds)
{
	struct kern_op op;
	size_t dst_offset;

	rng_state = 5;
	/* plain copy of one run */
	memset(&op, 0, sizeof(op));
	op.src_dtype = op.dst_dtype = DTYPE_BF16;
	op.rows = 1;
	op.cols = 1000;
	op.src_stride = op.dst_stride = 2000;
	dst_offset = 24;
	run_op_case(&op, dst_offset, 2000, 2100);
	/* strided copy: a column slice of rows (gate/up halves, q/k/v rows) */
	op.rows = 37;
	op.cols = 19;
	op.src_stride = 100;
	op.dst_stride = 64;
	dst_offset = 6;
	run_op_case(&op, dst_offset, 37 * 100, 37 * 64 + 6);
	/* cast without transpose */
	op.src_dtype = DTYPE_F32;
	op.dst_dtype = DTYPE_BF16;
	op.src_stride = 19 * 4 + 12;
	op.dst_stride = 19 * 2 + 2;
	run_op_case(&op, dst_offset, 37 * (19 * 4 + 12), 37 * 40 + 6);
	op.dst_dtype = DTYPE_F16;
	run_op_case(&op, dst_offset, 37 * (19 * 4 + 12), 37 * 40 + 6);
	/* transpose, 16-bit: gate_e [I, H] into out[e][:, 0:I] of a [H, 2I] */
	op.transpose = true;
	op.src_dtype = op.dst_dtype = DTYPE_BF16;
	op.rows = 32; /* I */
	op.cols = 64; /* H */
	op.src_stride = 64 * 2;
	op.dst_stride = 2 * 32 * 2; /* 2I elements */
	dst_offset = 32 * 2;	    /* the up half */
	run_op_case(&op, dst_offset, 32 * 128, 64 * 128 + 64);
	/* transpose, 32-bit, odd sizes */
	op.src_dtype = op.dst_dtype = DTYPE_F32;
	op.rows = 61;
	op.cols = 67;
	op.src_stride = 67 * 4 + 4;
	op.dst_stride = 61 * 4 + 8;
	dst_offset = 8;
	run_op_case(&op, dst_offset, 61 * (67 * 4 + 4), 67 * (61 * 4 + 8) + 8);
	/* transpose with cast */
	op.dst_dtype = DTYPE_BF16;
	op.dst_stride = 61 * 2 + 6;
	run_op_case(&op, dst_offset, 61 * (67 * 4 + 4), 67 * (61 * 2 + 6) + 8);
	op.src_dtype = DTYPE_BF16;
	op.dst_dtype = DTYPE_F32;
	op.src_stride = 67 * 2;
	op.dst_stride = 61 * 4;
	run_op_case(&op, dst_offset, 61 * 67 * 2, 67 * 61 * 4 + 8);
}
END_TEST

static Suite *kernels_suite(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("casts");
	int nsizes = (int)(sizeof(sizes) / sizeof(sizes[0]));

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, bf16_exhaustive);
	tcase_add_test(tc, f16_exhaustive);
	tcase_add_test(tc, half_to_half_exhaustive);
	tcase_add_test(tc, f32_random);
	tcase_add_test(tc, f32_halfway_neighbours);
	tcase_add_test(tc, f32_special_values);
	tcase_add_test(tc, f64_casts);
	tcase_add_test(tc, bulk_casts_match_scalar);
	tcase_add_test(tc, bulk_casts_exhaustive);
	suite_add_tcase(s, tc);
	tc = tcase_create("transpose");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, transpose_all_sizes, 0, nsizes);
	tcase_add_test(tc, transpose_long_source_rows);
	tcase_add_loop_test(tc, transpose_cast_all_sizes, 0, nsizes);
	tcase_add_test(tc, run_op_kinds);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(kernels_suite());
}
