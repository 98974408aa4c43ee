/* SPDX-License-Identifier: MIT */
/*
 * plan: the description of a conversion that is complete before any data
 * moves.  Adapters append output tensors made of pieces and ops; plan_finish
 * drops excluded names, puts the tensors in natural order, checks every op
 * against its source and piece, assigns shards, and builds each file's
 * header and the index, so that the executor only has to copy bytes.  The
 * same source and options always give the same plan, byte for byte.
 */
#include <inttypes.h>
#include <jansson.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/exclude.h"
#include "ckptconv/kernels.h"
#include "ckptconv/plan.h"

#define PRINT_SOURCES_MAX 3

const char *layout_name(enum layout l)
{
	switch (l) {
	case LAYOUT_HF:
		return "hf";
	case LAYOUT_NATIVE:
		return "native";
	default:
		return "unknown";
	}
}

/* ---- building ---------------------------------------------------------- */

static size_t next_pow2(size_t n)
{
	size_t c = 1;

	while (c < n)
		c <<= 1;
	return c;
}

/* Arrays grow to powers of two: one with n items has room for
 * next_pow2(n), so the capacity need not be stored. */
static void *reserve(void *items, size_t n, size_t add, size_t size)
{
	if (n + add <= (n ? next_pow2(n) : 0))
		return items;
	return xrealloc(items, next_pow2(n + add) * size);
}

struct plan *plan_new(const struct ckpt *src, enum layout from, enum layout to)
{
	struct plan *p = xcalloc(1, sizeof(*p));
	size_t i;

	p->src = src;
	p->from = from;
	p->to = to;
	if (src) {
		for (i = 0; i < src->copy_files.len; i++)
			strvec_push(&p->copy_files, src->copy_files.items[i]);
		for (i = 0; i < src->warnings.len; i++)
			strvec_push(&p->warnings, src->warnings.items[i]);
	}
	return p;
}

static void tensor_fini(struct plan_tensor *t)
{
	free(t->name);
	free(t->pieces);
	free(t->ops);
	free(t->sources);
}

void plan_free(struct plan *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->ntensors; i++)
		tensor_fini(&p->tensors[i]);
	free(p->tensors);
	for (i = 0; i < p->nfiles; i++) {
		free(p->files[i].name);
		free(p->files[i].header);
	}
	free(p->files);
	free(p->index_json);
	for (i = 0; i < p->nputs; i++) {
		free(p->puts[i].name);
		free(p->puts[i].data);
	}
	free(p->puts);
	strvec_fini(&p->copy_files);
	strvec_fini(&p->warnings);
	free(p);
}

long plan_add_tensor(struct plan *p, const char *name, enum dtype dtype, int ndim,
		     const uint64_t *shape, struct err *e)
{
	struct plan_tensor *t;
	uint64_t nelems = 1, nbytes;
	int d;

	if (dtype_bits(dtype) == 0)
		return err_set(e, ERR_PLAN_INVALID, "%s: output tensor has no valid dtype", name);
	if (ndim < 0 || ndim > ST_MAX_DIMS)
		return err_set(e, ERR_PLAN_INVALID, "%s: output tensor has %d dimensions", name,
			       ndim);
	for (d = 0; d < ndim; d++)
		if (!u64_mul(nelems, shape[d], &nelems))
			return err_set(e, ERR_PLAN_INVALID, "%s: output tensor size overflows", name);
	if (!dtype_bytes(dtype, nelems, &nbytes))
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: output tensor of %" PRIu64 " elements of %s is not whole bytes "
			       "or overflows",
			       name, nelems, dtype_name(dtype));
	p->tensors = reserve(p->tensors, p->ntensors, 1, sizeof(*p->tensors));
	t = &p->tensors[p->ntensors];
	memset(t, 0, sizeof(*t));
	t->name = xstrdup(name);
	t->dtype = dtype;
	t->ndim = ndim;
	for (d = 0; d < ndim; d++)
		t->shape[d] = shape[d];
	t->nbytes = nbytes;
	return (long)p->ntensors++;
}

static struct plan_tensor *tensor_at(struct plan *p, long t)
{
	return t >= 0 && (size_t)t < p->ntensors ? &p->tensors[t] : NULL;
}

int plan_add_source(struct plan *p, long t, uint32_t src)
{
	struct plan_tensor *pt = tensor_at(p, t);
	uint32_t i;

	if (!pt)
		return -1;
	if (pt->nsources && pt->sources[pt->nsources - 1] == src)
		return 0;
	for (i = 0; i < pt->nsources; i++)
		if (pt->sources[i] == src)
			return 0;
	pt->sources = reserve(pt->sources, pt->nsources, 1, sizeof(*pt->sources));
	pt->sources[pt->nsources++] = src;
	return 0;
}

