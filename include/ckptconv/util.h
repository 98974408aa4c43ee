/* SPDX-License-Identifier: MIT */
/*
 * util: small pure helpers shared by the modules: overflow-checked
 * arithmetic, the size syntax of SPEC.md, natural name ordering, string
 * vectors, a growable buffer, hex and SHA-256.
 */
#ifndef CKPTCONV_UTIL_H
#define CKPTCONV_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;

/* a*b and a+b into *out; false on overflow. */
bool u64_mul(uint64_t a, uint64_t b, uint64_t *out);
bool u64_add(uint64_t a, uint64_t b, uint64_t *out);

/* "5GB", "500MiB", "40kb", "123": powers of 1000 (KB MB GB TB) or 1024
 * (KiB MiB GiB TiB), case-insensitive.  Error code "invalid_size". */
int size_parse(const char *text, uint64_t *out, struct err *e);
/* 1.23 GB style, for humans. */
void size_format(uint64_t bytes, char *buf, size_t len);

/* strcmp with digit runs compared as numbers ("layers.2" < "layers.10"). */
int natural_compare(const char *a, const char *b);

/* Growable vector of owned strings. */
struct strvec {
	char **items;
	size_t len, cap;
};
int strvec_push(struct strvec *v, const char *s);        /* copies s; -1 on ENOMEM */
int strvec_pushf(struct strvec *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strvec_fini(struct strvec *v);

/* A growable byte buffer, kept NUL-terminated (data is NULL while empty
 * and never written).  Growing aborts on out-of-memory, like xmalloc. */
struct buf {
	char *data;
	size_t len, cap;
};
void buf_append(struct buf *b, const void *data, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal, quotes included. */
void buf_json_string(struct buf *b, const char *s);
/* The n bytes at data with every byte a terminal would act on written as
 * `\xNN` (lowercase hex), as `ls -b` and systemd's escaping do, so that
 * text from elsewhere (a daemon's answer, a file name) can be shown
 * without moving the cursor, setting the title or the clipboard (ECMA-48
 * escape sequences, OSC 52): the C0 controls and DEL (0x00-0x1f, 0x7f),
 * the C1 controls U+0080-U+009F, Unicode's bidirectional and zero-width
 * format characters (U+061C, U+200B-U+200F, U+2028-U+202E,
 * U+2060-U+2064, U+2066-U+2069, U+FEFF: every byte of their UTF-8 form),
 * and each byte that is not part of well-formed UTF-8 (RFC 3629).  A
 * backslash followed by `x`, by another backslash or by a byte that is
 * escaped becomes `\\`, so that the result reads back unambiguously; any
 * other backslash is kept (a pattern such as `(a)\1` shows as typed).
 * Any other UTF-8 is kept.  Appends to b. */
void buf_append_printable(struct buf *b, const void *data, size_t n);

/* "s" unless n is 1: the plural ending of an English count in a message
 * ("%llu tensor%s").  A static string; any thread. */
static inline const char *plural_s(unsigned long long n)
{
	return n == 1 ? "" : "s";
}
/* Empties b, keeping its memory. */
void buf_clear(struct buf *b);
/* Frees b's memory and empties it. */
void buf_fini(struct buf *b);

/* This machine's boot id (/proc/sys/kernel/random/boot_id: a UUID, new at
 * every boot) into out; "" when /proc does not say.  Any thread. */
#define BOOT_ID_MAX 40
void boot_id_read(char out[BOOT_ID_MAX]);

void *xmalloc(size_t n);   /* aborts on out-of-memory */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Overwrites a NUL-terminated secret (a key, a token) with zeros, in a way
 * the compiler keeps, then frees it; NULL is a no-op. */
void secret_free(char *s);

/* Monotonic seconds. */
double now_seconds(void);

/* ---- hex and SHA-256 (OpenSSL) ---- */

#define SHA256_BYTES 32
#define SHA256_HEX_SIZE 65 /* 64 lowercase hex digits and a NUL */

/* The n bytes as 2n lowercase hex digits and a NUL, into out. */
void hex_encode(const void *bytes, size_t n, char *out);
/* SHA-256 of the len bytes at data, raw or as hex (aborts if OpenSSL
 * fails, as on out-of-memory). */
void sha256(const void *data, size_t len, unsigned char out[SHA256_BYTES]);
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_SIZE]);
/* The same over data given in pieces: begin, add any number of times,
 * then finish, which frees the context.  One thread at a time. */
struct sha256_ctx;
struct sha256_ctx *sha256_begin(void);
void sha256_add(struct sha256_ctx *c, const void *data, size_t len);
void sha256_finish_hex(struct sha256_ctx *c, char out[SHA256_HEX_SIZE]);

#endif
