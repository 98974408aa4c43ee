/* SPDX-License-Identifier: MIT */
/*
 * bailing_moe_v2: Ling 2.0 (BailingMoeV2ForCausalLM) between the HF layout
 * and NeMo Automodel's native layout, bit for bit as the reference adapter
 * does it (SPEC.md): the fused QKV split by rows or fused back, the renames,
 * the routed experts stacked per layer into gate_and_up_projs [E, H, 2I]
 * and down_projs [E, I, H] (optionally only one expert-parallel rank's
 * share) or split back, everything else passed through.  It is stricter
 * than the reference where the reference would silently write wrong
 * weights: missing or misshapen experts, quantized tensors, q/k/v that do
 * not fit together, dimensions in config.json no tensor could have, and
 * output that would not convert back (a tensor the target layout has no
 * place for), which is found by planning the way back over the output's
 * tensor descriptions before anything is written.
 */
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/kernels.h"
#include "ckptconv/plan.h"

#define ARCHITECTURE "BailingMoeV2ForCausalLM"
#define DEFAULT_HEAD_DIM 128
#define MISSING_NAMES_SHOWN 4

/* Dimensions from config.json (SPEC.md's table). */
struct dims {
	uint64_t hidden;	  /* H */
	uint64_t heads, kv_heads; /* nh, nkv */
	uint64_t head_dim;	  /* D */
	uint64_t moe_inter;	  /* I */
	uint64_t experts;	  /* E */
	uint64_t layers;
};

enum proj { PROJ_GATE, PROJ_UP, PROJ_DOWN, PROJ_COUNT };
static const char *const proj_names[PROJ_COUNT] = {"gate_proj", "up_proj", "down_proj"};

/* Substring renames, HF and native spelling; the first rule whose
 * substring occurs wins and every occurrence is replaced. */
static const struct {
	const char *hf, *native;
} renames[] = {
	{"model.word_embeddings.", "model.embed_tokens."},
	{".attention.dense.", ".self_attn.o_proj."},
	{".attention.query_layernorm.", ".self_attn.q_norm."},
	{".attention.key_layernorm.", ".self_attn.k_norm."},
	{".mlp.gate.expert_bias", ".mlp.gate.e_score_correction_bias"},
};

#define QKV_SUFFIX ".attention.query_key_value.weight"
#define GATE_UP_SUFFIX ".mlp.experts.gate_and_up_projs"
#define DOWN_SUFFIX ".mlp.experts.down_projs"
#define EXPERTS_SEGMENT ".mlp.experts."

/* ---- config.json ------------------------------------------------------- */

static bool declares_architecture(const struct ckpt *c, const char *name)
{
	json_t *list = c->config ? json_object_get(c->config, "architectures") : NULL, *a;
	size_t i;

	json_array_foreach(list, i, a)
		if (json_is_string(a) && strcmp(json_string_value(a), name) == 0)
			return true;
	return false;
}

static bool matches(const struct ckpt *c)
{
	return declares_architecture(c, ARCHITECTURE);
}

/* The most elements a tensor may have: that many elements of the widest
 * safetensors dtype (8 bytes) still end at an offset a file can hold
 * (off_t, 2^63 - 1 bytes).  Every dimension from config.json is checked
 * against it, so no size computed from them can overflow. */
#define TENSOR_ELEMENTS_MAX ((uint64_t)INT64_MAX / 8)

static int config_count(const struct ckpt *c, const char *key, int64_t min, uint64_t *out,
			struct err *e)
{
	int64_t v;

	if (ckpt_config_int(c, key, &v, e) < 0)
		return -1;
	if (v < min)
		return err_set(e, "config_invalid",
			       "config.json: %s is %" PRId64 ", expected at least %" PRId64, key, v,
			       min);
	*out = (uint64_t)v;
	return 0;
}

/* head_dim: absent means 128, null or 0 means hidden_size / heads (as the
 * model's config class reads it). */
