/* SPDX-License-Identifier: MIT */
/*
 * moe: the parts of a mixture-of-experts adapter that do not depend on the
 * family (moe.h).  Routed experts are stacked per layer into
 * gate_and_up_projs [E, H, 2I] and down_projs [E, I, H] (optionally only
 * one expert-parallel rank's share) or split back, as NeMo Automodel does
 * it (SPEC.md), refusing missing or misshapen experts and quantized
 * tensors.  Output that would not convert back (a tensor the target
 * layout has no place for) is found by planning the way back over the
 * output's tensor descriptions before anything is written.
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
#include "moe.h"

#define MISSING_NAMES_SHOWN 4
#define EXPERTS_SEGMENT ".mlp.experts."

/* The most elements a tensor may have: that many elements of the widest
 * safetensors dtype (8 bytes) still end at an offset a file can hold
 * (off_t, 2^63 - 1 bytes).  Every dimension from config.json is checked
 * against it, so no size computed from them can overflow. */
#define TENSOR_ELEMENTS_MAX ((uint64_t)INT64_MAX / 8)

const char *const moe_proj_names[MOE_PROJ_COUNT] = {"gate_proj", "up_proj", "down_proj"};

/* ---- config.json ------------------------------------------------------- */

int moe_config_count(const struct ckpt *c, const char *key, int64_t min, uint64_t *out,
		     struct err *e)
{
	int64_t v;

	if (ckpt_config_int(c, key, &v, e) < 0)
		return -1;
	if (v < min)
		return err_set(e, ERR_CONFIG_INVALID,
			       "config.json: %s is %" PRId64 ", expected at least %" PRId64, key, v,
			       min);
	*out = (uint64_t)v;
	return 0;
}

int moe_check_holdable(bool ok, uint64_t a, uint64_t b, uint64_t c, struct err *e, const char *fmt,
		       ...)
{
	char what[ERR_MSG_MAX];
	uint64_t n;
	va_list ap;

	if (ok && u64_mul(a, b, &n) && u64_mul(n, c, &n) && n <= TENSOR_ELEMENTS_MAX)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return err_set(e, ERR_CONFIG_INVALID,
		       "config.json: %s would have more than the %" PRIu64
		       " elements a safetensors tensor can hold",
		       what, TENSOR_ELEMENTS_MAX);
}

int moe_check_experts_holdable(const struct moe_dims *d, struct err *e)
{
	uint64_t inter2 = 0;
	bool ok = u64_mul(d->moe_inter, 2, &inter2);

	return moe_check_holdable(ok, d->experts, d->hidden, inter2, e,
				  "a grouped gate_and_up_projs [num_experts %" PRIu64
				  ", hidden_size %" PRIu64 ", 2 x moe_intermediate_size %" PRIu64
				  "]",
				  d->experts, d->hidden, d->moe_inter);
}

static int read_dims(const struct moe_family *f, const struct ckpt *c, struct moe_dims *d,
		     struct err *e)
{
	if (!c->config)
		return err_set(e, ERR_MISSING_CONFIG, "the checkpoint has no config.json");
	return f->read_dims(c, d, e);
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
			e, ERR_CONFIG_INVALID,
			"config.json: %s %s%s%s is not bfloat16, float16 or float32; choose a dtype",
			*key, name ? "\"" : "", name ? name : "(not a string)", name ? "\"" : "");
	return 0;
}

int moe_target_dtype(const struct ckpt *c, enum dtype_choice choice, enum dtype *out,
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
		return err_set(e, ERR_INVALID_OPTION,
			       "dtype %s is not auto, keep, bf16, f16 or f32 (f64 only consolidates "
			       "a sharded checkpoint to hf)",
			       dtype_choice_name(choice));
	}
}

/* ---- names ------------------------------------------------------------- */

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

size_t moe_layer_prefix_len(const char *name, const char *suffix)
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

size_t moe_layer_of(const char *name, uint64_t *layer)
{
	static const char *const prefixes[] = {"model.language_model.layers.", "model.layers.",
					       "language_model.layers.", "layers."};
	const char *p = NULL;
	size_t i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]) && !p; i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			p = name + strlen(prefixes[i]);
	if (!p || !(p = skip_digits(p, layer)) || *p != '.')
		return 0;
	return (size_t)(p - name);
}

