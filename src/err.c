/* SPDX-License-Identifier: MIT */
/*
 * err: the error record and the catalogue of error codes shared by the CLI
 * and the HTTP API.  docs/errors.md documents every entry of the table; a
 * test checks that the two agree.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"

static const struct err_entry catalogue[] = {
#define ERR_ENTRY_(id, name, http_status, description) {name, http_status, description},
	ERR_CATALOGUE(ERR_ENTRY_)
#undef ERR_ENTRY_
};

_Static_assert(sizeof(catalogue) / sizeof(catalogue[0]) == ERR_COUNT - 1,
	       "one catalogue entry per error code");

const struct err_entry *err_catalogue(size_t *n)
{
	*n = sizeof(catalogue) / sizeof(catalogue[0]);
	return catalogue;
}

static const struct err_entry *entry(enum err_code code)
{
	if (code <= ERR_NONE || code >= ERR_COUNT)
		return NULL;
	return &catalogue[code - 1];
}

const char *err_name(enum err_code code)
{
	const struct err_entry *c = entry(code);

	return c ? c->code : "internal_error";
}

enum err_code err_code_parse(const char *name)
{
	size_t i;

	if (!name)
		return ERR_NONE;
	for (i = 0; i < sizeof(catalogue) / sizeof(catalogue[0]); i++)
		if (strcmp(catalogue[i].code, name) == 0)
			return (enum err_code)(i + 1);
	return ERR_NONE;
}

int err_is_s3(enum err_code code)
{
	return code >= ERR_S3_ERROR && code <= ERR_CLOCK_SKEW;
}

int err_http_status(enum err_code code)
{
	const struct err_entry *c = entry(code);

	return c ? c->http_status : 500;
}

static int vset(struct err *e, enum err_code code, int errnum, const char *fmt, va_list ap)
{
	size_t used;

	if (!e || e->code)
		return -1;
	e->code = code;
	e->errnum = errnum;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	if (errnum) {
		used = strlen(e->msg);
		snprintf(e->msg + used, sizeof(e->msg) - used, ": %s", strerror(errnum));
	}
	return -1;
}

int err_set(struct err *e, enum err_code code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, code, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int err_set_errno(struct err *e, enum err_code code, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(e, code, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

void err_set_tensor(struct err *e, const char *tensor)
{
	if (e && tensor && !e->tensor[0])
		snprintf(e->tensor, sizeof(e->tensor), "%s", tensor);
}

void err_clear(struct err *e)
{
	if (e)
		memset(e, 0, sizeof(*e));
}

int err_is_set(const struct err *e)
{
	return e && e->code;
}
