/* SPDX-License-Identifier: MIT */
/*
 * util: small pure helpers shared by the modules: overflow-checked
 * arithmetic, the size syntax of SPEC.md, natural name ordering, string
 * vectors.
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

void *xmalloc(size_t n);   /* aborts on out-of-memory */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Overwrites a NUL-terminated secret (a key, a token) with zeros, in a way
 * the compiler keeps, then frees it; NULL is a no-op. */
void secret_free(char *s);

/* Monotonic seconds. */
double now_seconds(void);

#endif