bool moe_parse_expert(const char *name, struct moe_expert_name *out)
{
	size_t len = moe_layer_of(name, &out->layer);
	const char *p = name + len;
	int k;

	if (!len || strncmp(p, EXPERTS_SEGMENT, strlen(EXPERTS_SEGMENT)) != 0)
		return false;
	p += strlen(EXPERTS_SEGMENT);
	out->base_len = (size_t)(p - name);
	if (!(p = skip_digits(p, &out->expert)) || *p++ != '.')
		return false;
	for (k = 0; k < MOE_PROJ_COUNT; k++) {
		size_t n = strlen(moe_proj_names[k]);

		if (strncmp(p, moe_proj_names[k], n) == 0 && strcmp(p + n, ".weight") == 0) {
			out->proj = (enum moe_proj)k;
			return true;
		}
	}
	return false;
}

bool moe_parse_packed(const char *name, struct moe_expert_name *out)
{
	size_t len = moe_layer_of(name, &out->layer);
	const char *p = name + len;

	if (!len || strncmp(p, EXPERTS_SEGMENT, strlen(EXPERTS_SEGMENT)) != 0)
		return false;
	p += strlen(EXPERTS_SEGMENT);
	out->base_len = (size_t)(p - name);
	out->expert = 0;
	if (strcmp(p, MOE_PACKED_GATE_UP) == 0)
		out->proj = MOE_PROJ_GATE;
	else if (strcmp(p, MOE_PACKED_DOWN) == 0)
		out->proj = MOE_PROJ_DOWN;
	else
		return false;
	return true;
}

bool moe_has_numbered_expert(const char *name)
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

char *moe_rename(const char *name, const struct moe_rename *rules, size_t nrules, enum layout to)
{
	size_t i;

	for (i = 0; i < nrules; i++) {
		const char *from = to == LAYOUT_NATIVE ? rules[i].hf : rules[i].native;
		const char *into = to == LAYOUT_NATIVE ? rules[i].native : rules[i].hf;

		if (strstr(name, from))
			return replace_all(name, from, into);
	}
	return xstrdup(name);
}

char *moe_join(const char *prefix, size_t prefix_len, const char *fmt, ...)
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

void moe_format_shape(const struct ckpt_tensor *t, char *buf, size_t len)
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

bool moe_matches(const struct moe_family *f, const struct ckpt *c)
{
	return adapter_declares(c, f->architecture);
}

int moe_detect(const struct moe_family *f, const struct ckpt *c, enum layout *out, struct err *e)
{
	const char *hf = NULL, *native = NULL;
	size_t i;

	*out = LAYOUT_UNKNOWN;
	for (i = 0; i < c->ntensors && !(hf && native); i++) {
		if (!hf && f->hf_name(c->tensors[i].name))
			hf = c->tensors[i].name;
		if (!native && f->native_name(c->tensors[i].name))
			native = c->tensors[i].name;
	}
	if (hf && native)
		return err_set(e, ERR_AMBIGUOUS_LAYOUT,
			       "tensor names of both layouts are present: %s (HF) and %s (native)",
			       hf, native);
	if (!hf && !native)
		return err_set(
			e, ERR_UNKNOWN_LAYOUT,
			"no tensor name identifies the HF or the native layout of %s (%zu tensors)",
			f->model, c->ntensors);
	*out = hf ? LAYOUT_HF : LAYOUT_NATIVE;
	return 0;
}

/* model_info.mtp_layers of c: how many layers past num_hidden_layers its
 * tensor names reach. */
static uint64_t mtp_layers(const struct ckpt *c, uint64_t layers)
{
	uint64_t layer, last = 0;
	bool past = false;
	size_t i;

	for (i = 0; i < c->ntensors; i++)
		if (moe_layer_of(c->tensors[i].name, &layer) && layer >= layers &&
		    (!past || layer > last)) {
			last = layer;
			past = true;
		}
	return past ? last - layers + 1 : 0;
}