int plan_add_piece(struct plan *p, long t, uint64_t offset, uint64_t nbytes,
		   const struct plan_op *ops, size_t nops, struct err *e)
{
	struct plan_tensor *pt = tensor_at(p, t);
	struct plan_piece *piece;
	size_t i;

	if (!pt)
		return err_set(e, ERR_PLAN_INVALID,
			       "piece added to output tensor %ld, which does not exist", t);
	if (nops > UINT32_MAX - pt->nops || pt->npieces == UINT32_MAX)
		return err_set(e, ERR_PLAN_INVALID, "%s: too many pieces or ops", pt->name);
	pt->pieces = reserve(pt->pieces, pt->npieces, 1, sizeof(*pt->pieces));
	piece = &pt->pieces[pt->npieces++];
	piece->offset = offset;
	piece->nbytes = nbytes;
	piece->first_op = pt->nops;
	piece->nops = (uint32_t)nops;
	piece->zero_fill = false;
	if (nops) {
		pt->ops = reserve(pt->ops, pt->nops, nops, sizeof(*pt->ops));
		memcpy(&pt->ops[pt->nops], ops, nops * sizeof(*ops));
		pt->nops += (uint32_t)nops;
	}
	for (i = 0; i < nops; i++)
		plan_add_source(p, t, ops[i].src);
	return 0;
}

int plan_zero_fill_last_piece(struct plan *p, long t, struct err *e)
{
	struct plan_tensor *pt = tensor_at(p, t);

	if (!pt || !pt->npieces)
		return err_set(e, ERR_PLAN_INVALID, "zero fill of output tensor %ld: no piece", t);
	pt->pieces[pt->npieces - 1].zero_fill = true;
	return 0;
}

int plan_add_contiguous(struct plan *p, long t, uint32_t src, uint64_t src_offset,
			uint64_t dst_offset, uint64_t nelems, enum dtype src_dtype,
			enum dtype dst_dtype, struct err *e)
{
	uint64_t ssize = dtype_size(src_dtype), dsize = dtype_size(dst_dtype);
	uint64_t per, done, n;
	struct plan_op op;

	if (src_dtype != dst_dtype && (dtype_copy_only(src_dtype) || dtype_copy_only(dst_dtype)))
		return err_set(e, ERR_QUANTIZED_INPUT,
			       "%s is only ever copied byte for byte, never cast to %s",
			       dtype_name(src_dtype), dtype_name(dst_dtype));
	if (!ssize || !dsize)
		return err_set(e, ERR_PLAN_INVALID, "contiguous op with an invalid dtype");
	per = PLAN_PIECE_MAX / dsize;
	if (per > PLAN_WINDOW_MAX / ssize)
		per = PLAN_WINDOW_MAX / ssize;
	plan_add_source(p, t, src);
	for (done = 0; done < nelems; done += n) {
		n = nelems - done < per ? nelems - done : per;
		memset(&op, 0, sizeof(op));
		op.src = src;
		op.src_dtype = src_dtype;
		op.dst_dtype = dst_dtype;
		op.rows = 1;
		op.cols = n;
		op.src_offset = src_offset + done * ssize;
		op.src_stride = n * ssize;
		op.dst_stride = n * dsize;
		if (plan_add_piece(p, t, dst_offset + done * dsize, n * dsize, &op, 1, e) < 0)
			return -1;
	}
	return 0;
}

/* Destination rows of row_bytes bytes that fit one piece (at least one). */
static uint64_t rows_per_piece(uint64_t row_bytes)
{
	return row_bytes >= PLAN_PIECE_MAX ? 1 : PLAN_PIECE_MAX / row_bytes;
}

/* The ops of one piece, reused from piece to piece. */
struct opvec {
	struct plan_op *ops;
	size_t n, cap;
};

static struct plan_op *opvec_add(struct opvec *v)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 8;
		v->ops = xrealloc(v->ops, v->cap * sizeof(*v->ops));
	}
	memset(&v->ops[v->n], 0, sizeof(*v->ops));
	return &v->ops[v->n++];
}

/* Appends the ops writing the transpose of columns [c0, c1) of block b
 * into a piece whose rows are row_bytes apart, dst_col bytes into each
 * row: the block's rows are split so that no op reads a window larger
 * than PLAN_WINDOW_MAX. */
static void add_block_ops(struct opvec *v, const struct plan_block *b, enum dtype from,
			  enum dtype to, uint64_t c0, uint64_t c1, uint64_t dst_col,
			  uint64_t row_bytes)
{
	uint64_t ssize = dtype_size(from), dsize = dtype_size(to);
	uint64_t read = (c1 - c0) * ssize, per, r0, n;
	struct plan_op *op;

	per = read >= PLAN_WINDOW_MAX ? 1 : (PLAN_WINDOW_MAX - read) / b->stride + 1;
	for (r0 = 0; r0 < b->rows; r0 += n) {
		n = b->rows - r0 < per ? b->rows - r0 : per;
		op = opvec_add(v);
		op->src = b->src;
		op->transpose = true;
		op->src_dtype = from;
		op->dst_dtype = to;
		op->rows = n;
		op->cols = c1 - c0;
		op->src_offset = b->offset + r0 * b->stride + c0 * ssize;
		op->src_stride = b->stride;
		op->dst_offset = dst_col + r0 * dsize;
		op->dst_stride = row_bytes;
	}
}

