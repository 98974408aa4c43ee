/* SPDX-License-Identifier: MIT */
/*
 * automodel_native: consolidation and conversion to the native layout in
 * one pass.  The model adapter plans from a checkpoint of descriptions of
 * the consolidated tensors (full shapes, dtypes restored as a
 * consolidation restores them); each of its ops, which reads a matrix of a
 * full tensor, is then rewritten into ops that read the same elements from
 * the chunks holding them, so the plan reads the shards directly.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/plan.h"
#include "ckptconv/util.h"
#include "automodel_internal.h"

/* ---- the consolidated tensors, described ------------------------------- */

struct full_entry {
	const char *name;
	uint32_t tensor; /* into automodel.tensors */
};

static int compare_entries(const void *pa, const void *pb)
{
	const struct full_entry *a = pa, *b = pb;
	int c = natural_compare(a->name, b->name);

	return c ? c : strcmp(a->name, b->name);
}

/* A ckpt of the full tensors in natural order (as ckpt_open lists them),
 * no store, no files; *order[i] is full tensor i's automodel tensor. */
static struct ckpt *full_ckpt(const struct automodel *am, const struct ckpt *chunks,
			      enum dtype_choice dtype, uint32_t **order)
{
	struct full_entry *entries = xcalloc(am->ntensors ? am->ntensors : 1, sizeof(*entries));
	struct ckpt *c = xcalloc(1, sizeof(*c));
	size_t i;
	int d;

	for (i = 0; i < am->ntensors; i++)
		entries[i] = (struct full_entry){am->tensors[i].name, (uint32_t)i};
	qsort(entries, am->ntensors, sizeof(*entries), compare_entries);
	c->tensors = xcalloc(am->ntensors ? am->ntensors : 1, sizeof(*c->tensors));
	*order = xcalloc(am->ntensors ? am->ntensors : 1, sizeof(**order));
	for (i = 0; i < am->ntensors; i++) {
		const struct automodel_tensor *t = &am->tensors[entries[i].tensor];
		struct ckpt_tensor *ct = &c->tensors[i];

		(*order)[i] = entries[i].tensor;
		ct->name = t->name;
		ct->dtype = automodel_output_dtype(
			t, dtype == DTYPE_CHOICE_KEEP ? DTYPE_CHOICE_KEEP : DTYPE_CHOICE_AUTO);
		ct->ndim = t->ndim;
		memcpy(ct->shape, t->shape, sizeof(ct->shape));
		ct->nbytes = dtype_size(ct->dtype);
		for (d = 0; d < t->ndim; d++)
			ct->nbytes *= t->shape[d];
		c->total_bytes += ct->nbytes;
	}
	c->ntensors = am->ntensors;
	c->config = json_incref(chunks->config);
	free(entries);
	return c;
}

/* ---- rewriting the ops ------------------------------------------------- */

/* A run of op rows reading the same columns of one chunk at a fixed
 * stride: one op on the chunk. */
struct run {
	uint32_t chunk; /* ckpt (chunk) index */
	uint64_t col;	/* first op column */
	uint64_t n;	/* columns */
	uint64_t row;	/* first op row */
	uint64_t rows;
	uint64_t local;	 /* chunk element of (row, col) */
	uint64_t stride; /* chunk elements between rows (rows > 1) */
	bool open;
};

struct rewrite {
	const struct automodel *am;
	const struct ckpt *chunks;
	const struct automodel_tensor *t;
	const struct plan_op *op; /* the op on the full tensor */
	struct plan_op *out;
	size_t nout, cap;
	struct run *runs; /* open runs, by segment position */
	size_t nruns, runs_cap;
};