static int read_head_dim(const struct ckpt *c, struct dims *d, struct err *e)
{
	json_t *v = json_object_get(c->config, "head_dim");

	if (!v) {
		d->head_dim = DEFAULT_HEAD_DIM;
		return 0;
	}
	if (json_is_null(v) || (json_is_integer(v) && json_integer_value(v) == 0)) {
		d->head_dim = d->hidden / d->heads;
		if (d->head_dim == 0)
			return err_set(
				e, "config_invalid",
				"config.json: head_dim is %s, which means hidden_size %" PRIu64
				" / num_attention_heads %" PRIu64 " = 0",
				json_is_null(v) ? "null" : "0", d->hidden, d->heads);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return err_set(e, "config_invalid",
			       "config.json: head_dim is not a non-negative integer");
	d->head_dim = (uint64_t)json_integer_value(v);
	return 0;
}

/* A tensor of a x b x c elements (as config.json implies it; `ok` false
 * when computing a already overflowed) must be one a safetensors file can
 * hold; `fmt` describes the tensor and the keys it comes from. */
static int check_holdable(bool ok, uint64_t a, uint64_t b, uint64_t c, struct err *e,
			  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int check_holdable(bool ok, uint64_t a, uint64_t b, uint64_t c, struct err *e,
			  const char *fmt, ...)
{
	char what[ERR_MSG_MAX];
	uint64_t n;
	va_list ap;

	if (ok && u64_mul(a, b, &n) && u64_mul(n, c, &n) && n <= TENSOR_ELEMENTS_MAX)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(e, "config_invalid",
		       "config.json: %s would have more than the %" PRIu64
		       " elements a safetensors tensor can hold",
		       what, TENSOR_ELEMENTS_MAX);
}

/* Every tensor shape SPEC.md derives from the dimensions fits a file. */
static int check_dims(const struct dims *d, uint64_t dense_inter, struct err *e)
{
	uint64_t heads = 0, rows = 0, inter2 = 0;
	bool ok = u64_mul(d->kv_heads, 2, &heads) && u64_add(heads, d->heads, &heads) &&
		  u64_mul(heads, d->head_dim, &rows);

	if (check_holdable(ok, rows, d->hidden, 1, e,
			   "the fused query_key_value weight [(num_attention_heads %" PRIu64
			   " + 2 x num_key_value_heads %" PRIu64 ") x head_dim %" PRIu64
			   ", hidden_size %" PRIu64 "]",
			   d->heads, d->kv_heads, d->head_dim, d->hidden) < 0 ||
	    check_holdable(true, dense_inter, d->hidden, 1, e,
			   "a dense MLP weight [intermediate_size %" PRIu64 ", hidden_size %" PRIu64
			   "]",
			   dense_inter, d->hidden) < 0)
		return -1;
	ok = u64_mul(d->moe_inter, 2, &inter2);
	return check_holdable(ok, d->experts, d->hidden, inter2, e,
			      "a grouped gate_and_up_projs [num_experts %" PRIu64
			      ", hidden_size %" PRIu64 ", 2 x moe_intermediate_size %" PRIu64 "]",
			      d->experts, d->hidden, d->moe_inter);
}

static int read_dims(const struct ckpt *c, struct dims *d, struct err *e)
{
	uint64_t dense_inter = 0, unused;

	if (!c->config)
		return err_set(e, "missing_config", "the checkpoint has no config.json");
	if (config_count(c, "hidden_size", 1, &d->hidden, e) < 0 ||
	    config_count(c, "num_attention_heads", 1, &d->heads, e) < 0 ||
	    config_count(c, "num_key_value_heads", 1, &d->kv_heads, e) < 0 ||
	    config_count(c, "intermediate_size", 1, &dense_inter, e) < 0 ||
	    config_count(c, "moe_intermediate_size", 1, &d->moe_inter, e) < 0 ||
	    config_count(c, "num_experts", 1, &d->experts, e) < 0 ||
	    config_count(c, "num_hidden_layers", 1, &d->layers, e) < 0 ||
	    config_count(c, "first_k_dense_replace", 0, &unused, e) < 0 ||
	    read_head_dim(c, d, e) < 0)
		return -1;
	return check_dims(d, dense_inter, e);
}

/* The model's dtype: config.json's dtype or torch_dtype as transformers
 * reads them (ckpt_config_dtype_key), bfloat16 when neither is set, as
 * NeMo builds the adapter.  *key is the key it came from, NULL for the
 * default. */
static int model_dtype(const struct ckpt *c, enum dtype *out, const char **key, struct err *e)
{
	const char *name;

	*key = ckpt_config_dtype_key(c);
	if (!*key) {
		*out = DTYPE_BF16;
		return 0;
	}
	name = ckpt_config_string(c, *key);
	*out = dtype_from_torch_name(name);
	if (*out == DTYPE_INVALID)
		return err_set(
			e, "config_invalid",
			"config.json: %s %s%s%s is not bfloat16, float16 or float32; choose a dtype",
			*key, name ? "\"" : "", name ? name : "(not a string)", name ? "\"" : "");
	return 0;
}

/* The dtype of the grouped expert tensors; DTYPE_INVALID for "keep". */
static int target_dtype(const struct ckpt *c, enum dtype_choice choice, enum dtype *out,
			struct err *e)
{
	const char *key;

	switch (choice) {
	case DTYPE_CHOICE_KEEP:
		*out = DTYPE_INVALID;
		return 0;
	case DTYPE_CHOICE_BF16:
		*out = DTYPE_BF16;
		return 0;
	case DTYPE_CHOICE_F16:
		*out = DTYPE_F16;
		return 0;
	case DTYPE_CHOICE_F32:
		*out = DTYPE_F32;
		return 0;
	case DTYPE_CHOICE_AUTO:
		return model_dtype(c, out, &key, e);
	default:
		return err_set(e, "invalid_option",
			       "dtype choice %d is not auto, keep, bf16, f16 or f32", (int)choice);
	}
}

/* ---- names ------------------------------------------------------------- */

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* When name is P + suffix with P = "[anything.]layers.<number>", the
 * length of P; else 0. */
static size_t layer_prefix_len(const char *name, const char *suffix)
{
	size_t n = strlen(name), end, i;

	if (!ends_with(name, n, suffix))
		return 0;
	end = n - strlen(suffix);
	for (i = end; i > 0 && isdigit((unsigned char)name[i - 1]); i--)
		;
	if (i == end || i < 7 || memcmp(name + i - 7, "layers.", 7) != 0)
		return 0;
	if (i > 7 && name[i - 8] != '.')
		return 0;
	return end;
}

static const char *skip_digits(const char *s, uint64_t *value)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*s))
		return NULL;
	for (; isdigit((unsigned char)*s); s++)
		v = v > UINT64_MAX / 10 - 1 ? UINT64_MAX : v * 10 + (uint64_t)(*s - '0');
	if (value)
		*value = v;
	return s;
}

/* `[model.][language_model.]layers.L.mlp.experts.e.{gate,up,down}_proj.weight`:
 * base_len covers everything up to and including ".mlp.experts.". */
struct expert_name {
	size_t base_len;
	uint64_t expert;
	enum proj proj;
};

static bool parse_hf_expert(const char *name, struct expert_name *out)
{
	static const char *const prefixes[] = {"model.language_model.layers.", "model.layers.",
					       "language_model.layers.", "layers."};
	const char *p = NULL;
	size_t i;
	int k;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]) && !p; i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			p = name + strlen(prefixes[i]);
	if (!p || !(p = skip_digits(p, NULL)) ||
	    strncmp(p, EXPERTS_SEGMENT, strlen(EXPERTS_SEGMENT)) != 0)
		return false;
	p += strlen(EXPERTS_SEGMENT);
	out->base_len = (size_t)(p - name);
	if (!(p = skip_digits(p, &out->expert)) || *p++ != '.')
		return false;
	for (k = 0; k < PROJ_COUNT; k++) {
		size_t len = strlen(proj_names[k]);

		if (strncmp(p, proj_names[k], len) == 0 && strcmp(p + len, ".weight") == 0) {
			out->proj = (enum proj)k;
			return true;
		}
	}
	return false;
}

/* ".mlp.experts.<number>." somewhere in the name. */
static bool has_numbered_expert(const char *name)
{
	const char *p = name;

	while ((p = strstr(p, EXPERTS_SEGMENT))) {
		const char *q = skip_digits(p + strlen(EXPERTS_SEGMENT), NULL);

		if (q && *q == '.')
			return true;
		p++;
	}
	return false;
}

static char *replace_all(const char *s, const char *from, const char *to)
{
	size_t nfrom = strlen(from), nto = strlen(to), count = 0, len;
	const char *p;
	char *out, *w;

	for (p = s; (p = strstr(p, from)); p += nfrom)
		count++;
	len = strlen(s) + count * nto - count * nfrom;
	out = w = xmalloc(len + 1);
	while ((p = strstr(s, from))) {
		memcpy(w, s, (size_t)(p - s));
		w += p - s;
		memcpy(w, to, nto);
		w += nto;
		s = p + nfrom;
	}
	strcpy(w, s);
	return out;
}

static char *rename_tensor(const char *name, enum layout to)
{
	size_t i;

	for (i = 0; i < sizeof(renames) / sizeof(renames[0]); i++) {
		const char *from = to == LAYOUT_NATIVE ? renames[i].hf : renames[i].native;
		const char *into = to == LAYOUT_NATIVE ? renames[i].native : renames[i].hf;

		if (strstr(name, from))
			return replace_all(name, from, into);
	}
	return xstrdup(name);
}

