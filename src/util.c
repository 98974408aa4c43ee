/* SPDX-License-Identifier: MIT */
/*
 * util: overflow-checked arithmetic, the size syntax, natural ordering,
 * string vectors and allocation that aborts on exhaustion.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "ckptconv/err.h"
#include "ckptconv/util.h"

bool u64_mul(uint64_t a, uint64_t b, uint64_t *out)
{
	return !__builtin_mul_overflow(a, b, out);
}

bool u64_add(uint64_t a, uint64_t b, uint64_t *out)
{
	return !__builtin_add_overflow(a, b, out);
}

static const struct {
	const char *suffix;
	uint64_t factor;
} size_units[] = {
	{"", 1}, {"b", 1},
	{"kb", 1000ULL}, {"mb", 1000ULL * 1000}, {"gb", 1000ULL * 1000 * 1000},
	{"tb", 1000ULL * 1000 * 1000 * 1000},
	{"kib", 1ULL << 10}, {"mib", 1ULL << 20}, {"gib", 1ULL << 30}, {"tib", 1ULL << 40},
};

int size_parse(const char *text, uint64_t *out, struct err *e)
{
	const char *p = text;
	uint64_t value = 0;
	size_t i;

	if (!text || !isdigit((unsigned char)*p))
		return err_set(e, ERR_INVALID_SIZE, "'%s' is not a size (examples: 5GB, 500MiB, 40kb, 123)",
			       text ? text : "");
	while (isdigit((unsigned char)*p)) {
		if (!u64_mul(value, 10, &value) || !u64_add(value, (uint64_t)(*p - '0'), &value))
			return err_set(e, ERR_INVALID_SIZE, "size '%s' is too large", text);
		p++;
	}
	for (i = 0; i < sizeof(size_units) / sizeof(size_units[0]); i++) {
		if (strcasecmp(p, size_units[i].suffix) == 0) {
			if (!u64_mul(value, size_units[i].factor, out))
				return err_set(e, ERR_INVALID_SIZE, "size '%s' is too large", text);
			return 0;
		}
	}
	return err_set(e, ERR_INVALID_SIZE,
		       "'%s' has an unknown unit (use KB, MB, GB, TB or KiB, MiB, GiB, TiB)", text);
}

void size_format(uint64_t bytes, char *buf, size_t len)
{
	static const char *units[] = {"B", "KB", "MB", "GB", "TB", "PB"};
	double v = (double)bytes;
	int u = 0;

	while (v >= 1000.0 && u < 5) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.2f %s", v, units[u]);
}

int natural_compare(const char *a, const char *b)
{
	while (*a && *b) {
		if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
			const char *da, *db;
			size_t la, lb;
			int c;

			while (*a == '0' && isdigit((unsigned char)a[1]))
				a++;
			while (*b == '0' && isdigit((unsigned char)b[1]))
				b++;
			for (da = a; isdigit((unsigned char)*da); da++)
				;
			for (db = b; isdigit((unsigned char)*db); db++)
				;
			la = (size_t)(da - a);
			lb = (size_t)(db - b);
			if (la != lb)
				return la < lb ? -1 : 1;
			c = memcmp(a, b, la);
			if (c)
				return c < 0 ? -1 : 1;
			a = da;
			b = db;
			continue;
		}
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		a++;
		b++;
	}
	if (*a == *b)
		return 0;
	return *a ? 1 : -1;
}

int strvec_push(struct strvec *v, const char *s)
{
	if (v->len == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 8;
		v->items = xrealloc(v->items, v->cap * sizeof(*v->items));
	}
	v->items[v->len++] = xstrdup(s);
	return 0;
}

int strvec_pushf(struct strvec *v, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int rc;

	va_start(ap, fmt);
	rc = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return -1;
	strvec_push(v, s);
	free(s);
	return 0;
}

void strvec_fini(struct strvec *v)
{
	size_t i;

	for (i = 0; i < v->len; i++)
		free(v->items[i]);
	free(v->items);
	memset(v, 0, sizeof(*v));
}

static void out_of_memory(size_t n)
{
	fprintf(stderr, "ckptconv: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		out_of_memory(n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		out_of_memory(n * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		out_of_memory(n);
	return q;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		out_of_memory(strlen(s) + 1);
	return p;
}

void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- buffers ------------------------------------------------------------ */

static void buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	b->cap = b->cap ? b->cap : 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