static void emit(struct rewrite *w, const struct run *r)
{
	const struct plan_op *op = w->op;
	const struct ckpt_tensor *ch = &w->chunks->tensors[r->chunk];
	size_t cs = dtype_size(ch->dtype), ds = dtype_size(op->dst_dtype);
	struct plan_op *o;

	if (w->nout == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 16;
		w->out = xrealloc(w->out, w->cap * sizeof(*w->out));
	}
	o = &w->out[w->nout++];
	*o = *op;
	o->src = r->chunk;
	o->src_dtype = ch->dtype;
	o->rows = r->rows;
	o->cols = r->n;
	o->src_offset = r->local * cs;
	o->src_stride = (r->rows > 1 ? r->stride : r->n) * cs;
	if (op->transpose)
		o->dst_offset = op->dst_offset + r->col * op->dst_stride + r->row * ds;
	else
		o->dst_offset = op->dst_offset + r->row * op->dst_stride + r->col * ds;
}

/* Row `row` of the op reads `seg` (chunk, first column, columns, chunk
 * element) as its k-th segment: extends the open run k or starts one. */
static void add_segment(struct rewrite *w, size_t k, uint64_t row, uint32_t chunk, uint64_t col,
			uint64_t n, uint64_t local)
{
	struct run *r;

	if (k >= w->runs_cap) {
		size_t old = w->runs_cap;

		w->runs_cap = k + 8;
		w->runs = xrealloc(w->runs, w->runs_cap * sizeof(*w->runs));
		memset(w->runs + old, 0, (w->runs_cap - old) * sizeof(*w->runs));
	}
	if (k >= w->nruns)
		w->nruns = k + 1;
	r = &w->runs[k];
	if (r->open && r->chunk == chunk && r->col == col && r->n == n && r->row + r->rows == row &&
	    local > r->local &&
	    (r->rows == 1 ? local - r->local >= n : local == r->local + r->rows * r->stride)) {
		if (r->rows == 1)
			r->stride = local - r->local;
		r->rows++;
		return;
	}
	if (r->open)
		emit(w, r);
	*r = (struct run){.chunk = chunk,
			  .col = col,
			  .n = n,
			  .row = row,
			  .rows = 1,
			  .local = local,
			  .open = true};
}

/* One op row: elements [flat, flat + cols) of the full tensor, seen as
 * rows of `width` elements, cut where full rows and chunks end. */
static void rewrite_row(struct rewrite *w, uint64_t row, uint64_t flat, uint64_t width)
{
	const struct automodel_tensor *t = w->t;
	uint64_t done = 0, cols = w->op->cols;
	size_t k = 0;

	while (done < cols) {
		uint64_t i = (flat + done) / width, j = (flat + done) % width;
		uint64_t j_end = j + (cols - done) < width ? j + (cols - done) : width;
		uint32_t c;

		/* The chunks holding full row i, in column order. */
		while (j < j_end) {
			uint64_t best_start = UINT64_MAX, best_end = 0, local = 0;
			uint32_t best = UINT32_MAX;

			for (c = 0; c < t->nchunks; c++) {
				const struct automodel_chunk *ch = &w->am->chunks[t->chunks[c]];
				uint64_t ri, rh, cj, cw;

				if (ch->ndim == 2) {
					ri = ch->offsets[0], rh = ch->shape[0];
					cj = ch->offsets[1], cw = ch->shape[1];
				} else {
					ri = 0, rh = 1;
					cj = ch->ndim ? ch->offsets[0] : 0;
					cw = ch->ndim ? ch->shape[0] : 1;
				}
				if (i < ri || i >= ri + rh || cw == 0 || j >= cj + cw || cj > j)
					continue;
				best = t->chunks[c];
				best_start = j;
				best_end = cj + cw < j_end ? cj + cw : j_end;
				local = (i - ri) * cw + (j - cj);
				break;
			}
			if (best == UINT32_MAX)
				return; /* cannot happen: the chunks tile the tensor */
			add_segment(w, k++, row, best, done, best_end - best_start, local);
			done += best_end - best_start;
			j = best_end;
		}
	}
}