static char *join(const char *prefix, size_t prefix_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static char *join(const char *prefix, size_t prefix_len, const char *fmt, ...)
{
	char *rest, *out;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&rest, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	if (asprintf(&out, "%.*s%s", (int)prefix_len, prefix, rest) < 0)
		abort();
	free(rest);
	return out;
}

static void format_shape(const struct ckpt_tensor *t, char *buf, size_t len)
{
	size_t used = 0;
	int d;

	used += (size_t)snprintf(buf, len, "[");
	for (d = 0; d < t->ndim && used < len; d++)
		used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, d ? ", " : "",
					 t->shape[d]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

/* ---- detection ----------------------------------------------------------- */

static bool hf_name(const char *name)
{
	return strstr(name, ".attention.query_key_value.") || strstr(name, "word_embeddings") ||
	       strstr(name, ".attention.dense.") || has_numbered_expert(name);
}

static bool native_name(const char *name)
{
	return strstr(name, ".self_attn.") || strstr(name, "embed_tokens") ||
	       strstr(name, GATE_UP_SUFFIX) || strstr(name, DOWN_SUFFIX) ||
	       strstr(name, "e_score_correction_bias");
}

static int detect(const struct ckpt *c, enum layout *out, struct err *e)
{
	const char *hf = NULL, *native = NULL;
	size_t i;

	*out = LAYOUT_UNKNOWN;
	for (i = 0; i < c->ntensors && !(hf && native); i++) {
		if (!hf && hf_name(c->tensors[i].name))
			hf = c->tensors[i].name;
		if (!native && native_name(c->tensors[i].name))
			native = c->tensors[i].name;
	}
	if (hf && native)
		return err_set(e, "ambiguous_layout",
			       "tensor names of both layouts are present: %s (HF) and %s (native)",
			       hf, native);
	if (!hf && !native)
		return err_set(
			e, "unknown_layout",
			"no tensor name identifies the HF or the native layout of Ling 2.0 (%zu tensors)",
			c->ntensors);
	*out = hf ? LAYOUT_HF : LAYOUT_NATIVE;
	return 0;
}

static int describe(const struct ckpt *c, struct model_info *out, struct err *e)
{
	struct err ignored = {0};
	struct dims d;
	const char *model_type;

	memset(out, 0, sizeof(*out));
	if (read_dims(c, &d, e) < 0)
		return -1;
	model_type = ckpt_config_string(c, "model_type");
	snprintf(out->model_type, sizeof(out->model_type), "%s", model_type ? model_type : "");
	snprintf(out->architecture, sizeof(out->architecture), "%s", ARCHITECTURE);
	out->layers = d.layers;
	out->experts = d.experts;
	/* A dtype ckptconv cannot cast to is reported, not an error: a
	 * conversion that names its dtype does not need it. */
	if (model_dtype(c, &out->dtype, &out->dtype_key, &ignored) < 0)
		out->dtype = DTYPE_INVALID;
	err_clear(&ignored);
	/* inspect reports an unrecognisable layout as unknown rather than failing. */
	detect(c, &out->layout, &ignored);
	return 0;
}

/* ---- building blocks --------------------------------------------------- */

struct opvec {
	struct plan_op *ops;
	size_t n, cap;
};

static void opvec_push(struct opvec *v, const struct plan_op *op)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? 2 * v->cap : 8;
		v->ops = xrealloc(v->ops, v->cap * sizeof(*v->ops));
	}
	v->ops[v->n++] = *op;
}

/* Destination rows that fit one piece. */
static uint64_t rows_per_piece(uint64_t row_bytes)
{
	return row_bytes >= PLAN_PIECE_MAX ? 1 : PLAN_PIECE_MAX / row_bytes;
}

/* Appends ops writing the transpose of columns [c0, c1) of a `rows`-row
 * matrix in source tensor src (row stride src_stride bytes, starting
 * src_base bytes in): source element (r, c) lands at
 * dst_base + (c - c0) * dst_stride + r * dst element size.  Rows are split
 * so that no op reads a window larger than PLAN_WINDOW_MAX. */
static void add_transposed(struct opvec *v, const struct ckpt *c, uint32_t src, enum dtype to,
			   uint64_t src_base, uint64_t src_stride, uint64_t rows, uint64_t c0,
			   uint64_t c1, uint64_t dst_base, uint64_t dst_stride)
{
	enum dtype from = c->tensors[src].dtype;
	uint64_t ssize = dtype_size(from), dsize = dtype_size(to);
	uint64_t row_bytes = (c1 - c0) * ssize, per, r0, n;
	struct plan_op op;

	per = row_bytes >= PLAN_WINDOW_MAX ? 1 : (PLAN_WINDOW_MAX - row_bytes) / src_stride + 1;
	for (r0 = 0; r0 < rows; r0 += n) {
		n = rows - r0 < per ? rows - r0 : per;
		memset(&op, 0, sizeof(op));
		op.src = src;
		op.transpose = true;
		op.src_dtype = from;
		op.dst_dtype = to;
		op.rows = n;
		op.cols = c1 - c0;
		op.src_offset = src_base + r0 * src_stride + c0 * ssize;
		op.src_stride = src_stride;
		op.dst_offset = dst_base + r0 * dsize;
		op.dst_stride = dst_stride;
		opvec_push(v, &op);
	}
}

static int pass_through(struct plan *p, const struct ckpt *c, uint32_t i, const char *name,
			struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	long out = plan_add_tensor(p, name, t->dtype, t->ndim, t->shape, e);

	if (out < 0)
		return -1;
	plan_add_source(p, out, i);
	return plan_add_contiguous(p, out, i, 0, 0, t->nbytes / dtype_size(t->dtype), t->dtype,
				   t->dtype, e);
}

/* Rows [row0, row0 + nrows) of the 2-D source as a tensor of its own. */
static int add_row_slice(struct plan *p, const struct ckpt *c, uint32_t i, char *name,
			 uint64_t row0, uint64_t nrows, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	uint64_t shape[2] = {nrows, t->shape[1]}, esize = dtype_size(t->dtype);
	long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);
	int rc = -1;

	if (out >= 0)
		rc = plan_add_contiguous(p, out, i, row0 * t->shape[1] * esize, 0,
					 nrows * t->shape[1], t->dtype, t->dtype, e);
	free(name);
	return rc;
}

static int refuse_quantized(const struct ckpt *c, struct err *e)
{
	size_t i;

	for (i = 0; i < c->ntensors; i++) {
		const struct ckpt_tensor *t = &c->tensors[i];

		if (dtype_is_float8(t->dtype) ||
		    ends_with(t->name, strlen(t->name), "_scale_inv")) {
			err_set_tensor(e, t->name);
			if (dtype_is_float8(t->dtype))
				return err_set(
					e, "quantized_input",
					"%s: %s is a quantized (FP8) dtype; only unquantized checkpoints "
					"are converted",
					t->name, dtype_name(t->dtype));
			return err_set(e, "quantized_input",
				       "%s: quantization scales (*_scale_inv) are not supported",
				       t->name);
		}
	}
	return 0;
}

/* ---- HF -> native -------------------------------------------------------- */

/* The routed experts of one MoE layer, by expert number and projection. */
struct expert_group {
	char *base;  /* "…layers.L.mlp.experts." */
	long *slots; /* [expert - start][proj]: source tensor, -1 when absent */
};

struct expert_groups {
	struct expert_group *items;
	size_t n;
	uint64_t experts;    /* E */
	uint64_t start, end; /* the experts to stack */
	enum dtype to;	     /* DTYPE_INVALID: keep the source dtype */
};

