/* SPDX-License-Identifier: MIT */
/*
 * automodel_plan: the consolidation of an Automodel sharded checkpoint as a
 * plan: output files and tensors in the order Automodel's offline tool
 * writes them (docs/consolidation.md §5.5, §5.6), their header bytes and index in
 * Python's JSON spelling (§5.7, §5.9), the output dtypes by its rules
 * (§5.4), every full tensor assembled from pieces whose ops copy (or cast)
 * the chunk boxes that fall in them, and the .hf_metadata files to write
 * beside (§5.10).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/kernels.h"
#include "ckptconv/plan.h"
#include "ckptconv/pyjson.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "automodel_internal.h"

#define METADATA_FILE_MAX (256u << 20)

/* ---- output dtypes (§5.4) ---------------------------------------------- */

static bool regular_float(enum dtype t)
{
	return t == DTYPE_F16 || t == DTYPE_BF16 || t == DTYPE_F32 || t == DTYPE_F64;
}

static bool any_float(enum dtype t)
{
	return regular_float(t) || dtype_is_float8(t);
}

static enum dtype cast_of(enum dtype_choice choice)
{
	switch (choice) {
	case DTYPE_CHOICE_BF16:
		return DTYPE_BF16;
	case DTYPE_CHOICE_F16:
		return DTYPE_F16;
	case DTYPE_CHOICE_F32:
		return DTYPE_F32;
	case DTYPE_CHOICE_F64:
		return DTYPE_F64;
	default:
		return DTYPE_INVALID;
	}
}

/* s: saved dtype, m: original dtype from the mapping (INVALID: none),
 * c: the cast (INVALID: none). */
static enum dtype output_dtype(enum dtype s, enum dtype m, enum dtype c)
{
	if (c != DTYPE_INVALID) {
		if (m == DTYPE_F32 && regular_float(s))
			return DTYPE_F32; /* an F32 original is never cast */
		return s != c && regular_float(s) ? c : s;
	}
	if (m == DTYPE_INVALID || m == s)
		return s;
	return regular_float(m) && any_float(s) ? m : s;
}

enum dtype automodel_output_dtype(const struct automodel_tensor *t, enum dtype_choice choice)
{
	if (choice == DTYPE_CHOICE_KEEP)
		return t->dtype;
	return output_dtype(t->dtype, t->mapped_dtype, cast_of(choice));
}

/* ---- pieces ------------------------------------------------------------ */

struct opvec {
	struct plan_op *ops;
	size_t n, cap;
};

static struct plan_op *opvec_add(struct opvec *v)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 16;
		v->ops = xrealloc(v->ops, v->cap * sizeof(*v->ops));
	}
	memset(&v->ops[v->n], 0, sizeof(*v->ops));
	return &v->ops[v->n++];
}

struct box_job {
	const struct automodel_tensor *t;
	const struct automodel_chunk *ch;
	uint32_t src;
	enum dtype out;
	int split;		  /* the dimension pieces are cut along */
	uint64_t gs[ST_MAX_DIMS]; /* full tensor strides, elements */
	uint64_t cs[ST_MAX_DIMS]; /* chunk strides, elements */
	uint64_t lo[ST_MAX_DIMS]; /* the piece's box: [lo, hi) per dim */
	uint64_t hi[ST_MAX_DIMS];
	uint64_t piece_start; /* the piece's first element */
};

/* The ops copying the part of chunk ch inside the piece's box: runs along
 * the innermost dimension the chunk does not span whole (dim `inner`),
 * one strided op per position of the dimensions above `inner - 1`. */
