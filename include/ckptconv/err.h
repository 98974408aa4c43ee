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

#define ERR_MSG_MAX 512
#define ERR_TENSOR_MAX 256

struct err {
	const char *code;           /* NULL while no error is set; static string */
	int errnum;                 /* errno of the failing call, 0 if none */
	char msg[ERR_MSG_MAX];      /* one sentence, no trailing newline */
	char tensor[ERR_TENSOR_MAX]; /* tensor at fault, "" if none */
};

/* Sets the error if none is set yet; returns -1 so callers can
 * `return err_set(e, ...)`.  `e` may be NULL.  `code` must be in the
 * catalogue (checked by the tests). */
int err_set(struct err *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* As err_set, appending ": strerror(errnum)" and recording errnum. */
int err_set_errno(struct err *e, const char *code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Records the tensor at fault (kept only if no tensor is recorded yet). */
void err_set_tensor(struct err *e, const char *tensor);
void err_clear(struct err *e);
int err_is_set(const struct err *e);

/* Catalogue look-ups. */
struct err_code {
	const char *code;
	int http_status;
	const char *description;
};
const struct err_code *err_catalogue(size_t *n);
int err_http_status(const char *code); /* 500 for unknown codes */
int err_code_known(const char *code);

#endif
