/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h: what every libFuzzer target of tests/fuzz/ checks besides the
 * sanitizers: a failing parse reports an error code from the catalogue,
 * and not one of a bug; a successful one reports none; the properties a
 * target asserts hold.  A broken property aborts, which libFuzzer records
 * as a crash with its input.
 */
#ifndef CKPTCONV_FUZZ_H
#define CKPTCONV_FUZZ_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

__attribute__((format(printf, 1, 2), noreturn)) static inline void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz: property broken: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* The little-endian 64-bit number at b (a safetensors header's length). */
static inline uint64_t fuzz_le64(const uint8_t *b)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

/* rc is a parser's result (0 or negative) and e its error.  plan_invalid
 * and internal_error say the program is wrong (docs/errors.md): no input
 * may cause them. */
static inline void fuzz_check_err(const char *what, int rc, const struct err *e)
{
	if (rc == 0 && e->code)
		fuzz_fail("%s succeeded but set error %s (%s)", what, err_name(e->code), e->msg);
	if (rc < 0 && !e->code)
		fuzz_fail("%s failed without an error code", what);
	if (rc < 0 && (e->code <= ERR_NONE || e->code >= ERR_COUNT))
		fuzz_fail("%s failed with code %d, which is not in the catalogue", what, (int)e->code);
	if (rc < 0 && (e->code == ERR_PLAN_INVALID || e->code == ERR_INTERNAL_ERROR))
		fuzz_fail("%s failed with %s: %s", what, err_name(e->code), e->msg);
	if (rc > 0)
		fuzz_fail("%s returned %d", what, rc);
}

#endif