/* The bytes of one destination row: every block's rows, in the dtype of
 * output tensor pt. */
static int transposed_row_bytes(const struct plan *p, const struct plan_tensor *pt,
				const struct plan_block *blocks, size_t nblocks, uint64_t *out,
				struct err *e)
{
	uint64_t bytes, total = 0;
	size_t k;

	for (k = 0; k < nblocks; k++) {
		if (!p->src || blocks[k].src >= p->src->ntensors || blocks[k].stride == 0)
			return err_set(
				e, ERR_PLAN_INVALID,
				"%s: block %zu reads source tensor %u with row stride %" PRIu64,
				pt->name, k, blocks[k].src, blocks[k].stride);
		if (!u64_mul(blocks[k].rows, dtype_size(pt->dtype), &bytes) ||
		    !u64_add(total, bytes, &total))
			return err_set(e, ERR_PLAN_INVALID, "%s: transposed rows overflow", pt->name);
	}
	if (total == 0)
		return err_set(e, ERR_PLAN_INVALID, "%s: transposed rows of no bytes", pt->name);
	*out = total;
	return 0;
}

int plan_add_transposed(struct plan *p, long t, uint64_t offset, uint64_t nrows,
			const struct plan_block *blocks, size_t nblocks, struct err *e)
{
	const struct plan_tensor *pt = tensor_at(p, t);
	uint64_t dsize, row_bytes = 0, per, j0, j1, col;
	struct opvec v = {0};
	enum dtype to;
	size_t k;
	int rc = 0;

	if (!pt)
		return err_set(e, ERR_PLAN_INVALID,
			       "transposed blocks added to output tensor %ld, which does not exist",
			       t);
	for (k = 0; k < nblocks && p->src; k++) {
		const struct ckpt_tensor *s =
			blocks[k].src < p->src->ntensors ? &p->src->tensors[blocks[k].src] : NULL;
		enum dtype bad = s && dtype_copy_only(s->dtype) ? s->dtype : pt->dtype;

		if (dtype_copy_only(bad)) {
			err_set_tensor(e, s ? s->name : pt->name);
			return err_set(e, ERR_QUANTIZED_INPUT,
				       "%s: dtype %s is only ever copied byte for byte, and this "
				       "conversion transposes it into %s",
				       s ? s->name : pt->name, dtype_name(bad), pt->name);
		}
	}
	if (transposed_row_bytes(p, pt, blocks, nblocks, &row_bytes, e) < 0)
		return -1;
	to = pt->dtype;
	dsize = dtype_size(to);
	per = rows_per_piece(row_bytes);
	for (j0 = 0; j0 < nrows && rc == 0; j0 = j1) {
		j1 = nrows - j0 < per ? nrows : j0 + per;
		v.n = 0;
		for (k = 0, col = 0; k < nblocks; col += blocks[k].rows * dsize, k++)
			add_block_ops(&v, &blocks[k], p->src->tensors[blocks[k].src].dtype, to,
				      blocks[k].col + j0, blocks[k].col + j1, col, row_bytes);
		rc = plan_add_piece(p, t, offset + j0 * row_bytes, (j1 - j0) * row_bytes, v.ops,
				    v.n, e);
	}
	free(v.ops);
	return rc;
}

/* ---- finishing --------------------------------------------------------- */

static int drop_excluded(struct plan *p, const char *pattern, struct err *e)
{
	regex_t re;
	size_t i, kept = 0;

	if (!pattern)
		return 0;
	if (exclude_compile(pattern, &re, e) < 0)
		return -1;
	for (i = 0; i < p->ntensors; i++) {
		if (regexec(&re, p->tensors[i].name, 0, NULL, 0) == 0)
			tensor_fini(&p->tensors[i]);
		else
			p->tensors[kept++] = p->tensors[i];
	}
	p->nexcluded += p->ntensors - kept;
	p->ntensors = kept;
	regfree(&re);
	return 0;
}

static int compare_tensors(const void *a, const void *b)
{
	const struct plan_tensor *x = a, *y = b;
	int c = natural_compare(x->name, y->name);

	/* Digit runs that differ only in leading zeros compare equal
	 * naturally; strcmp keeps the order total and so deterministic. */
	return c ? c : strcmp(x->name, y->name);
}