static void chunk_ops(const struct box_job *j, struct opvec *v)
{
	const struct automodel_chunk *ch = j->ch;
	uint64_t from[ST_MAX_DIMS], to[ST_MAX_DIMS], idx[ST_MAX_DIMS];
	size_t ssize = dtype_size(ch->dtype), dsize = dtype_size(j->out);
	int n = ch->ndim, inner = -1, rowdim, d;

	for (d = 0; d < n; d++) {
		from[d] = j->lo[d] > ch->offsets[d] ? j->lo[d] : ch->offsets[d];
		to[d] = j->hi[d] < ch->offsets[d] + ch->shape[d] ? j->hi[d] :
								   ch->offsets[d] + ch->shape[d];
		if (from[d] >= to[d])
			return;
	}
	for (d = n - 1; d > j->split; d--)
		if (ch->shape[d] != j->t->shape[d]) {
			inner = d;
			break;
		}
	/* Contiguous in both: one run from the split dimension down. */
	rowdim = inner < 0 ? j->split : inner - 1;
	for (d = 0; d < n; d++)
		idx[d] = from[d];
	for (;;) {
		struct plan_op *op = opvec_add(v);
		uint64_t src = 0, dst = 0, rows, run;

		for (d = 0; d < n; d++) {
			src += (idx[d] - ch->offsets[d]) * j->cs[d];
			dst += idx[d] * j->gs[d];
		}
		if (n == 0) {
			rows = run = 1; /* a scalar */
		} else if (inner < 0) {
			rows = 1;
			run = (to[j->split] - from[j->split]) * j->gs[j->split];
		} else {
			rows = to[rowdim] - from[rowdim];
			run = ch->shape[inner] * j->gs[inner];
		}
		op->src = j->src;
		op->src_dtype = ch->dtype;
		op->dst_dtype = j->out;
		op->rows = rows;
		op->cols = run;
		op->src_offset = src * ssize;
		op->src_stride = (inner < 0 ? run : j->cs[rowdim]) * ssize;
		/* (for a scalar too: run = 1 element) */
		op->dst_offset = (dst - j->piece_start) * dsize;
		op->dst_stride = (inner < 0 ? run : j->gs[rowdim]) * dsize;
		/* Next position of the dimensions above rowdim. */
		for (d = rowdim - 1; d >= 0; d--) {
			if (++idx[d] < to[d])
				break;
			idx[d] = from[d];
		}
		if (d < 0)
			break;
	}
}

static int add_pieces(struct plan *p, long pt, const struct automodel *am,
		      const struct automodel_tensor *t, enum dtype out, struct err *e)
{
	uint64_t numel = 1, unit, rows, outer = 1, o, a;
	size_t ssize = dtype_size(t->dtype), dsize = dtype_size(out);
	struct box_job j = {.t = t, .out = out};
	struct opvec v = {0};
	uint32_t c;
	int d, rc = -1;

	for (d = 0; d < t->ndim; d++)
		numel *= t->shape[d];
	if (numel == 0)
		return 0;
	/* Pieces cut along `split`: the outermost dimension whose slices
	 * fit a piece and a window. */
	for (d = t->ndim - 1, unit = 1; d >= 0; d--) {
		j.gs[d] = unit;
		unit *= t->shape[d];
	}
	j.split = t->ndim ? t->ndim - 1 : 0;
	for (d = 0; d < t->ndim; d++)
		if (j.gs[d] * dsize <= PLAN_PIECE_MAX && j.gs[d] * ssize <= PLAN_WINDOW_MAX) {
			j.split = d;
			break;
		}
	unit = t->ndim ? j.gs[j.split] : 1;
	rows = PLAN_PIECE_MAX / (unit * dsize);
	if (rows > PLAN_WINDOW_MAX / (unit * ssize))
		rows = PLAN_WINDOW_MAX / (unit * ssize);
	if (rows == 0)
		rows = 1;
	for (d = 0; d < j.split; d++)
		outer *= t->shape[d];
	for (o = 0; o < outer; o++) {
		uint64_t rest = o;

		for (d = j.split - 1; d >= 0; d--) {
			j.lo[d] = rest % t->shape[d];
			j.hi[d] = j.lo[d] + 1;
			rest /= t->shape[d];
		}
		for (d = j.split + 1; d < t->ndim; d++) {
			j.lo[d] = 0;
			j.hi[d] = t->shape[d];
		}
		for (a = 0; a < (t->ndim ? t->shape[j.split] : 1); a += rows) {
			uint64_t b = t->ndim ? t->shape[j.split] : 1;

			if (b - a > rows)
				b = a + rows;
			if (t->ndim) {
				j.lo[j.split] = a;
				j.hi[j.split] = b;
			}
			j.piece_start = o * (t->ndim ? t->shape[j.split] : 1) * unit + a * unit;
			v.n = 0;
			for (c = 0; c < t->nchunks; c++) {
				const struct automodel_chunk *ch = &am->chunks[t->chunks[c]];
				uint64_t elems = 1;

				for (d = 0; d < ch->ndim; d++)
					elems *= ch->shape[d];
				if (!elems)
					continue;
				memset(j.cs, 0, sizeof(j.cs));
				for (d = ch->ndim - 1, elems = 1; d >= 0; d--) {
					j.cs[d] = elems;
					elems *= ch->shape[d];
				}
				j.ch = ch;
				j.src = t->chunks[c];
				chunk_ops(&j, &v);
			}
			if (plan_add_piece(p, pt, j.piece_start * dsize, (b - a) * unit * dsize,
					   v.ops, v.n, e) ||
			    (t->zero_fill && plan_zero_fill_last_piece(p, pt, e)))
				goto out;
		}
	}
	rc = 0;
out:
	free(v.ops);
	return rc;
}