/* model_info.experts_layout of c. */
static const char *experts_layout(const struct ckpt *c)
{
	bool per_expert = false, packed = false, grouped = false;
	struct moe_expert_name x;
	size_t i;

	for (i = 0; i < c->ntensors; i++) {
		const char *name = c->tensors[i].name;

		per_expert |= moe_parse_expert(name, &x);
		packed |= moe_parse_packed(name, &x);
		grouped |= moe_layer_prefix_len(name, MOE_GATE_UP_SUFFIX) ||
			   moe_layer_prefix_len(name, MOE_DOWN_SUFFIX);
	}
	if (per_expert && packed)
		return "per_expert+packed";
	return per_expert ? "per_expert" : packed ? "packed" : grouped ? "grouped" : "none";
}

int moe_describe(const struct moe_family *f, const struct ckpt *c, struct model_info *out,
		 struct err *e)
{
	struct err ignored = {0};
	struct moe_dims d;
	const char *model_type;

	memset(out, 0, sizeof(*out));
	if (read_dims(f, c, &d, e) < 0)
		return -1;
	model_type = ckpt_config_string(c, "model_type");
	snprintf(out->model_type, sizeof(out->model_type), "%s", model_type ? model_type : "");
	snprintf(out->architecture, sizeof(out->architecture), "%s", f->architecture);
	out->layers = d.layers;
	out->mtp_layers = mtp_layers(c, d.layers);
	out->experts = d.experts;
	out->experts_layout = experts_layout(c);
	/* A dtype ckptconv cannot cast to is reported, not an error: a
	 * conversion that names its dtype does not need it. */
	if (model_dtype(c, &out->dtype, &out->dtype_key, &ignored) < 0)
		out->dtype = DTYPE_INVALID;
	return moe_detect(f, c, &out->layout, e);
}

/* ---- building blocks --------------------------------------------------- */

int moe_pass_through(struct plan *p, const struct ckpt *c, uint32_t i, const char *name,
		     struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	long out = plan_add_tensor(p, name, t->dtype, t->ndim, t->shape, e);
	uint64_t nelems = 1;
	int d;

	if (out < 0)
		return -1;
	for (d = 0; d < t->ndim; d++)
		nelems *= t->shape[d]; /* bounded: the header's sizes were checked */
	plan_add_source(p, out, i);
	return moe_copy_elements(p, out, c, i, 0, 0, nelems, e);
}

int moe_copy_elements(struct plan *p, long out, const struct ckpt *c, uint32_t i, uint64_t src_elem,
		      uint64_t dst_elem, uint64_t nelems, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	enum dtype el = dtype_element(t->dtype);
	uint64_t src_off, dst_off, len;

	if (!dtype_bytes(t->dtype, src_elem, &src_off) ||
	    !dtype_bytes(t->dtype, dst_elem, &dst_off) || !dtype_bytes(t->dtype, nelems, &len) ||
	    dtype_size(el) == 0) {
		err_set_tensor(e, t->name);
		return err_set(e, ERR_QUANTIZED_INPUT,
			       "%s: %" PRIu64 " elements of %s from element %" PRIu64
			       " do not start and end on whole bytes; ckptconv copies tensors of "
			       "%s only in runs of whole bytes",
			       t->name, nelems, dtype_name(t->dtype), src_elem,
			       dtype_name(t->dtype));
	}
	return plan_add_contiguous(p, out, i, src_off, dst_off, len / dtype_size(el), el, el, e);
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
					e, ERR_QUANTIZED_INPUT,
					"%s: %s is a quantized (FP8) dtype; only unquantized checkpoints "
					"are converted",
					t->name, dtype_name(t->dtype));
			return err_set(e, ERR_QUANTIZED_INPUT,
				       "%s: quantization scales (*_scale_inv) are not supported",
				       t->name);
		}
	}
	return 0;
}

void moe_ep_range(uint64_t experts, uint32_t size, uint32_t rank, uint64_t *start, uint64_t *end)
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

/* ---- native -> HF -------------------------------------------------------- */

/* gate_and_up_projs [E, H, 2I] -> per expert gate_proj = ([x][:, 0:I])^T and
 * up_proj = ([x][:, I:2I])^T, each [I, H]. */