static void expert_groups_fini(struct expert_groups *g)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		free(g->items[i].base);
		free(g->items[i].slots);
	}
	free(g->items);
}

/* The slot of stacked expert x (start <= x < end), projection k. */
static long *slot_of(const struct expert_groups *g, const struct expert_group *grp, uint64_t x,
		     int k)
{
	return &grp->slots[(x - g->start) * PROJ_COUNT + (uint64_t)k];
}

/* The group of layer `name` (its first len bytes), made on first use.  Each
 * group needs the three projections of every stacked expert, so groups that
 * the checkpoint's tensors cannot fill are refused before their slots, sized
 * by num_experts, are allocated (every product overflow-checked). */
static struct expert_group *expert_group_get(struct expert_groups *g, const struct ckpt *c,
					     const char *name, size_t len, struct err *e)
{
	struct expert_group *grp;
	uint64_t k, nslots, needed;
	size_t i;

	for (i = g->n; i-- > 0;)
		if (strlen(g->items[i].base) == len && memcmp(g->items[i].base, name, len) == 0)
			return &g->items[i];
	if (!u64_mul(g->end - g->start, PROJ_COUNT, &nslots) ||
	    !u64_mul(nslots, (uint64_t)g->n + 1, &needed) || needed > c->ntensors) {
		err_set_tensor(e, name);
		err_set(e, "missing_experts",
			"%s: %zu MoE layers x %" PRIu64
			" experts x %d projections (num_experts %" PRIu64
			") are more expert weights than the checkpoint's %zu tensors",
			name, g->n + 1, g->end - g->start, PROJ_COUNT, g->experts, c->ntensors);
		return NULL;
	}
	g->items = xrealloc(g->items, (g->n + 1) * sizeof(*g->items));
	grp = &g->items[g->n++];
	grp->base = join(name, len, "%s", "");
	grp->slots = xmalloc((nslots ? nslots : 1) * sizeof(*grp->slots));
	for (k = 0; k < nslots; k++)
		grp->slots[k] = -1;
	return grp;
}

static int collect_expert(struct expert_groups *g, const struct ckpt *c, uint32_t i,
			  const struct expert_name *x, struct err *e)
{
	const char *name = c->tensors[i].name;
	struct expert_group *grp;
	long *slot;

	if (x->expert >= g->experts) {
		err_set_tensor(e, name);
		return err_set(e, "expert_out_of_range",
			       "%s: expert %" PRIu64 " is not below num_experts %" PRIu64, name,
			       x->expert, g->experts);
	}
	grp = expert_group_get(g, c, name, x->base_len, e);
	if (!grp)
		return -1;
	/* Only the stacked experts (an expert-parallel rank's share) matter. */
	if (x->expert < g->start || x->expert >= g->end)
		return 0;
	slot = slot_of(g, grp, x->expert, x->proj);
	if (*slot >= 0) {
		err_set_tensor(e, name);
		return err_set(e, "duplicate_tensor",
			       "%s: expert %" PRIu64 " %s is given twice (also as %s)", name,
			       x->expert, proj_names[x->proj], c->tensors[*slot].name);
	}
	*slot = i;
	return 0;
}

/* Every needed expert of every group has all three projections. */
static int check_complete(const struct expert_groups *g, struct err *e)
{
	char shown[ERR_MSG_MAX] = "", first[ERR_TENSOR_MAX] = "";
	size_t missing = 0, used = 0, i;
	uint64_t x;
	int k;

	for (i = 0; i < g->n; i++)
		for (x = g->start; x < g->end; x++)
			for (k = 0; k < PROJ_COUNT; k++) {
				if (*slot_of(g, &g->items[i], x, k) >= 0)
					continue;
				if (missing < MISSING_NAMES_SHOWN && used < sizeof(shown))
					used += (size_t)snprintf(shown + used, sizeof(shown) - used,
								 "%s%s%" PRIu64 ".%s.weight",
								 missing ? ", " : "",
								 g->items[i].base, x,
								 proj_names[k]);
				if (missing == 0)
					snprintf(first, sizeof(first), "%s%" PRIu64 ".%s.weight",
						 g->items[i].base, x, proj_names[k]);
				missing++;
			}
	if (missing == 0)
		return 0;
	err_set_tensor(e, first);
	if (missing > MISSING_NAMES_SHOWN)
		return err_set(e, "missing_experts",
			       "%zu of %" PRIu64 " expert weights are missing: %s and %zu more",
			       missing, (uint64_t)g->n * (g->end - g->start) * PROJ_COUNT, shown,
			       missing - MISSING_NAMES_SHOWN);
	return err_set(e, "missing_experts", "%zu of %" PRIu64 " expert weights are missing: %s",
		       missing, (uint64_t)g->n * (g->end - g->start) * PROJ_COUNT, shown);
}

/* gate/up [I, H] and down [H, I] for every stacked expert, in one dtype
 * when it is kept, castable to the target otherwise. */
static int check_expert(const struct ckpt *c, const struct dims *d, const struct expert_groups *g,
			long src, enum proj k, enum dtype first_dtype, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[src];
	uint64_t rows = k == PROJ_DOWN ? d->hidden : d->moe_inter;
	uint64_t cols = k == PROJ_DOWN ? d->moe_inter : d->hidden;
	char shape[128];

	if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
		format_shape(t, shape, sizeof(shape));
		err_set_tensor(e, t->name);
		return err_set(e, "expert_shape_mismatch",
			       "%s: shape %s differs from [%" PRIu64 ", %" PRIu64
			       "], the shape of the layer's "
			       "experts by config.json (moe_intermediate_size %" PRIu64
			       ", hidden_size %" PRIu64 ")",
			       t->name, shape, rows, cols, d->moe_inter, d->hidden);
	}
	if (g->to == DTYPE_INVALID && t->dtype != first_dtype) {
		err_set_tensor(e, t->name);
		return err_set(
			e, "expert_shape_mismatch",
			"%s: dtype %s differs from %s of the layer's other experts (kept dtype)",
			t->name, dtype_name(t->dtype), dtype_name(first_dtype));
	}
	if (g->to != DTYPE_INVALID && !kern_can_cast(t->dtype, g->to)) {
		err_set_tensor(e, t->name);
		return err_set(e, "unsupported_cast", "%s: %s cannot be cast to %s", t->name,
			       dtype_name(t->dtype), dtype_name(g->to));
	}
	return 0;
}

static int check_shapes(const struct ckpt *c, const struct dims *d, const struct expert_groups *g,
			const struct expert_group *grp, struct err *e)
{
	enum dtype first = c->tensors[*slot_of(g, grp, g->start, PROJ_GATE)].dtype;
	uint64_t x;
	int k;

	for (x = g->start; x < g->end; x++)
		for (k = 0; k < PROJ_COUNT; k++)
			if (check_expert(c, d, g, *slot_of(g, grp, x, k), (enum proj)k, first, e) <
			    0)
				return -1;
	return 0;
}

/* out[x][h][i] = gate_x[i][h], out[x][h][I + i] = up_x[i][h]; one piece per
 * expert, or per range of h when an expert's block is over PLAN_PIECE_MAX. */
