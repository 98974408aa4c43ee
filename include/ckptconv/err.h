/* SPDX-License-Identifier: MIT */
/*
 * err: one error per operation, with a stable snake_case code from the
 * catalogue in err.c (documented in docs/errors.md), the errno if any, and a
 * sentence naming what failed and where.  The first error set wins, so the
 * innermost, most precise failure is the one reported.  The CLI prints the
 * message; the daemon maps the code to an HTTP status.
 */
#ifndef CKPTCONV_ERR_H
#define CKPTCONV_ERR_H

#include <stdarg.h>
#include <stddef.h>

#include "ckptconv/err_catalogue.h"

#define ERR_MSG_MAX 512
#define ERR_TENSOR_MAX 256

/* The error codes: ERR_NONE (0, no error) and one constant per catalogue
 * entry, in catalogue order; err_name() gives the stable wire name. */
enum err_code {
	ERR_NONE = 0,
#define ERR_ENUM_(id, name, http_status, description) id,
	ERR_CATALOGUE(ERR_ENUM_)
#undef ERR_ENUM_
	ERR_COUNT
};

struct err {
	enum err_code code;         /* ERR_NONE while no error is set */
	int errnum;                 /* errno of the failing call, 0 if none */
	char msg[ERR_MSG_MAX];      /* one sentence, no trailing newline */
	char tensor[ERR_TENSOR_MAX]; /* tensor at fault, "" if none */
};

/* Sets the error if none is set yet; returns -1 so callers can
 * `return err_set(e, ...)`.  `e` may be NULL.  `code` is not ERR_NONE. */
int err_set(struct err *e, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* As err_set, appending ": strerror(errnum)" and recording errnum. */
int err_set_errno(struct err *e, enum err_code code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Records the tensor at fault (kept only if no tensor is recorded yet). */
void err_set_tensor(struct err *e, const char *tensor);
void err_clear(struct err *e);
int err_is_set(const struct err *e);

/* One catalogue entry: the wire name, HTTP status and description. */
struct err_entry {
	const char *code;
	int http_status;
	const char *description;
};
/* The catalogue: entry i describes code i + 1 (ERR_NONE has none); *n is
 * ERR_COUNT - 1.  Static storage; any thread. */
const struct err_entry *err_catalogue(size_t *n);
/* The stable snake_case name of `code` ("internal_error" for ERR_NONE or an
 * out-of-range value); static storage. */
const char *err_name(enum err_code code);
/* The code named `name` (a wire name from docs/errors.md), ERR_NONE when
 * `name` is NULL or names no code. */
enum err_code err_code_parse(const char *name);
/* Whether `code` is one of the object store's (the s3_* codes and
 * clock_skew). */
int err_is_s3(enum err_code code);
/* The HTTP status of `code`; 500 for ERR_NONE or an out-of-range value. */
int err_http_status(enum err_code code);

#endif