static int sort_tensors(struct plan *p, struct err *e)
{
	size_t i;

	if (p->ntensors > 1)
		qsort(p->tensors, p->ntensors, sizeof(*p->tensors), compare_tensors);
	for (i = 1; i < p->ntensors; i++)
		if (strcmp(p->tensors[i - 1].name, p->tensors[i].name) == 0) {
			err_set_tensor(e, p->tensors[i].name);
			return err_set(e, ERR_DUPLICATE_TENSOR,
				       "%s: two source tensors convert to this output name",
				       p->tensors[i].name);
		}
	return 0;
}

/* Bytes an op spans in a row-major matrix: rows of `row_bytes` bytes,
 * `stride` apart.  False on overflow or rows overlapping. */
static bool span_bytes(uint64_t rows, uint64_t row_bytes, uint64_t stride, uint64_t *out)
{
	uint64_t before;

	if (rows > 1 && stride < row_bytes)
		return false;
	return u64_mul(rows - 1, stride, &before) && u64_add(before, row_bytes, out);
}

static int validate_op(const struct plan *p, const struct plan_tensor *t, uint32_t ipiece,
		       const struct plan_op *op, uint64_t *written, struct err *e)
{
	const struct plan_piece *piece = &t->pieces[ipiece];
	const struct ckpt_tensor *s;
	uint64_t ssize, dsize, window, src_end, drows, dcols, dspan, dst_end, nbytes;

	if (op->src >= p->src->ntensors)
		return err_set(e, ERR_PLAN_INVALID, "%s: piece %u reads source tensor %u of %zu",
			       t->name, ipiece, op->src, p->src->ntensors);
	s = &p->src->tensors[op->src];
	/* Tensors of a dtype narrower than a byte are moved as bytes (U8). */
	if (op->src_dtype != dtype_element(s->dtype) || op->dst_dtype != dtype_element(t->dtype))
		return err_set(e, ERR_PLAN_INVALID, "%s: piece %u converts %s to %s, but %s is %s",
			       t->name, ipiece, dtype_name(op->src_dtype),
			       dtype_name(op->dst_dtype), s->name, dtype_name(s->dtype));
	if (!kern_can_cast(op->src_dtype, op->dst_dtype))
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: piece %u casts %s to %s, which is not supported", t->name,
			       ipiece, dtype_name(op->src_dtype), dtype_name(op->dst_dtype));
	ssize = dtype_size(op->src_dtype);
	dsize = dtype_size(op->dst_dtype);
	drows = op->transpose ? op->cols : op->rows;
	dcols = op->transpose ? op->rows : op->cols;
	if (op->rows == 0 || op->cols == 0 || !u64_mul(op->cols, ssize, &window) ||
	    !span_bytes(op->rows, window, op->src_stride, &window) ||
	    !u64_add(op->src_offset, window, &src_end) || !u64_mul(dcols, dsize, &dspan) ||
	    !span_bytes(drows, dspan, op->dst_stride, &dspan) ||
	    !u64_add(op->dst_offset, dspan, &dst_end) || !u64_mul(op->rows, op->cols, &nbytes) ||
	    !u64_mul(nbytes, dsize, &nbytes))
		return err_set(e, ERR_PLAN_INVALID, "%s: piece %u has an op with impossible geometry",
			       t->name, ipiece);
	if (src_end > s->nbytes)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: piece %u reads bytes [%" PRIu64 ", %" PRIu64
			       ") of %s, which has %" PRIu64,
			       t->name, ipiece, op->src_offset, src_end, s->name, s->nbytes);
	if (window > PLAN_WINDOW_MAX)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: piece %u reads a window of %" PRIu64
			       " bytes of %s, over the limit",
			       t->name, ipiece, window, s->name);
	if (dst_end > piece->nbytes)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: piece %u writes up to byte %" PRIu64 " of its %" PRIu64,
			       t->name, ipiece, dst_end, piece->nbytes);
	*written += nbytes;
	return 0;
}

/* Pieces tile the tensor in order, each filled exactly by its own ops. */
static int validate_tensor(const struct plan *p, const struct plan_tensor *t, struct err *e)
{
	uint64_t expected = 0, written;
	uint32_t i, j, next_op = 0;

	for (i = 0; i < t->npieces; i++) {
		const struct plan_piece *piece = &t->pieces[i];

		if (piece->offset != expected || piece->nbytes == 0 ||
		    piece->nbytes > PLAN_PIECE_MAX)
			return err_set(e, ERR_PLAN_INVALID,
				       "%s: piece %u covers [%" PRIu64 ", +%" PRIu64
				       ") where [%" PRIu64 ", at most +%llu) was due",
				       t->name, i, piece->offset, piece->nbytes, expected,
				       PLAN_PIECE_MAX);
		if (piece->first_op != next_op || piece->nops > t->nops - next_op)
			return err_set(e, ERR_PLAN_INVALID, "%s: piece %u has ops out of order",
				       t->name, i);
		written = 0;
		for (j = 0; j < piece->nops; j++)
			if (validate_op(p, t, i, &t->ops[piece->first_op + j], &written, e) < 0)
				return -1;
		/* A zero-filled piece may leave bytes to its zeros. */
		if (piece->zero_fill ? written > piece->nbytes : written != piece->nbytes)
			return err_set(e, ERR_PLAN_INVALID,
				       "%s: piece %u is %" PRIu64
				       " bytes but its ops write %" PRIu64,
				       t->name, i, piece->nbytes, written);
		next_op += piece->nops;
		expected += piece->nbytes;
	}
	if (expected != t->nbytes || next_op != t->nops)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: pieces cover %" PRIu64 " of %" PRIu64 " bytes", t->name,
			       expected, t->nbytes);
	return 0;
}