static int emit_gate_up(struct plan *p, const struct ckpt *c, const struct dims *d,
			const struct expert_groups *g, const struct expert_group *grp,
			enum dtype to, struct err *e)
{
	uint64_t n = g->end - g->start, H = d->hidden, I = d->moe_inter, dsize = dtype_size(to);
	uint64_t shape[3] = {n, H, 2 * I}, row = 2 * I * dsize, per = rows_per_piece(row), k, h0,
		 h1;
	char *name = join(grp->base, strlen(grp->base), "gate_and_up_projs");
	struct opvec v = {0};
	long t = plan_add_tensor(p, name, to, 3, shape, e);
	int rc = t < 0 ? -1 : 0;

	for (k = 0; k < n && rc == 0; k++) {
		uint32_t gate = (uint32_t)*slot_of(g, grp, g->start + k, PROJ_GATE);
		uint32_t up = (uint32_t)*slot_of(g, grp, g->start + k, PROJ_UP);

		for (h0 = 0; h0 < H && rc == 0; h0 = h1) {
			h1 = H - h0 < per ? H : h0 + per;
			v.n = 0;
			add_transposed(&v, c, gate, to, 0, H * dtype_size(c->tensors[gate].dtype),
				       I, h0, h1, 0, row);
			add_transposed(&v, c, up, to, 0, H * dtype_size(c->tensors[up].dtype), I,
				       h0, h1, I * dsize, row);
			rc = plan_add_piece(p, t, (k * H + h0) * row, (h1 - h0) * row, v.ops, v.n,
					    e);
		}
	}
	free(v.ops);
	free(name);
	return rc;
}

/* out[x][i][h] = down_x[h][i]; pieces as for gate_and_up_projs. */
static int emit_down(struct plan *p, const struct ckpt *c, const struct dims *d,
		     const struct expert_groups *g, const struct expert_group *grp, enum dtype to,
		     struct err *e)
{
	uint64_t n = g->end - g->start, H = d->hidden, I = d->moe_inter, dsize = dtype_size(to);
	uint64_t shape[3] = {n, I, H}, row = H * dsize, per = rows_per_piece(row), k, i0, i1;
	char *name = join(grp->base, strlen(grp->base), "down_projs");
	struct opvec v = {0};
	long t = plan_add_tensor(p, name, to, 3, shape, e);
	int rc = t < 0 ? -1 : 0;

	for (k = 0; k < n && rc == 0; k++) {
		uint32_t down = (uint32_t)*slot_of(g, grp, g->start + k, PROJ_DOWN);

		for (i0 = 0; i0 < I && rc == 0; i0 = i1) {
			i1 = I - i0 < per ? I : i0 + per;
			v.n = 0;
			add_transposed(&v, c, down, to, 0, I * dtype_size(c->tensors[down].dtype),
				       H, i0, i1, 0, row);
			rc = plan_add_piece(p, t, (k * I + i0) * row, (i1 - i0) * row, v.ops, v.n,
					    e);
		}
	}
	free(v.ops);
	free(name);
	return rc;
}

static int emit_groups(struct plan *p, const struct ckpt *c, const struct dims *d,
		       const struct expert_groups *g, struct err *e)
{
	size_t i;

	if (g->end <= g->start)
		return 0; /* an expert-parallel rank without experts */
	if (check_complete(g, e) < 0)
		return -1;
	for (i = 0; i < g->n; i++) {
		const struct expert_group *grp = &g->items[i];
		enum dtype to = g->to;

		if (check_shapes(c, d, g, grp, e) < 0)
			return -1;
		if (to == DTYPE_INVALID)
			to = c->tensors[*slot_of(g, grp, g->start, PROJ_GATE)].dtype;
		if (emit_gate_up(p, c, d, g, grp, to, e) < 0 ||
		    emit_down(p, c, d, g, grp, to, e) < 0)
			return -1;
	}
	return 0;
}

/* rows [0, nh*D) -> q_proj, the next nkv*D -> k_proj, the last nkv*D -> v_proj. */
static int split_qkv(struct plan *p, const struct ckpt *c, uint32_t i, size_t prefix_len,
		     const struct dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	uint64_t q = d->heads * d->head_dim, kv = d->kv_heads * d->head_dim;
	char shape[128];

	if (t->ndim != 2 || t->shape[0] != q + 2 * kv) {
		format_shape(t, shape, sizeof(shape));
		err_set_tensor(e, t->name);
		return err_set(e, "qkv_shape_mismatch",
			       "%s: shape %s, expected %" PRIu64
			       " rows = (num_attention_heads %" PRIu64
			       " + 2 x num_key_value_heads %" PRIu64 ") x head_dim %" PRIu64,
			       t->name, shape, q + 2 * kv, d->heads, d->kv_heads, d->head_dim);
	}
	if (add_row_slice(p, c, i, join(t->name, prefix_len, ".self_attn.q_proj.weight"), 0, q, e) <
		    0 ||
	    add_row_slice(p, c, i, join(t->name, prefix_len, ".self_attn.k_proj.weight"), q, kv,
			  e) < 0 ||
	    add_row_slice(p, c, i, join(t->name, prefix_len, ".self_attn.v_proj.weight"), q + kv,
			  kv, e) < 0)
		return -1;
	return 0;
}

static void ep_range(uint64_t experts, uint32_t size, uint32_t rank, uint64_t *start, uint64_t *end)
{
	uint64_t per, rem;

	if (size == 0) {
		*start = 0;
		*end = experts;
		return;
	}
	per = experts / size;
	rem = experts % size;
	if (rank < rem) {
		per += 1;
		*start = rank * per;
	} else {
		*start = rank * per + rem;
	}
	*end = *start + per;
}

static int pass_through_renamed(struct plan *p, const struct ckpt *c, uint32_t i, enum layout to,
				struct err *e)
{
	char *name = rename_tensor(c->tensors[i].name, to);
	int rc = pass_through(p, c, i, name, e);

	free(name);
	return rc;
}

static int hf_tensor(struct plan *p, const struct ckpt *c, uint32_t i, const struct dims *d,
		     struct expert_groups *g, struct err *e)
{
	const char *name = c->tensors[i].name;
	struct expert_name x;
	size_t prefix_len;

	if (parse_hf_expert(name, &x))
		return collect_expert(g, c, i, &x, e);
	if ((prefix_len = layer_prefix_len(name, QKV_SUFFIX)))
		return split_qkv(p, c, i, prefix_len, d, e);
	return pass_through_renamed(p, c, i, LAYOUT_NATIVE, e);
}

static int hf_to_native(const struct ckpt *c, const struct adapter_options *o, const struct dims *d,
			struct plan *p, struct err *e)
{
	struct expert_groups g = {.experts = d->experts};
	uint32_t i;
	int rc = 0;