/* ---- files, headers, index --------------------------------------------- */

static char *file_name(uint32_t index, uint32_t max)
{
	char *name;

	if (asprintf(&name, "model-%05" PRIu32 "-of-%05" PRIu32 ".safetensors", index, max) < 0)
		abort();
	return name;
}

static void put_u64_array(FILE *out, int n, const uint64_t *v)
{
	int i;

	fputc('[', out);
	for (i = 0; i < n; i++)
		fprintf(out, "%s%" PRIu64, i ? ", " : "", v[i]);
	fputc(']', out);
}

/* json.dumps of {name: {"shape", "dtype", "data_offsets"}}, after its u64
 * length: no padding, no __metadata__ (§5.7). */
static void build_header(struct plan *p, uint32_t first, uint32_t n, char **out, size_t *len)
{
	char *json = NULL;
	size_t json_len = 0, i;
	uint64_t begin = 0, prefix;
	FILE *f = open_memstream(&json, &json_len);

	if (!f)
		abort();
	fputc('{', f);
	for (i = 0; i < n; i++) {
		struct plan_tensor *t = &p->tensors[first + i];

		if (i)
			fputs(", ", f);
		pyjson_string(f, t->name);
		fputs(": {\"shape\": ", f);
		put_u64_array(f, t->ndim, t->shape);
		fprintf(f, ", \"dtype\": \"%s\", \"data_offsets\": [%" PRIu64 ", %" PRIu64 "]}",
			dtype_name(t->dtype), begin, begin + t->nbytes);
		begin += t->nbytes;
	}
	fputc('}', f);
	if (fclose(f))
		abort();
	*len = ST_PREFIX_LEN + json_len;
	*out = xmalloc(*len);
	prefix = json_len;
	for (i = 0; i < ST_PREFIX_LEN; i++)
		(*out)[i] = (char)(prefix >> (8 * i));
	memcpy(*out + ST_PREFIX_LEN, json, json_len);
	free(json);
	begin = *len;
	for (i = 0; i < n; i++) {
		p->tensors[first + i].offset = begin;
		begin += p->tensors[first + i].nbytes;
	}
}

/* Index: names in first-appearance order over the shards, total_size in
 * output dtypes, json.dump(indent=2), no final newline (§5.9). */
static void build_index(struct plan *p, const struct automodel *am)
{
	json_t *root = json_object(), *meta = json_object(), *map = json_object();
	size_t len = 0, i;
	FILE *f;

	json_object_set_new(meta, "total_size", json_integer((json_int_t)p->total_bytes));
	json_object_set_new(root, "metadata", meta);
	for (i = 0; i < am->ntensors; i++) {
		char *name = file_name(am->tensors[i].file_index, am->max_index);

		json_object_set_new(map, am->tensors[i].name, json_string(name));
		free(name);
	}
	json_object_set_new(root, "weight_map", map);
	f = open_memstream(&p->index_json, &len);
	if (!f)
		abort();
	pyjson_dump(f, root, 2);
	if (fclose(f))
		abort();
	json_decref(root);
}

/* ---- metadata files (§5.10) ------------------------------------------- */

static const char *torch_name(enum dtype t)
{
	switch (t) {
	case DTYPE_BF16:
		return "bfloat16";
	case DTYPE_F16:
		return "float16";
	case DTYPE_F32:
		return "float32";
	default:
		return "float64"; /* DTYPE_F64 */
	}
}

/* With a cast, config.json as Python rewrites it: torch_dtype set (in
 * place, or appended), json.dump(indent=2) + "\n".  Not JSON jansson
 * reads: left as it is, with a warning. */