static int split_gate_up(struct plan *p, const struct ckpt *c, uint32_t src, size_t prefix_len,
			 const struct moe_dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[src];
	uint64_t H = d->hidden, I = d->moe_inter, es = dtype_size(t->dtype), x;
	uint64_t shape[2] = {I, H};
	int k, rc = 0;

	for (x = 0; x < d->experts && rc == 0; x++)
		for (k = MOE_PROJ_GATE; k <= MOE_PROJ_UP && rc == 0; k++) {
			char *name = moe_join(t->name, prefix_len,
					      ".mlp.experts.%" PRIu64 ".%s.weight", x,
					      moe_proj_names[k]);
			long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);
			const struct plan_block half = {.src = src,
							.offset = x * H * 2 * I * es,
							.stride = 2 * I * es,
							.rows = H,
							.col = k == MOE_PROJ_GATE ? 0 : I};

			free(name);
			rc = out < 0 ? -1 : plan_add_transposed(p, out, 0, I, &half, 1, e);
		}
	return rc;
}

/* down_projs [E, I, H] -> per expert down_proj = ([x])^T, [H, I]. */
static int split_down(struct plan *p, const struct ckpt *c, uint32_t src, size_t prefix_len,
		      const struct moe_dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[src];
	uint64_t H = d->hidden, I = d->moe_inter, es = dtype_size(t->dtype), x;
	uint64_t shape[2] = {H, I};
	int rc = 0;

	for (x = 0; x < d->experts && rc == 0; x++) {
		char *name = moe_join(t->name, prefix_len,
				      ".mlp.experts.%" PRIu64 ".down_proj.weight", x);
		long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);
		const struct plan_block block = {
			.src = src, .offset = x * I * H * es, .stride = H * es, .rows = I};

		free(name);
		rc = out < 0 ? -1 : plan_add_transposed(p, out, 0, H, &block, 1, e);
	}
	return rc;
}

static int check_grouped(const struct ckpt_tensor *t, uint64_t d0, uint64_t d1, uint64_t d2,
			 const char *what, struct err *e)
{
	char shape[128];

	if (t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2)
		return 0;
	moe_format_shape(t, shape, sizeof(shape));
	err_set_tensor(e, t->name);
	return err_set(e, ERR_GROUPED_SHAPE_MISMATCH,
		       "%s: shape %s, expected [%" PRIu64 ", %" PRIu64 ", %" PRIu64
		       "] = [%s] from config.json",
		       t->name, shape, d0, d1, d2, what);
}

int moe_ungroup(struct plan *p, const struct ckpt *c, uint32_t i, const struct moe_dims *d,
		struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	size_t prefix_len;

	if ((prefix_len = moe_layer_prefix_len(t->name, MOE_GATE_UP_SUFFIX))) {
		if (check_grouped(t, d->experts, d->hidden, 2 * d->moe_inter,
				  "num_experts, hidden_size, 2 x moe_intermediate_size", e) < 0 ||
		    split_gate_up(p, c, i, prefix_len, d, e) < 0)
			return -1;
		return 1;
	}
	if ((prefix_len = moe_layer_prefix_len(t->name, MOE_DOWN_SUFFIX))) {
		if (check_grouped(t, d->experts, d->moe_inter, d->hidden,
				  "num_experts, moe_intermediate_size, hidden_size", e) < 0 ||
		    split_down(p, c, i, prefix_len, d, e) < 0)
			return -1;
		return 1;
	}
	return 0;
}

/* ---- planning ------------------------------------------------------------ */

/* The plan's tensors and pieces for a checkpoint whose dimensions are d. */
static int plan_layout(const struct moe_family *f, const struct ckpt *c,
		       const struct adapter_options *o, const struct moe_dims *d, struct plan *p,
		       struct err *e)
{
	switch (o->to) {
	case LAYOUT_NATIVE:
		return f->to_native(c, o, d, p, e);
	case LAYOUT_HF:
		return f->to_hf(c, o, d, p, e);
	default:
		return err_set(e, ERR_INVALID_OPTION, "target layout must be hf or native");
	}
}