	if (o->ep_size && o->ep_rank >= o->ep_size)
		return err_set(e, "invalid_option",
			       "expert-parallel rank %" PRIu32 " is not below size %" PRIu32,
			       o->ep_rank, o->ep_size);
	if (target_dtype(c, o->dtype, &g.to, e) < 0)
		return -1;
	ep_range(d->experts, o->ep_size, o->ep_rank, &g.start, &g.end);
	for (i = 0; i < c->ntensors && rc == 0; i++)
		rc = hf_tensor(p, c, i, d, &g, e);
	if (rc == 0)
		rc = emit_groups(p, c, d, &g, e);
	expert_groups_fini(&g);
	return rc;
}

/* ---- native -> HF -------------------------------------------------------- */

/* gate_and_up_projs [E, H, 2I] -> per expert gate_proj = ([x][:, 0:I])^T and
 * up_proj = ([x][:, I:2I])^T, each [I, H]. */
static int split_gate_up(struct plan *p, const struct ckpt *c, uint32_t src, size_t prefix_len,
			 const struct dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[src];
	uint64_t H = d->hidden, I = d->moe_inter, es = dtype_size(t->dtype), x, i0, i1;
	uint64_t shape[2] = {I, H}, row = H * es, per = rows_per_piece(row);
	struct opvec v = {0};
	int k, rc = 0;

	for (x = 0; x < d->experts && rc == 0; x++)
		for (k = PROJ_GATE; k <= PROJ_UP && rc == 0; k++) {
			char *name = join(t->name, prefix_len, ".mlp.experts.%" PRIu64 ".%s.weight",
					  x, proj_names[k]);
			long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);

			free(name);
			if (out < 0)
				rc = -1;
			for (i0 = 0; i0 < I && rc == 0; i0 = i1) {
				uint64_t c0 = k == PROJ_GATE ? i0 : I + i0;

				i1 = I - i0 < per ? I : i0 + per;
				v.n = 0;
				add_transposed(&v, c, src, t->dtype, x * H * 2 * I * es, 2 * I * es,
					       H, c0, c0 + (i1 - i0), 0, row);
				rc = plan_add_piece(p, out, i0 * row, (i1 - i0) * row, v.ops, v.n,
						    e);
			}
		}
	free(v.ops);
	return rc;
}

/* down_projs [E, I, H] -> per expert down_proj = ([x])^T, [H, I]. */
static int split_down(struct plan *p, const struct ckpt *c, uint32_t src, size_t prefix_len,
		      const struct dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[src];
	uint64_t H = d->hidden, I = d->moe_inter, es = dtype_size(t->dtype), x, h0, h1;
	uint64_t shape[2] = {H, I}, row = I * es, per = rows_per_piece(row);
	struct opvec v = {0};
	int rc = 0;

	for (x = 0; x < d->experts && rc == 0; x++) {
		char *name =
			join(t->name, prefix_len, ".mlp.experts.%" PRIu64 ".down_proj.weight", x);
		long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);

		free(name);
		if (out < 0)
			rc = -1;
		for (h0 = 0; h0 < H && rc == 0; h0 = h1) {
			h1 = H - h0 < per ? H : h0 + per;
			v.n = 0;
			add_transposed(&v, c, src, t->dtype, x * I * H * es, H * es, I, h0, h1, 0,
				       row);
			rc = plan_add_piece(p, out, h0 * row, (h1 - h0) * row, v.ops, v.n, e);
		}
	}
	free(v.ops);
	return rc;
}

static int check_grouped(const struct ckpt_tensor *t, uint64_t d0, uint64_t d1, uint64_t d2,
			 const char *what, struct err *e)
{
	char shape[128];

	if (t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2)
		return 0;
	format_shape(t, shape, sizeof(shape));
	err_set_tensor(e, t->name);
	return err_set(e, "grouped_shape_mismatch",
		       "%s: shape %s, expected [%" PRIu64 ", %" PRIu64 ", %" PRIu64
		       "] = [%s] from config.json",
		       t->name, shape, d0, d1, d2, what);
}

/* The q/k/v projections of one layer, P.self_attn.{q,k,v}_proj.weight. */
struct qkv_group {
	char *prefix; /* P */
	long part[3]; /* q, k, v source tensors, -1 when absent */
};

struct qkv_groups {
	struct qkv_group *items;
	size_t n;
};

static void qkv_groups_fini(struct qkv_groups *g)
{
	size_t i;

	for (i = 0; i < g->n; i++)
		free(g->items[i].prefix);
	free(g->items);
}

static bool match_native_qkv(const char *name, size_t *prefix_len, int *part)
{
	static const char *const suffixes[3] = {
		".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight"};
	int k;

	for (k = 0; k < 3; k++)
		if ((*prefix_len = layer_prefix_len(name, suffixes[k]))) {
			*part = k;
			return true;
		}
	return false;
}

static void qkv_collect(struct qkv_groups *g, const char *name, size_t prefix_len, int part,
			uint32_t i)
{
	struct qkv_group *grp = NULL;
	size_t j;

	for (j = g->n; j-- > 0 && !grp;)
		if (strlen(g->items[j].prefix) == prefix_len &&
		    memcmp(g->items[j].prefix, name, prefix_len) == 0)
			grp = &g->items[j];
	if (!grp) {
		g->items = xrealloc(g->items, (g->n + 1) * sizeof(*g->items));
		grp = &g->items[g->n++];
		grp->prefix = join(name, prefix_len, "%s", "");
		grp->part[0] = grp->part[1] = grp->part[2] = -1;
	}
	grp->part[part] = i;
}

static int fuse_qkv(struct plan *p, const struct ckpt *c, const struct qkv_group *grp,
		    struct err *e)
{
	const struct ckpt_tensor *q = &c->tensors[grp->part[0]], *t;
	uint64_t shape[2] = {0, q->ndim == 2 ? q->shape[1] : 0}, offset = 0,
		 esize = dtype_size(q->dtype);
	char *name;
	long out;
	int k;

	for (k = 0; k < 3; k++) {
		t = &c->tensors[grp->part[k]];
		if (t->ndim != 2 || t->dtype != q->dtype || t->shape[1] != shape[1]) {
			char tshape[128], qshape[128];

			format_shape(t, tshape, sizeof(tshape));
			format_shape(q, qshape, sizeof(qshape));
			err_set_tensor(e, t->name);
			return err_set(
				e, "qkv_mismatch",
				"%s: %s %s cannot be fused with %s (%s %s); q, k and v need one dtype "
				"and column count",
				t->name, dtype_name(t->dtype), tshape, q->name,
				dtype_name(q->dtype), qshape);
		}
		shape[0] += t->shape[0];
	}
	name = join(grp->prefix, strlen(grp->prefix), ".attention.query_key_value.weight");
	out = plan_add_tensor(p, name, q->dtype, 2, shape, e);
	free(name);
	if (out < 0)
		return -1;
	for (k = 0; k < 3; k++) {
		t = &c->tensors[grp->part[k]];
		if (plan_add_contiguous(p, out, (uint32_t)grp->part[k], 0, offset,
					t->shape[0] * shape[1], t->dtype, t->dtype, e) < 0)
			return -1;
		offset += t->shape[0] * shape[1] * esize;
	}
	return 0;
}