static int validate(const struct plan *p, struct err *e)
{
	size_t i;

	if (!p->src)
		return err_set(e, ERR_PLAN_INVALID, "plan has no source checkpoint");
	for (i = 0; i < p->ntensors; i++)
		if (validate_tensor(p, &p->tensors[i], e) < 0) {
			err_set_tensor(e, p->tensors[i].name);
			return -1;
		}
	return 0;
}

/* Fills shards in output order up to max bytes of tensor data; a tensor
 * larger than max gets a shard of its own. */
static void assign_shards(struct plan *p, uint64_t max)
{
	uint64_t used = 0;
	size_t i, nfiles = 0;
	char name[64];

	for (i = 0; i < p->ntensors; i++) {
		struct plan_tensor *t = &p->tensors[i];

		if (i == 0 || (used > 0 && (t->nbytes > max || used > max - t->nbytes))) {
			nfiles++;
			used = 0;
		}
		t->file = (uint32_t)(nfiles - 1);
		used += t->nbytes;
	}
	if (nfiles == 0)
		nfiles = 1;
	p->nfiles = nfiles;
	p->files = xcalloc(nfiles, sizeof(*p->files));
	for (i = 0; i < nfiles; i++) {
		if (nfiles == 1)
			snprintf(name, sizeof(name), CKPT_SINGLE_NAME);
		else
			snprintf(name, sizeof(name), CKPT_SHARD_FORMAT, i + 1, nfiles);
		p->files[i].name = xstrdup(name);
	}
	for (i = 0; i < p->ntensors; i++) {
		struct plan_file *f = &p->files[p->tensors[i].file];

		if (f->ntensors++ == 0)
			f->first_tensor = (uint32_t)i;
	}
}

static int build_header(struct plan *p, struct plan_file *f, struct err *e)
{
	struct st_tensor *st = xcalloc(f->ntensors, sizeof(*st));
	uint64_t offset;
	uint32_t i;
	int rc;

	for (i = 0; i < f->ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[f->first_tensor + i];

		st[i].name = t->name;
		st[i].dtype = t->dtype;
		st[i].ndim = t->ndim;
		memcpy(st[i].shape, t->shape, sizeof(st[i].shape));
	}
	rc = st_header_build(st, f->ntensors, &f->header, &f->header_len, e);
	free(st);
	if (rc < 0)
		return -1;
	offset = f->header_len;
	for (i = 0; i < f->ntensors; i++) {
		struct plan_tensor *t = &p->tensors[f->first_tensor + i];

		t->offset = offset;
		offset += t->nbytes;
	}
	f->size = offset;
	return 0;
}