static int rewrite_op(struct rewrite *w, const struct plan_op *op, struct err *e)
{
	const struct automodel_tensor *t = w->t;
	size_t vs = dtype_size(op->src_dtype);
	uint64_t width, r;
	size_t k;

	if (t->ndim > 2 || op->src_offset % vs || op->src_stride % vs)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: an op on a %d-dimensional tensor, or unaligned, cannot read "
			       "its chunks",
			       t->name, t->ndim);
	width = t->ndim == 2 ? t->shape[1] : t->ndim == 1 ? t->shape[0] : 1;
	w->op = op;
	w->nruns = 0;
	for (r = 0; r < op->rows; r++)
		rewrite_row(w, r, op->src_offset / vs + r * (op->src_stride / vs), width);
	for (k = 0; k < w->nruns; k++)
		if (w->runs[k].open) {
			emit(w, &w->runs[k]);
			w->runs[k].open = false;
		}
	return 0;
}

static int rewrite_plan(const struct automodel *am, const struct ckpt *chunks,
			const uint32_t *order, struct plan *p, struct err *e)
{
	struct rewrite w = {.am = am, .chunks = chunks};
	size_t i;
	int rc = -1;

	for (i = 0; i < p->ntensors; i++) {
		struct plan_tensor *pt = &p->tensors[i];
		struct plan_op *ops = pt->ops;
		uint32_t j, o;

		w.nout = 0;
		for (j = 0; j < pt->npieces; j++) {
			struct plan_piece *piece = &pt->pieces[j];
			size_t first = w.nout;

			for (o = 0; o < piece->nops; o++) {
				const struct plan_op *op = &ops[piece->first_op + o];

				w.t = &am->tensors[order[op->src]];
				if (rewrite_op(&w, op, e))
					goto out;
			}
			if (w.nout - first > UINT32_MAX) {
				err_set(e, ERR_PLAN_INVALID, "%s: too many ops", pt->name);
				goto out;
			}
			piece->first_op = (uint32_t)first;
			piece->nops = (uint32_t)(w.nout - first);
		}
		free(pt->ops);
		pt->ops = w.out;
		pt->nops = (uint32_t)w.nout;
		w.out = NULL;
		w.cap = 0;
	}
	rc = 0;
out:
	free(w.out);
	free(w.runs);
	return rc;
}

int automodel_build_native_plan(const struct automodel *am, const struct ckpt *chunks,
				const struct adapter_options *ao, const struct plan_options *po,
				struct plan **out, struct err *e)
{
	const struct adapter *a;
	struct model_info info;
	uint32_t *order = NULL;
	struct ckpt *full = full_ckpt(am, chunks, ao->dtype, &order);
	struct plan *p = NULL;
	size_t i;
	int rc = -1;

	*out = NULL;
	if (!full->config) {
		err_set(e, ERR_MISSING_CONFIG, "%s/%s/config.json is missing", am->location,
			AUTOMODEL_METADATA_DIR);
		goto out;
	}
	a = adapter_for(full, e);
	if (!a || a->describe(full, &info, e))
		goto out;
	if (info.layout != LAYOUT_HF) {
		err_set(e, ERR_UNKNOWN_LAYOUT, "%s: the consolidated tensors are not in HF layout",
			am->location);
		goto out;
	}
	p = plan_new(full, LAYOUT_HF, ao->to);
	if (a->build_plan(full, ao, p, e) || rewrite_plan(am, chunks, order, p, e))
		goto out;
	p->src = chunks;
	if (automodel_add_metadata(p, am, chunks, DTYPE_INVALID, e) || plan_finish(p, po, e) ||
	    a->check_round_trip(full, ao, p, e))
		goto out;
	/* The adapter's check read the sources as full tensors; from here on
	 * they are the chunks the ops read. */
	for (i = 0; i < p->ntensors; i++) {
		struct plan_tensor *pt = &p->tensors[i];
		uint32_t j;

		pt->nsources = 0;
		for (j = 0; j < pt->nops; j++)
			plan_add_source(p, (long)i, pt->ops[j].src);
	}
	*out = p;
	p = NULL;
	rc = 0;
out:
	plan_free(p);
	free(order);
	json_decref(full->config);
	free(full->tensors);
	free(full);
	return rc;
}