int moe_build_plan(const struct moe_family *f, const struct ckpt *c,
		   const struct adapter_options *o, struct plan *p, struct err *e)
{
	struct moe_dims d;

	if (read_dims(f, c, &d, e) < 0 || refuse_quantized(c, e) < 0)
		return -1;
	if (p->from == o->to)
		return err_set(e, ERR_ALREADY_IN_LAYOUT, "the checkpoint is already in the %s layout",
			       layout_name(o->to));
	if (adapter_options_check(o, NULL, e) < 0)
		return -1;
	return plan_layout(f, c, o, &d, p, e);
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
	o->expert |= moe_has_numbered_expert(source);
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
	return err_set(e, ERR_UNSUPPORTED_TENSOR, "%s %zu tensor%s: %s%s%s%s", lead, o->n,
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
			const struct adapter_options *o, const struct moe_dims *d)
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
		    (moe_layer_prefix_len(pt->name, MOE_GATE_UP_SUFFIX) ||
		     moe_layer_prefix_len(pt->name, MOE_DOWN_SUFFIX))) {
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
static int check_output_layout(const struct moe_family *f, const struct ckpt *c,
			       const struct plan *p, const struct ckpt *v, struct err *e)
{
	struct offenders off = {0};
	struct err why = {0};
	enum layout got;
	size_t i;

	moe_detect(f, v, &got, &why);
	if (got == p->to)
		return 0;
	for (i = 0; i < p->ntensors; i++) {
		const char *name = p->tensors[i].name, *src = source_of(c, p, i);

		if (p->to == LAYOUT_NATIVE ? !f->hf_name(name) : !f->native_name(name))
			continue;
		if (strcmp(name, src) == 0)
			offender_add(&off, src, NULL);
		else
			offender_add(&off, src, " (as %s)", name);
	}
	if (off.n == 0)
		return err_set(e, ERR_UNSUPPORTED_TENSOR,
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
			      const struct moe_dims *d)
{
	uint64_t start, end;
	struct moe_expert_name x;

	if (!o->ep_size || !moe_parse_expert(name, &x))
		return false;
	moe_ep_range(d->experts, o->ep_size, o->ep_rank, &start, &end);
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

/* Whether reverse tensor r is one expert's projection made from packed
 * experts only (which come back one tensor per expert and projection, the
 * names of the published checkpoints); marks those packed tensors given
 * back. */
static bool from_packed(const struct ckpt *c, const struct plan *p, const struct plan_tensor *r,
			bool *back)
{
	struct moe_expert_name x;
	uint32_t i, j;

	if (!moe_parse_expert(r->name, &x) || r->nsources == 0)
		return false;
	for (i = 0; i < r->nsources; i++) {
		const struct plan_tensor *t = &p->tensors[r->sources[i]];

		for (j = 0; j < t->nsources; j++)
			if (!moe_parse_packed(c->tensors[t->sources[j]].name, &x))
				return false;
	}
	for (i = 0; i < r->nsources; i++) {
		const struct plan_tensor *t = &p->tensors[r->sources[i]];

		for (j = 0; j < t->nsources; j++)
			back[t->sources[j]] = true;
	}
	return true;
}

/* Converting back (plan q) gives every source tensor p was made from under
 * its own name and shape (dtypes differ only where p casts).  A reverse
 * tensor under another name is paired with a source tensor behind it that
 * did not come back, to say what became of it. */
static int check_same_tensors(const struct ckpt *c, const struct plan *p, const struct plan *q,
			      const struct adapter_options *o, const struct moe_dims *d,
			      struct err *e)
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
			moe_format_shape(&as_back, shape, sizeof(shape));
			offender_add(&off, c->tensors[s].name, " (comes back with shape %s)",
				     shape);
		}
	}
	for (i = 0; i < q->ntensors; i++) {
		const struct plan_tensor *r = &q->tensors[i];

		if (found[i] >= 0 || other_rank_expert(r->name, o, d) ||
		    from_packed(c, p, r, back))
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

int moe_check_round_trip(const struct moe_family *f, const struct ckpt *c,
			 const struct adapter_options *o, const struct plan *p, struct err *e)
{
	struct adapter_options back = {.to = p->from, .dtype = DTYPE_CHOICE_KEEP};
	struct plan_options tensors_only = {.tensors_only = true};
	struct err why = {0};
	struct plan *q = NULL;
	struct moe_dims d;
	struct ckpt v;
	int rc;

	if (read_dims(f, c, &d, e) < 0)
		return -1;
	output_view(&v, c, p, o, &d);
	rc = check_output_layout(f, c, p, &v, e);
	if (rc == 0) {
		q = plan_new(&v, p->to, p->from);
		if (plan_layout(f, &v, &back, &d, q, &why) < 0 ||
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