/* All three: fused; only some: each as P.attention.{q,k,v}_proj.weight. */
static int emit_qkv(struct plan *p, const struct ckpt *c, const struct qkv_groups *g, struct err *e)
{
	static const char part_names[3] = {'q', 'k', 'v'};
	size_t i;
	int k;

	for (i = 0; i < g->n; i++) {
		const struct qkv_group *grp = &g->items[i];

		if (grp->part[0] >= 0 && grp->part[1] >= 0 && grp->part[2] >= 0) {
			if (fuse_qkv(p, c, grp, e) < 0)
				return -1;
			continue;
		}
		for (k = 0; k < 3; k++) {
			char *name;
			int rc;

			if (grp->part[k] < 0)
				continue;
			name = join(grp->prefix, strlen(grp->prefix), ".attention.%c_proj.weight",
				    part_names[k]);
			rc = pass_through(p, c, (uint32_t)grp->part[k], name, e);
			free(name);
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}

static int native_tensor(struct plan *p, const struct ckpt *c, uint32_t i, const struct dims *d,
			 struct qkv_groups *qkv, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	size_t prefix_len;
	int part;

	if ((prefix_len = layer_prefix_len(t->name, GATE_UP_SUFFIX))) {
		if (check_grouped(t, d->experts, d->hidden, 2 * d->moe_inter,
				  "num_experts, hidden_size, 2 x moe_intermediate_size", e) < 0)
			return -1;
		return split_gate_up(p, c, i, prefix_len, d, e);
	}
	if ((prefix_len = layer_prefix_len(t->name, DOWN_SUFFIX))) {
		if (check_grouped(t, d->experts, d->moe_inter, d->hidden,
				  "num_experts, moe_intermediate_size, hidden_size", e) < 0)
			return -1;
		return split_down(p, c, i, prefix_len, d, e);
	}
	if (match_native_qkv(t->name, &prefix_len, &part)) {
		qkv_collect(qkv, t->name, prefix_len, part, i);
		return 0;
	}
	return pass_through_renamed(p, c, i, LAYOUT_HF, e);
}

static int native_to_hf(const struct ckpt *c, const struct adapter_options *o, const struct dims *d,
			struct plan *p, struct err *e)
{
	struct qkv_groups qkv = {0};
	uint32_t i;
	int rc = 0;

	if (o->dtype != DTYPE_CHOICE_AUTO && o->dtype != DTYPE_CHOICE_KEEP)
		return err_set(e, "invalid_option",
			       "a dtype (%s) applies only to conversions to native",
			       dtype_choice_name(o->dtype));
	if (o->ep_size)
		return err_set(e, "invalid_option",
			       "expert parallelism applies only to conversions to native");
	for (i = 0; i < c->ntensors && rc == 0; i++)
		rc = native_tensor(p, c, i, d, &qkv, e);
	if (rc == 0)
		rc = emit_qkv(p, c, &qkv, e);
	qkv_groups_fini(&qkv);
	return rc;
}

/* ---- entry point ------------------------------------------------------- */

/* The plan's tensors and pieces for a checkpoint whose dimensions are d. */
static int plan_layout(const struct ckpt *c, const struct adapter_options *o, const struct dims *d,
		       struct plan *p, struct err *e)
{
	switch (o->to) {
	case LAYOUT_NATIVE:
		return hf_to_native(c, o, d, p, e);
	case LAYOUT_HF:
		return native_to_hf(c, o, d, p, e);
	default:
		return err_set(e, "invalid_option", "target layout must be hf or native");
	}
}

static int build_plan(const struct ckpt *c, const struct adapter_options *o, struct plan *p,
		      struct err *e)
{
	struct dims d;

	if (read_dims(c, &d, e) < 0 || refuse_quantized(c, e) < 0)
		return -1;
	if (p->from == o->to)
		return err_set(e, "already_in_layout", "the checkpoint is already in the %s layout",
			       layout_name(o->to));
	return plan_layout(c, o, &d, p, e);
}

/* ---- reading the output back --------------------------------------------- */

/* The first few source tensors at fault, for one message. */
struct offenders {
	size_t n;
	size_t used;
	char shown[ERR_MSG_MAX / 2];
	char first[ERR_TENSOR_MAX];
	bool expert; /* one is named like a routed expert's tensor */
};

static void offender_add(struct offenders *o, const char *source, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void offender_add(struct offenders *o, const char *source, const char *fmt, ...)
{
	va_list ap;

	if (o->n == 0)
		snprintf(o->first, sizeof(o->first), "%s", source);
	o->expert |= has_numbered_expert(source);
	if (o->n++ >= MISSING_NAMES_SHOWN || o->used >= sizeof(o->shown))
		return;
	o->used += (size_t)snprintf(o->shown + o->used, sizeof(o->shown) - o->used, "%s%s",
				    o->n > 1 ? ", " : "", source);
	if (!fmt || o->used >= sizeof(o->shown))
		return;
	va_start(ap, fmt);
	o->used += (size_t)vsnprintf(o->shown + o->used, sizeof(o->shown) - o->used, fmt, ap);
	va_end(ap);
}

/* "<lead> N tensor(s): A, B (detail) and N more<tail>", with a word on
 * routed experts when one is among them. */
static int offenders_error(const struct offenders *o, struct err *e, const char *lead,
			   const char *tail)
{
	char more[48] = "";

	if (o->n > MISSING_NAMES_SHOWN)
		snprintf(more, sizeof(more), " and %zu more", o->n - MISSING_NAMES_SHOWN);
	err_set_tensor(e, o->first);
	return err_set(e, "unsupported_tensor", "%s %zu tensor%s: %s%s%s%s", lead, o->n,
		       o->n == 1 ? "" : "s", o->shown, more, tail,
		       o->expert ? " (routed experts are grouped from "
				   "[model.][language_model.]layers.L.mlp.experts.E."
				   "{gate,up,down}_proj.weight only)" :
				   "");
}

/* The output of a finished plan as a checkpoint of tensor descriptions
 * only (no store, no data), with the source's config.json, which the
 * conversion copies: what converting the output back reads.  An
 * expert-parallel rank's grouped tensors stand for the whole, all E
 * experts, so that the output is checked as the checkpoint of which it is
 * one share. */
static void output_view(struct ckpt *v, const struct ckpt *c, const struct plan *p,
			const struct adapter_options *o, const struct dims *d)
{
	size_t i;

	memset(v, 0, sizeof(*v));
	v->config = c->config;
	v->ntensors = p->ntensors;
	v->tensors = xcalloc(p->ntensors ? p->ntensors : 1, sizeof(*v->tensors));
	for (i = 0; i < p->ntensors; i++) {
		const struct plan_tensor *pt = &p->tensors[i];
		struct ckpt_tensor *t = &v->tensors[i];

		t->name = pt->name;
		t->dtype = pt->dtype;
		t->ndim = pt->ndim;
		memcpy(t->shape, pt->shape, sizeof(t->shape));
		t->nbytes = pt->nbytes;
		if (o->ep_size && pt->ndim == 3 &&
		    (layer_prefix_len(pt->name, GATE_UP_SUFFIX) ||
		     layer_prefix_len(pt->name, DOWN_SUFFIX))) {
			t->shape[0] = d->experts;
			t->nbytes =
				d->experts * pt->shape[1] * pt->shape[2] * dtype_size(pt->dtype);
		}
	}
}

/* The source tensor output tensor i of p was made from (the first). */
static const char *source_of(const struct ckpt *c, const struct plan *p, size_t i)
{
	return p->tensors[i].nsources ? c->tensors[p->tensors[i].sources[0]].name :
					p->tensors[i].name;
}

/* The output reads as the layout it was made in: no name of the other
 * layout left in it, and some name of its own. */
static int check_output_layout(const struct ckpt *c, const struct plan *p, const struct ckpt *v,
			       struct err *e)
{
	struct offenders off = {0};
	struct err why = {0};
	enum layout got;
	size_t i;

	detect(v, &got, &why);
	if (got == p->to)
		return 0;
	for (i = 0; i < p->ntensors; i++) {
		const char *name = p->tensors[i].name, *src = source_of(c, p, i);

		if (p->to == LAYOUT_NATIVE ? !hf_name(name) : !native_name(name))
			continue;
		if (strcmp(name, src) == 0)
			offender_add(&off, src, NULL);
		else
			offender_add(&off, src, " (as %s)", name);
	}
	if (off.n == 0)
		return err_set(e, "unsupported_tensor",
			       "no output tensor would have a name of the %s layout, so the output "
			       "could not be converted back",
			       layout_name(p->to));
	return offenders_error(&off, e,
			       p->to == LAYOUT_NATIVE ? "the native layout has no place for" :
							"the HF layout has no place for",
			       p->to == LAYOUT_NATIVE ?
				       "; with these HF-layout names left as they "
				       "are, the output could not be converted back" :
				       "; with these native-layout names left as "
				       "they are, the output could not be converted "
				       "back");
}

/* Converting the output back fails: the error, said of the source. */
static int back_error(const struct ckpt *c, const struct plan *p, const struct err *why,
		      struct err *e)
{
	long i = why->tensor[0] ? plan_find(p, why->tensor) : -1;
	const char *src = i >= 0 ? source_of(c, p, (size_t)i) : why->tensor;

	err_set_tensor(e, src);
	return err_set(e, why->code, "%s%sthe output could not be converted back: %s", src,
		       src[0] ? ": " : "", why->msg);
}

/* An expert out of the rank's range, which the rank's output lacks. */
static bool other_rank_expert(const char *name, const struct adapter_options *o,
			      const struct dims *d)
{
	uint64_t start, end;
	struct expert_name x;

	if (!o->ep_size || !parse_hf_expert(name, &x))
		return false;
	ep_range(d->experts, o->ep_size, o->ep_rank, &start, &end);
	return x.expert < start || x.expert >= end;
}

/* The first source tensor behind reverse tensor r (made from output
 * tensors of p) that no reverse tensor gave back; -1 if none. */
static long unreturned_source(const struct plan *p, const struct plan_tensor *r, const bool *back)
{
	uint32_t i, j;

	for (i = 0; i < r->nsources; i++) {
		const struct plan_tensor *t = &p->tensors[r->sources[i]];

		for (j = 0; j < t->nsources; j++)
			if (!back[t->sources[j]])
				return t->sources[j];
	}
	return -1;
}

/* Converting back (plan q) gives every source tensor p was made from under
 * its own name and shape (dtypes differ only where p casts).  A reverse
 * tensor under another name is paired with a source tensor behind it that
 * did not come back, to say what became of it. */
static int check_same_tensors(const struct ckpt *c, const struct plan *p, const struct plan *q,
			      const struct adapter_options *o, const struct dims *d, struct err *e)
{
	bool *back = xcalloc(c->ntensors ? c->ntensors : 1, sizeof(*back));
	long *found = xcalloc(q->ntensors ? q->ntensors : 1, sizeof(*found));
	struct offenders off = {0};
	char shape[128];
	size_t i;
	uint32_t j;
	long s;
	int rc = 0;

	for (i = 0; i < q->ntensors; i++) {
		const struct plan_tensor *r = &q->tensors[i];

		if ((s = found[i] = ckpt_find(c, r->name)) < 0)
			continue;
		back[s] = true;
		if (r->ndim != c->tensors[s].ndim ||
		    memcmp(r->shape, c->tensors[s].shape, (size_t)r->ndim * sizeof(*r->shape))) {
			struct ckpt_tensor as_back = {.ndim = r->ndim};

			memcpy(as_back.shape, r->shape, sizeof(as_back.shape));
			format_shape(&as_back, shape, sizeof(shape));
			offender_add(&off, c->tensors[s].name, " (comes back with shape %s)",
				     shape);
		}
	}
	for (i = 0; i < q->ntensors; i++) {
		const struct plan_tensor *r = &q->tensors[i];

		if (found[i] >= 0 || other_rank_expert(r->name, o, d))
			continue;
		s = unreturned_source(p, r, back);
		if (s >= 0)
			back[s] = true;
		offender_add(&off, s >= 0 ? c->tensors[s].name : r->name, " (comes back as %s)",
			     r->name);
	}
	for (i = 0; i < p->ntensors; i++)
		for (j = 0; j < p->tensors[i].nsources; j++)
			if (!back[p->tensors[i].sources[j]]) {
				back[p->tensors[i].sources[j]] = true;
				offender_add(&off, c->tensors[p->tensors[i].sources[j]].name,
					     " (does not come back)");
			}
	if (off.n)
		rc = offenders_error(&off, e, "converting the output back would not restore", "");
	free(found);
	free(back);
	return rc;
}

static int check_round_trip(const struct ckpt *c, const struct adapter_options *o,
			    const struct plan *p, struct err *e)
{
	struct adapter_options back = {.to = p->from, .dtype = DTYPE_CHOICE_KEEP};
	struct plan_options tensors_only = {.tensors_only = true};
	struct err why = {0};
	struct plan *q = NULL;
	struct ckpt v;
	struct dims d;
	int rc;

	if (read_dims(c, &d, e) < 0)
		return -1;
	output_view(&v, c, p, o, &d);
	rc = check_output_layout(c, p, &v, e);
	if (rc == 0) {
		q = plan_new(&v, p->to, p->from);
		if (plan_layout(&v, &back, &d, q, &why) < 0 ||
		    plan_finish(q, &tensors_only, &why) < 0)
			rc = back_error(c, p, &why, e);
	}
	/* SPEC.md's lossless round trip: HF -> native -> HF. */
	if (rc == 0 && p->from == LAYOUT_HF && p->nexcluded == 0)
		rc = check_same_tensors(c, p, q, o, &d, e);
	plan_free(q);
	free(v.tensors);
	return rc;
}

const struct adapter bailing_moe_v2_adapter = {
	.name = "bailing_moe_v2",
	.matches = matches,
	.detect = detect,
	.describe = describe,
	.build_plan = build_plan,
	.check_round_trip = check_round_trip,
};