/* s as jansson writes a JSON string with JSON_ENSURE_ASCII. */
static void append_ascii_string(struct buf *b, const char *s)
{
	json_t *str = json_string(s);
	size_t n;
	char *text;

	if (!str) { /* not UTF-8, which names from parsed headers always are */
		buf_json_string(b, s);
		return;
	}
	n = json_dumpb(str, NULL, 0, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
	text = xmalloc(n ? n : 1);
	json_dumpb(str, text, n, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
	buf_append(b, text, n);
	free(text);
	json_decref(str);
}

/* {"metadata": {"total_size": N}, "weight_map": {name: file}} with an
 * indent of 2 and a final newline, as HF writes it (and as jansson's
 * JSON_INDENT(2) | JSON_ENSURE_ASCII spells it), written entry by entry:
 * no JSON tree of tens of thousands of entries. */
static int build_index(struct plan *p, struct err *e)
{
	struct buf b = {0};
	size_t i;

	(void)e;
	buf_printf(&b,
		   "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": ",
		   p->total_bytes);
	if (p->ntensors == 0)
		buf_puts(&b, "{}");
	for (i = 0; i < p->ntensors; i++) {
		buf_puts(&b, i ? ",\n    " : "{\n    ");
		append_ascii_string(&b, p->tensors[i].name);
		buf_puts(&b, ": ");
		append_ascii_string(&b, p->files[p->tensors[i].file].name);
	}
	if (p->ntensors)
		buf_puts(&b, "\n  }");
	buf_puts(&b, "\n}\n");
	p->index_json = b.data;
	return 0;
}

static void count_totals(struct plan *p)
{
	size_t i;
	uint32_t j;

	p->total_bytes = p->total_file_bytes = p->source_bytes = 0;
	p->npieces = 0;
	for (i = 0; i < p->ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[i];

		p->total_bytes += t->nbytes;
		p->npieces += t->npieces;
		for (j = 0; j < t->nops; j++)
			p->source_bytes +=
				t->ops[j].rows * t->ops[j].cols * dtype_size(t->ops[j].src_dtype);
	}
	for (i = 0; i < p->nfiles; i++)
		p->total_file_bytes += p->files[i].size;
}

int plan_finish(struct plan *p, const struct plan_options *o, struct err *e)
{
	uint64_t max = o && o->max_shard_size ? o->max_shard_size : PLAN_MAX_SHARD_SIZE_DEFAULT;
	size_t i;

	if (p->finished || p->files)
		return err_set(e, ERR_PLAN_INVALID, "plan is already finished");
	if (drop_excluded(p, o ? o->exclude : NULL, e) < 0 || sort_tensors(p, e) < 0 ||
	    validate(p, e) < 0)
		return -1;
	if (o && o->tensors_only) {
		p->finished = true;
		return 0;
	}
	assign_shards(p, max);
	for (i = 0; i < p->nfiles; i++)
		if (build_header(p, &p->files[i], e) < 0)
			return -1;
	count_totals(p);
	if (p->nfiles > 1 && build_index(p, e) < 0)
		return -1;
	p->finished = true;
	return 0;
}

void plan_add_put(struct plan *p, const char *name, char *data, size_t len)
{
	p->puts = reserve(p->puts, p->nputs, 1, sizeof(*p->puts));
	p->puts[p->nputs].name = xstrdup(name);
	p->puts[p->nputs].data = data;
	p->puts[p->nputs].len = len;
	p->nputs++;
}

size_t plan_add_file(struct plan *p, const char *name, char *header, size_t header_len,
		     uint32_t first_tensor, uint32_t ntensors)
{
	struct plan_file *f;
	uint32_t i;

	p->files = reserve(p->files, p->nfiles, 1, sizeof(*p->files));
	f = &p->files[p->nfiles];
	memset(f, 0, sizeof(*f));
	f->name = xstrdup(name);
	f->header = header;
	f->header_len = header_len;
	f->first_tensor = first_tensor;
	f->ntensors = ntensors;
	f->size = header_len;
	for (i = 0; i < ntensors; i++)
		f->size += p->tensors[first_tensor + i].nbytes;
	return p->nfiles++;
}

int plan_finish_laid_out(struct plan *p, struct err *e)
{
	json_t *names = json_object();
	size_t i, j;

	if (p->finished)
		return err_set(e, ERR_PLAN_INVALID, "plan is already finished");
	for (i = 0; i < p->ntensors; i++) {
		if (json_object_get(names, p->tensors[i].name)) {
			json_decref(names);
			return err_set(e, ERR_DUPLICATE_TENSOR, "two output tensors are named '%s'",
				       p->tensors[i].name);
		}
		json_object_set_new(names, p->tensors[i].name, json_true());
	}
	json_decref(names);
	if (validate(p, e) < 0)
		return -1;
	for (i = 0; i < p->nfiles; i++) {
		const struct plan_file *f = &p->files[i];
		uint64_t offset = f->header_len;

		if ((size_t)f->first_tensor + f->ntensors > p->ntensors)
			return err_set(e, ERR_PLAN_INVALID, "%s: tensors out of range", f->name);
		for (j = 0; j < f->ntensors; j++) {
			const struct plan_tensor *t = &p->tensors[f->first_tensor + j];

			if (t->file != i || t->offset != offset)
				return err_set(e, ERR_PLAN_INVALID, "%s: '%s' is not where its header says",
					       f->name, t->name);
			offset += t->nbytes;
		}
		if (offset != f->size)
			return err_set(e, ERR_PLAN_INVALID, "%s: size disagrees with its tensors",
				       f->name);
	}
	count_totals(p);
	p->finished = p->laid_out = true;
	return 0;
}

long plan_find(const struct plan *p, const char *name)
{
	size_t lo = 0, hi = p->ntensors, i;

	if (!p->finished || p->laid_out) {
		for (i = 0; i < p->ntensors; i++)
			if (strcmp(p->tensors[i].name, name) == 0)
				return (long)i;
		return -1;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct plan_tensor key = {.name = (char *)name};
		int c = compare_tensors(&key, &p->tensors[mid]);

		if (c == 0)
			return (long)mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/* ---- describing -------------------------------------------------------- */

static const char *source_name(const struct plan *p, uint32_t src)
{
	return p->src && src < p->src->ntensors ? p->src->tensors[src].name : "?";
}

/* "COPY", "TRANSPOSE", "CAST F32->BF16", "TRANSPOSE+CAST F32->BF16": what
 * the tensor's ops do, together. */
static void summarise_ops(const struct plan_tensor *t, char *buf, size_t len)
{
	bool transpose = false;
	enum dtype cast_from = DTYPE_INVALID;
	uint32_t i;

	for (i = 0; i < t->nops; i++) {
		transpose |= t->ops[i].transpose;
		if (t->ops[i].src_dtype != t->ops[i].dst_dtype)
			cast_from = t->ops[i].src_dtype;
	}
	if (cast_from != DTYPE_INVALID)
		snprintf(buf, len, "%sCAST %s->%s", transpose ? "TRANSPOSE+" : "",
			 dtype_name(cast_from), dtype_name(t->dtype));
	else
		snprintf(buf, len, "%s", transpose ? "TRANSPOSE" : "COPY");
}

static void print_shape(FILE *out, const uint64_t *shape, int ndim)
{
	int d;

	fputc('[', out);
	for (d = 0; d < ndim; d++)
		fprintf(out, "%s%" PRIu64, d ? ", " : "", shape[d]);
	fputc(']', out);
}

static void print_text(const struct plan *p, FILE *out)
{
	char kind[64];
	size_t i;
	uint32_t j;

	fprintf(out,
		"plan %s -> %s: %zu tensors, %zu files, %" PRIu64 " bytes of tensor data, %" PRIu64
		" bytes written, %" PRIu64 " bytes read, %zu pieces\n",
		layout_name(p->from), layout_name(p->to), p->ntensors, p->nfiles, p->total_bytes,
		p->total_file_bytes, p->source_bytes, p->npieces);
	for (i = 0; i < p->nfiles; i++)
		fprintf(out, "file %s %" PRIu64 " bytes, header %zu bytes, %u tensors\n",
			p->files[i].name, p->files[i].size, p->files[i].header_len,
			p->files[i].ntensors);
	for (i = 0; i < p->ntensors; i++) {
		const struct plan_tensor *t = &p->tensors[i];

		summarise_ops(t, kind, sizeof(kind));
		fprintf(out, "tensor %s %s ", t->name, dtype_name(t->dtype));
		print_shape(out, t->shape, t->ndim);
		fprintf(out, " %" PRIu64 " %s: %s", t->nbytes,
			p->files ? p->files[t->file].name : "-", kind);
		for (j = 0; j < t->nsources && j < PRINT_SOURCES_MAX; j++)
			fprintf(out, "%s%s", j ? ", " : " from ", source_name(p, t->sources[j]));
		if (t->nsources > PRINT_SOURCES_MAX)
			fprintf(out, " and %u more", t->nsources - PRINT_SOURCES_MAX);
		fprintf(out, " (%u pieces, %u ops)\n", t->npieces, t->nops);
	}
	for (i = 0; i < p->copy_files.len; i++)
		fprintf(out, "copy %s\n", p->copy_files.items[i]);
	for (i = 0; i < p->warnings.len; i++)
		fprintf(out, "warning %s\n", p->warnings.items[i]);
}

static void print_json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
}

static void print_json_strings(FILE *out, const struct strvec *v)
{
	size_t i;

	fputc('[', out);
	for (i = 0; i < v->len; i++) {
		if (i)
			fputs(", ", out);
		print_json_string(out, v->items[i]);
	}
	fputc(']', out);
}

static void print_json_op(const struct plan *p, const struct plan_op *op, FILE *out)
{
	fprintf(out, "{\"kind\": \"%s\", \"src\": ", op->transpose ? "transpose" : "copy");
	print_json_string(out, source_name(p, op->src));
	fprintf(out,
		", \"src_dtype\": \"%s\", \"dst_dtype\": \"%s\", \"rows\": %" PRIu64
		", \"cols\": %" PRIu64 ", \"src_offset\": %" PRIu64 ", \"src_stride\": %" PRIu64
		", \"dst_offset\": %" PRIu64 ", \"dst_stride\": %" PRIu64 "}",
		dtype_name(op->src_dtype), dtype_name(op->dst_dtype), op->rows, op->cols,
		op->src_offset, op->src_stride, op->dst_offset, op->dst_stride);
}

static void print_json_tensor(const struct plan *p, const struct plan_tensor *t, FILE *out)
{
	uint32_t i, j;

	fputs("    {\"name\": ", out);
	print_json_string(out, t->name);
	fprintf(out, ", \"dtype\": \"%s\", \"shape\": ", dtype_name(t->dtype));
	print_shape(out, t->shape, t->ndim);
	fprintf(out, ", \"nbytes\": %" PRIu64 ", \"file\": ", t->nbytes);
	print_json_string(out, p->files ? p->files[t->file].name : "");
	fprintf(out, ", \"offset\": %" PRIu64 ", \"sources\": [", t->offset);
	for (i = 0; i < t->nsources; i++) {
		if (i)
			fputs(", ", out);
		print_json_string(out, source_name(p, t->sources[i]));
	}
	fputs("], \"pieces\": [", out);
	for (i = 0; i < t->npieces; i++) {
		const struct plan_piece *piece = &t->pieces[i];

		fprintf(out,
			"%s\n      {\"offset\": %" PRIu64 ", \"nbytes\": %" PRIu64 ", \"ops\": [",
			i ? "," : "", piece->offset, piece->nbytes);
		for (j = 0; j < piece->nops; j++) {
			fputs(j ? ", " : "", out);
			print_json_op(p, &t->ops[piece->first_op + j], out);
		}
		fputs("]}", out);
	}
	fputs("]}", out);
}

/* Streamed rather than built with jansson: a plan of a large checkpoint
 * has hundreds of thousands of ops. */
static void print_json(const struct plan *p, FILE *out)
{
	size_t i;

	fprintf(out,
		"{\n  \"from\": \"%s\",\n  \"to\": \"%s\",\n  \"total_bytes\": %" PRIu64
		",\n  \"total_file_bytes\": %" PRIu64 ",\n  \"source_bytes\": %" PRIu64
		",\n  \"pieces\": %zu,\n  \"files\": [",
		layout_name(p->from), layout_name(p->to), p->total_bytes, p->total_file_bytes,
		p->source_bytes, p->npieces);
	for (i = 0; i < p->nfiles; i++) {
		fprintf(out, "%s\n    {\"name\": ", i ? "," : "");
		print_json_string(out, p->files[i].name);
		fprintf(out, ", \"size\": %" PRIu64 ", \"header_bytes\": %zu, \"tensors\": %u}",
			p->files[i].size, p->files[i].header_len, p->files[i].ntensors);
	}
	fputs("],\n  \"index\": ", out);
	fputs(p->index_json ? "\"" CKPT_INDEX_NAME "\"" : "null", out);
	fputs(",\n  \"tensors\": [", out);
	for (i = 0; i < p->ntensors; i++) {
		fputs(i ? ",\n" : "\n", out);
		print_json_tensor(p, &p->tensors[i], out);
	}
	fputs("],\n  \"copy_files\": ", out);
	print_json_strings(out, &p->copy_files);
	fputs(",\n  \"warnings\": ", out);
	print_json_strings(out, &p->warnings);
	fputs("\n}\n", out);
}

void plan_print(const struct plan *p, FILE *out, bool json)
{
	if (json)
		print_json(p, out);
	else
		print_text(p, out);
}

/* ---- digest ------------------------------------------------------------ */

static void digest_u64(struct sha256_ctx *ctx, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	sha256_add(ctx, b, sizeof(b));
}

static void digest_bytes(struct sha256_ctx *ctx, const void *data, size_t len)
{
	digest_u64(ctx, len);
	sha256_add(ctx, data, len);
}

static void digest_tensor(struct sha256_ctx *ctx, const struct plan *p, const struct plan_tensor *t)
{
	const char *src;
	uint32_t i;

	digest_bytes(ctx, t->name, strlen(t->name));
	digest_u64(ctx, t->file);
	digest_u64(ctx, t->offset);
	digest_u64(ctx, t->npieces);
	for (i = 0; i < t->npieces; i++) {
		digest_u64(ctx, t->pieces[i].offset);
		digest_u64(ctx, t->pieces[i].nbytes);
		digest_u64(ctx, t->pieces[i].nops);
	}
	for (i = 0; i < t->nops; i++) {
		const struct plan_op *op = &t->ops[i];

		src = source_name(p, op->src);
		digest_bytes(ctx, src, strlen(src));
		digest_u64(ctx, op->transpose);
		digest_u64(ctx, (uint64_t)op->src_dtype);
		digest_u64(ctx, (uint64_t)op->dst_dtype);
		digest_u64(ctx, op->rows);
		digest_u64(ctx, op->cols);
		digest_u64(ctx, op->src_offset);
		digest_u64(ctx, op->src_stride);
		digest_u64(ctx, op->dst_offset);
		digest_u64(ctx, op->dst_stride);
	}
}

void plan_digest(const struct plan *p, char out[65])
{
	struct sha256_ctx *ctx = sha256_begin();
	size_t f;

	digest_u64(ctx, (uint64_t)p->from);
	digest_u64(ctx, (uint64_t)p->to);
	digest_u64(ctx, p->nfiles);
	for (f = 0; f < p->nfiles; f++) {
		digest_bytes(ctx, p->files[f].name, strlen(p->files[f].name));
		digest_bytes(ctx, p->files[f].header, p->files[f].header_len);
	}
	digest_u64(ctx, p->ntensors);
	for (f = 0; f < p->ntensors; f++)
		digest_tensor(ctx, p, &p->tensors[f]);
	if (p->index_json)
		digest_bytes(ctx, p->index_json, strlen(p->index_json));
	sha256_finish_hex(ctx, out);
}
