/* SPDX-License-Identifier: MIT */
/*
 * crc32c: CRC-32C computed while bytes are written (crc32c.h says why this
 * checksum): the SSE4.2 CRC32 instruction when the CPU has one (three
 * interleaved streams over long buffers), else
 * slicing-by-8 tables; adjacent ranges combined by multiplying by x^(8n)
 * modulo the polynomial, the method of zlib's crc32_combine.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/crc32c.h"
#include "ckptconv/util.h"

/* The reflected polynomial. */
#define POLY 0x82F63B78u

static uint32_t table[8][256];
static uint32_t x2n[64]; /* x^(2^k) modulo the polynomial */
/* Bytes each of the three interleaved streams of crc_sse42 takes per
 * round, and x^(8 * STREAM_BYTES) modulo the polynomial, which moves a
 * stream's CRC past the next stream's bytes. */
#define STREAM_BYTES 8192
static uint32_t stream_shift;
static bool have_sse42;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
bool crc32c_force_portable;

/* a * b modulo the polynomial (reflected: bit 31 is x^0). */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;

	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
	}
	return p;
}

static uint32_t x8nmodp(uint64_t n);

static void build_tables(void)
{
	uint32_t c, p;
	unsigned i, k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (k = 1; k < 8; k++)
			table[k][i] = (table[k - 1][i] >> 8) ^ table[0][table[k - 1][i] & 0xff];
	p = 1u << 30; /* x^1 */
	for (k = 0; k < 64; k++) {
		x2n[k] = p;
		p = multmodp(p, p);
	}
	stream_shift = x8nmodp(STREAM_BYTES);
#if defined(__x86_64__)
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_table(uint32_t c, const unsigned char *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		v ^= c; /* little-endian: the CRC meets the first four bytes */
		c = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
		    table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^
		    table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const unsigned char *p,
							    size_t len)
{
	uint64_t c64;

	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi(c, *p++);
		len--;
	}
	c64 = c;
	/* One CRC32 instruction depends on the one before: three streams
	 * over adjacent ranges keep three in flight, and their CRCs are
	 * joined as crc32c_combine joins ranges (the register is linear:
	 * the CRC of A then B is A's moved past |B| zero bytes, plus B's
	 * from zero). */
	while (len >= 3 * STREAM_BYTES) {
		uint64_t c1 = 0, c2 = 0, v0, v1, v2;
		size_t i;

		for (i = 0; i < STREAM_BYTES; i += 8) {
			memcpy(&v0, p + i, 8);
			memcpy(&v1, p + STREAM_BYTES + i, 8);
			memcpy(&v2, p + 2 * STREAM_BYTES + i, 8);
			c64 = __builtin_ia32_crc32di(c64, v0);
			c1 = __builtin_ia32_crc32di(c1, v1);
			c2 = __builtin_ia32_crc32di(c2, v2);
		}
		c64 = multmodp(stream_shift, multmodp(stream_shift, (uint32_t)c64) ^ (uint32_t)c1) ^
		      (uint32_t)c2;
		p += 3 * STREAM_BYTES;
		len -= 3 * STREAM_BYTES;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
		p += 8;
		len -= 8;
	}
	c = (uint32_t)c64;
	while (len--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	uint32_t c = ~crc;

	pthread_once(&tables_once, build_tables);
#if defined(__x86_64__)
	if (have_sse42 && !crc32c_force_portable)
		return ~crc_sse42(c, buf, len);
#endif
	return ~crc_table(c, buf, len);
}

/* x^(8n) modulo the polynomial: n zero bytes appended. */
static uint32_t x8nmodp(uint64_t n)
{
	uint32_t p = 1u << 31; /* x^0 */
	unsigned k = 3;

	while (n) {
		if (n & 1)
			p = multmodp(x2n[k & 63], p);
		n >>= 1;
		k++;
	}
	return p;
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
	pthread_once(&tables_once, build_tables);
	return multmodp(x8nmodp(len_b), crc_a) ^ crc_b;
}

void crc32c_hex(uint32_t crc, char out[9])
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 7; i >= 0; i--) {
		out[i] = digits[crc & 0xf];
		crc >>= 4;
	}
	out[8] = '\0';
}

int crc32c_parse_hex(const char *text, uint32_t *out)
{
	uint32_t v = 0;
	int i;

	for (i = 0; i < 8; i++) {
		char ch = text ? text[i] : '\0';

		if (ch >= '0' && ch <= '9')
			v = v << 4 | (uint32_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v = v << 4 | (uint32_t)(ch - 'a' + 10);
		else
			return -1;
	}
	if (text[8] != '\0')
		return -1;
	*out = v;
	return 0;
}

void crc32c_base64(uint32_t crc, char out[9])
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char b[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
			      (unsigned char)(crc >> 8), (unsigned char)crc};

	out[0] = b64[b[0] >> 2];
	out[1] = b64[(b[0] & 3) << 4 | b[1] >> 4];
	out[2] = b64[(b[1] & 15) << 2 | b[2] >> 6];
	out[3] = b64[b[2] & 63];
	out[4] = b64[b[3] >> 2];
	out[5] = b64[(b[3] & 3) << 4];
	out[6] = '=';
	out[7] = '=';
	out[8] = '\0';
}

/* ---- ranges ------------------------------------------------------------- */

static int by_offset(const void *a, const void *b)
{
	const struct crc32c_range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Sorts the ranges and merges the adjacent ones; false on an overlap. */
static bool compact(struct crc32c_ranges *r)
{
	size_t i, k = 0;

	if (r->n < 2)
		return true;
	qsort(r->ranges, r->n, sizeof(*r->ranges), by_offset);
	for (i = 1; i < r->n; i++) {
		struct crc32c_range *last = &r->ranges[k], *next = &r->ranges[i];

		if (next->off < last->off + last->len)
			return false;
		if (next->off == last->off + last->len) {
			last->crc = crc32c_combine(last->crc, next->crc, next->len);
			last->len += next->len;
		} else {
			r->ranges[++k] = *next;
		}
	}
	r->n = k + 1;
	return true;
}

void crc32c_ranges_add(struct crc32c_ranges *r, uint64_t off, uint64_t len, uint32_t crc)
{
	if (len == 0)
		return;
	if (r->n == r->cap) {
		/* Merging first keeps a file written in order at a few ranges. */
		if (r->n >= 64 && compact(r) && r->n < r->cap / 2)
			goto add;
		r->cap = r->cap ? r->cap * 2 : 64;
		r->ranges = xrealloc(r->ranges, r->cap * sizeof(*r->ranges));
	}
add:
	r->ranges[r->n++] = (struct crc32c_range){off, len, crc};
}

int crc32c_ranges_total(struct crc32c_ranges *r, uint64_t size, uint32_t *out)
{
	if (!compact(r))
		return -1;
	if (size == 0 && r->n == 0) {
		*out = 0;
		return 0;
	}
	if (r->n != 1 || r->ranges[0].off != 0 || r->ranges[0].len != size)
		return -1;
	*out = r->ranges[0].crc;
	return 0;
}

void crc32c_ranges_fini(struct crc32c_ranges *r)
{
	free(r->ranges);
	memset(r, 0, sizeof(*r));
}