static void rewrite_config(struct plan *p, enum dtype cast, char **data, size_t *len)
{
	json_t *config = json_loadb(*data, *len, 0, NULL);
	char *text = NULL;
	size_t n = 0;
	FILE *f;

	if (!json_is_object(config)) {
		json_decref(config);
		strvec_push(&p->warnings,
			    "config.json is not JSON ckptconv reads: copied as it is, "
			    "without torch_dtype");
		return;
	}
	json_object_set_new(config, "torch_dtype", json_string(torch_name(cast)));
	f = open_memstream(&text, &n);
	if (!f)
		abort();
	pyjson_dump(f, config, 2);
	fputc('\n', f);
	if (fclose(f))
		abort();
	json_decref(config);
	free(*data);
	*data = text;
	*len = n;
}

int automodel_add_metadata(struct plan *p, const struct automodel *am, const struct ckpt *c,
			   enum dtype cast, struct err *e)
{
	size_t i, len;
	char *path, *data;
	int rc;

	for (i = 0; i < am->metadata_files.len; i++) {
		const char *name = am->metadata_files.items[i];

		if (asprintf(&path, "%s/%s", AUTOMODEL_METADATA_DIR, name) < 0)
			abort();
		rc = store_read_file(c->store, path, METADATA_FILE_MAX, &data, &len, e);
		free(path);
		if (rc)
			return -1;
		if (cast != DTYPE_INVALID && strcmp(name, "config.json") == 0)
			rewrite_config(p, cast, &data, &len);
		plan_add_put(p, name, data, len);
	}
	return 0;
}

/* ---- the plan ---------------------------------------------------------- */

static long tensor_index(const struct automodel *am, json_t *by_name, const char *name)
{
	json_t *v = json_object_get(by_name, name);

	(void)am;
	return v ? (long)json_integer_value(v) : -1;
}

int automodel_build_plan(const struct automodel *am, const struct ckpt *ckpt,
			 enum dtype_choice dtype, struct plan *p, struct err *e)
{
	enum dtype cast = cast_of(dtype);
	json_t *by_name = json_object();
	size_t i;
	uint32_t file;
	int rc = -1;

	for (i = 0; i < am->ntensors; i++)
		json_object_set_new(by_name, am->tensors[i].name, json_integer((json_int_t)i));
	for (file = 1; file <= am->max_index; file++) {
		uint32_t first = (uint32_t)p->ntensors, n = 0;
		const char *key;
		json_t *v;
		char *header, *name;
		size_t header_len;

		json_object_foreach(am->mapping, key, v) {
			long ti;
			const struct automodel_tensor *t;
			enum dtype out;
			long pt;

			if ((uint32_t)json_integer_value(v) != file)
				continue;
			ti = tensor_index(am, by_name, key);
			/* automodel_open refused the others (shard_missing). */
			if (ti < 0) {
				strvec_pushf(
					&p->warnings,
					"%s: in %s but in no shard (a tied weight?): not written",
					key, AUTOMODEL_FILE_MAPPING);
				continue;
			}
			t = &am->tensors[ti];
			out = automodel_output_dtype(t, dtype);
			if (!kern_can_cast(t->dtype, out)) {
				err_set(e, ERR_UNSUPPORTED_CAST, "%s: cannot convert %s to %s",
					t->name, dtype_name(t->dtype), dtype_name(out));
				err_set_tensor(e, t->name);
				goto out;
			}
			pt = plan_add_tensor(p, t->name, out, t->ndim, t->shape, e);
			if (pt < 0 || add_pieces(p, pt, am, t, out, e))
				goto out;
			p->tensors[pt].file = (uint32_t)p->nfiles;
			p->total_bytes += p->tensors[pt].nbytes;
			n++;
		}
		if (n == 0)
			continue; /* no file, the numbering keeps the gap */
		build_header(p, first, n, &header, &header_len);
		name = file_name(file, am->max_index);
		plan_add_file(p, name, header, header_len, first, n);
		free(name);
	}
	build_index(p, am);
	if (automodel_add_metadata(p, am, ckpt, cast, e) || plan_finish_laid_out(p, e))
		goto out;
	rc = 0;
out:
	json_decref(by_name);
	return rc;
}