void buf_append(struct buf *b, const void *data, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void buf_json_string(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *run = p;

	buf_append(b, "\"", 1);
	for (; *p; p++) {
		char esc[6], hex[3];

		if (*p >= 0x20 && *p != '"' && *p != '\\')
			continue;
		buf_append(b, (const char *)run, (size_t)(p - run));
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			buf_append(b, esc, 2);
		} else {
			memcpy(esc, "\\u00", 4);
			hex_encode(p, 1, hex);
			memcpy(esc + 4, hex, 2);
			buf_append(b, esc, 6);
		}
		run = p + 1;
	}
	buf_append(b, (const char *)run, (size_t)(p - run));
	buf_append(b, "\"", 1);
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629, section 4:
 * no overlong forms, no surrogates, nothing above U+10FFFF), 0 if the
 * bytes there are not one. */
static size_t utf8_sequence(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* The code point of the well-formed UTF-8 sequence of len bytes at p. */
static uint32_t utf8_code_point(const unsigned char *p, size_t len)
{
	uint32_t cp = len == 2 ? p[0] & 0x1fu : len == 3 ? p[0] & 0x0fu : p[0] & 0x07u;
	size_t i;

	for (i = 1; i < len; i++)
		cp = cp << 6 | (p[i] & 0x3fu);
	return cp;
}

/* Whether a terminal acts on cp or draws it invisibly: the C1 controls,
 * and Unicode's bidirectional and zero-width format characters (UAX #9
 * explicit formatting; ZWSP/ZWNJ/ZWJ, LRM/RLM, ALM, the line and
 * paragraph separators, word joiner and invisible operators, BOM), which
 * can make a shown name read as another (CVE-2021-42574). */
static bool code_point_hidden(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c ||
	       (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
	       (cp >= 0x2060 && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x2069) ||
	       cp == 0xfeff;
}

void buf_append_printable(struct buf *b, const void *data, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = data, *end = p + n;

	while (p < end) {
		size_t i, len = *p >= 0x20 && *p < 0x7f ? 1 : utf8_sequence(p, (size_t)(end - p));

		if (*p == '\\') {
			/* Doubled only where it could be read as an escape's
			 * start: before x, a backslash or what is escaped. */
			bool plain = p + 1 == end || (p[1] >= 0x20 && p[1] < 0x7f &&
						      p[1] != 'x' && p[1] != '\\');

			buf_append(b, "\\\\", plain ? 1 : 2);
			p++;
			continue;
		}
		if (len == 1 || (len > 1 && !code_point_hidden(utf8_code_point(p, len)))) {
			buf_append(b, p, len);
			p += len;
			continue;
		}
		/* a control, a hidden code point or a byte outside UTF-8 */
		for (i = 0; i < (len ? len : 1); i++) {
			char esc[4] = {'\\', 'x', digits[p[i] >> 4], digits[p[i] & 0xf]};

			buf_append(b, esc, 4);
		}
		p += len ? len : 1;
	}
}

void buf_clear(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void buf_fini(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---- hex and SHA-256 ---------------------------------------------------- */

void hex_encode(const void *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *b = bytes;
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

void sha256(const void *data, size_t len, unsigned char out[SHA256_BYTES])
{
	unsigned int n = 0;

	if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) || n != SHA256_BYTES)
		abort();
}

void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_SIZE])
{
	unsigned char md[SHA256_BYTES];

	sha256(data, len, md);
	hex_encode(md, sizeof(md), out);
}

struct sha256_ctx {
	EVP_MD_CTX *md;
};

struct sha256_ctx *sha256_begin(void)
{
	struct sha256_ctx *c = xmalloc(sizeof(*c));

	c->md = EVP_MD_CTX_new();
	if (!c->md || !EVP_DigestInit_ex(c->md, EVP_sha256(), NULL))
		abort();
	return c;
}

void sha256_add(struct sha256_ctx *c, const void *data, size_t len)
{
	if (!EVP_DigestUpdate(c->md, data, len))
		abort();
}

void sha256_finish_hex(struct sha256_ctx *c, char out[SHA256_HEX_SIZE])
{
	unsigned char md[SHA256_BYTES];
	unsigned int n = 0;

	if (!EVP_DigestFinal_ex(c->md, md, &n) || n != SHA256_BYTES)
		abort();
	hex_encode(md, sizeof(md), out);
	EVP_MD_CTX_free(c->md);
	free(c);
}

void boot_id_read(char out[BOOT_ID_MAX])
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

	out[0] = '\0';
	if (f) {
		if (!fgets(out, BOOT_ID_MAX, f))
			out[0] = '\0';
		fclose(f);
	}
	out[strcspn(out, "\n")] = '\0';
}
