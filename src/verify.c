/* SPDX-License-Identifier: MIT */
/*
 * verify: compares two checkpoints tensor by tensor.  Both are opened (every
 * header validated; config.json not required), their name-sorted tensor
 * lists are merged, and each tensor present on both sides is compared by
 * dtype, shape and then bytes, read through bounded store views so memory
 * stays small at any checkpoint size.  Each difference is one line of the
 * report; file names, shard split and header order are not compared.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "ckptconv/verify.h"

/* Largest window of one tensor viewed at a time, per side: small enough to
 * keep both mapped windows well inside the memory budget. */
#define WINDOW_MAX (16u << 20)

struct comparison {
	const struct ckpt *expected, *actual;
	FILE *out;
	size_t max_lines, lines;
	struct verify_report *report;
};

static void note(struct comparison *c, size_t *counter, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Counts one difference and prints its line while lines remain. */
static void note(struct comparison *c, size_t *counter, const char *fmt, ...)
{
	va_list ap;

	(*counter)++;
	c->report->differences++;
	if (!c->out || c->lines >= c->max_lines)
		return;
	c->lines++;
	va_start(ap, fmt);
	vfprintf(c->out, fmt, ap);
	va_end(ap);
	fputc('\n', c->out);
}

static void format_shape(const struct ckpt_tensor *t, char *buf, size_t len)
{
	size_t used;
	int i;

	used = (size_t)snprintf(buf, len, "[");
	for (i = 0; i < t->ndim && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, i ? ", " : "",
					 t->shape[i]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

static int same_shape(const struct ckpt_tensor *a, const struct ckpt_tensor *b)
{
	int i;

	if (a->ndim != b->ndim)
		return 0;
	for (i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return 1;
}

/* Byte position of the first difference of two equal-length runs. */
static size_t first_difference(const unsigned char *a, const unsigned char *b, size_t len)
{
	size_t i = 0;

	while (i + 4096 <= len && memcmp(a + i, b + i, 4096) == 0)
		i += 4096;
	while (a[i] == b[i])
		i++;
	return i;
}

/* Compares the bytes of two tensors of equal size a window at a time.
 * *diff_at is set to the first differing byte, or UINT64_MAX. */
static int compare_bytes(const struct comparison *c, const struct ckpt_tensor *x,
			 const struct ckpt_tensor *y, uint64_t *diff_at, struct err *e)
{
	struct store_view vx, vy;
	uint64_t done;
	size_t len;

	*diff_at = UINT64_MAX;
	for (done = 0; done < x->nbytes && *diff_at == UINT64_MAX; done += len) {
		len = x->nbytes - done < WINDOW_MAX ? (size_t)(x->nbytes - done) : WINDOW_MAX;
		if (store_view(c->expected->store, c->expected->files[x->file].name,
			       x->offset + done, len, &vx, e))
			return -1;
		if (store_view(c->actual->store, c->actual->files[y->file].name, y->offset + done,
			       len, &vy, e)) {
			store_view_release(&vx);
			return -1;
		}
		if (memcmp(vx.data, vy.data, len) != 0)
			*diff_at = done + first_difference(vx.data, vy.data, len);
		store_view_release(&vy);
		store_view_release(&vx);
	}
	return 0;
}

static int compare_tensor(struct comparison *c, const struct ckpt_tensor *x,
			  const struct ckpt_tensor *y, struct err *e)
{
	struct verify_report *r = c->report;
	char sx[160], sy[160];
	uint64_t diff_at;
	int mismatch = 0;

	r->tensors_compared++;
	if (x->dtype != y->dtype) {
		note(c, &r->dtype_mismatch, "dtype differs: %s: %s vs %s", x->name,
		     dtype_name(x->dtype), dtype_name(y->dtype));
		mismatch = 1;
	}
	if (!same_shape(x, y)) {
		format_shape(x, sx, sizeof(sx));
		format_shape(y, sy, sizeof(sy));
		note(c, &r->shape_mismatch, "shape differs: %s: %s vs %s", x->name, sx, sy);
		mismatch = 1;
	}
	if (mismatch || x->nbytes != y->nbytes)
		return 0;
	if (compare_bytes(c, x, y, &diff_at, e)) {
		err_set_tensor(e, x->name);
		return -1;
	}
	if (diff_at != UINT64_MAX)
		note(c, &r->bytes_mismatch,
		     "bytes differ: %s (first difference at byte %" PRIu64 ")", x->name, diff_at);
	return 0;
}

/* The order ckpt sorts tensors in. */
static int compare_names(const char *a, const char *b)
{
	int cmp = natural_compare(a, b);

	return cmp ? cmp : strcmp(a, b);
}

static int compare_all(struct comparison *c, struct err *e)
{
	const struct ckpt *x = c->expected, *y = c->actual;
	struct verify_report *r = c->report;
	size_t i = 0, j = 0;
	int cmp;

	while (i < x->ntensors || j < y->ntensors) {
		if (i == x->ntensors)
			cmp = 1;
		else if (j == y->ntensors)
			cmp = -1;
		else
			cmp = compare_names(x->tensors[i].name, y->tensors[j].name);
		if (cmp < 0) {
			note(c, &r->only_expected, "only in expected: %s", x->tensors[i++].name);
		} else if (cmp > 0) {
			note(c, &r->only_actual, "only in actual: %s", y->tensors[j++].name);
		} else {
			if (compare_tensor(c, &x->tensors[i], &y->tensors[j], e))
				return -1;
			i++;
			j++;
		}
	}
	return 0;
}

/* c's layout as its adapter detects it; LAYOUT_UNKNOWN when no adapter
 * knows c (verify compares any two safetensors checkpoints). */
static enum layout layout_of(const struct ckpt *c)
{
	const struct adapter *a;
	enum layout l = LAYOUT_UNKNOWN;
	struct err ignored = {0};

	a = adapter_for(c, &ignored);
	if (!a || a->detect(c, &l, &ignored) < 0)
		return LAYOUT_UNKNOWN;
	return l;
}

/* Two sides in different layouts share few tensor names: say so, rather
 * than leave a list of names only one side has unexplained. */
static void note_layouts(struct comparison *c)
{
	enum layout x = layout_of(c->expected), y = layout_of(c->actual);

	if (x == LAYOUT_UNKNOWN || y == LAYOUT_UNKNOWN || x == y)
		return;
	c->report->layouts_differ = true;
	if (c->out)
		fprintf(c->out,
			"note: expected is in the %s layout and actual in the %s one; verify "
			"compares tensors by name: convert one side first\n",
			layout_name(x), layout_name(y));
}

int verify_checkpoints(const char *expected, const char *actual, const struct store_config *cfg,
		       FILE *out, size_t max_lines, struct verify_report *report, struct err *e)
{
	struct comparison c = {.out = out, .max_lines = max_lines, .report = report};
	struct ckpt *x = NULL, *y = NULL;
	int rc = -1;

	memset(report, 0, sizeof(*report));
	if (ckpt_open_config(expected, 0, cfg, &x, e))
		goto out;
	if (ckpt_open_config(actual, 0, cfg, &y, e))
		goto out_expected;
	c.expected = x;
	c.actual = y;
	note_layouts(&c);
	rc = compare_all(&c, e);
	ckpt_free(y);
out_expected:
	ckpt_free(x);
out:
	return rc;
}
