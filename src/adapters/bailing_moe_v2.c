/* SPDX-License-Identifier: MIT */
/*
 * bailing_moe_v2: Ling 2.0 (BailingMoeV2ForCausalLM) between the HF layout
 * and NeMo Automodel's native layout, bit for bit as the reference adapter
 * does it (SPEC.md).  What is Ling's own is here: its config.json
 * dimensions, the names that tell its layouts apart, the renames, and the
 * fused QKV split by rows or fused back.  The routed experts, grouped into
 * gate_and_up_projs and down_projs or split back, the checks every MoE
 * family makes and the check that the output converts back are moe.c's.
 * It is stricter than the reference where the reference would silently
 * write wrong weights: q/k/v that do not fit together and dimensions in
 * config.json no tensor could have are refused.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/plan.h"
#include "moe.h"

#define DEFAULT_HEAD_DIM 128

/* Substring renames, HF and native spelling; the first rule whose
 * substring occurs wins and every occurrence is replaced. */
static const struct moe_rename renames[] = {
	{"model.word_embeddings.", "model.embed_tokens."},
	{".attention.dense.", ".self_attn.o_proj."},
	{".attention.query_layernorm.", ".self_attn.q_norm."},
	{".attention.key_layernorm.", ".self_attn.k_norm."},
	{".mlp.gate.expert_bias", ".mlp.gate.e_score_correction_bias"},
};

#define QKV_SUFFIX ".attention.query_key_value.weight"

/* ---- config.json ------------------------------------------------------- */

/* head_dim: absent means 128, null or 0 means hidden_size / heads (as the
 * model's config class reads it). */
static int read_head_dim(const struct ckpt *c, struct moe_dims *d, struct err *e)
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
				e, ERR_CONFIG_INVALID,
				"config.json: head_dim is %s, which means hidden_size %" PRIu64
				" / num_attention_heads %" PRIu64 " = 0",
				json_is_null(v) ? "null" : "0", d->hidden, d->heads);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return err_set(e, ERR_CONFIG_INVALID,
			       "config.json: head_dim is not a non-negative integer");
	d->head_dim = (uint64_t)json_integer_value(v);
	return 0;
}

/* Every tensor shape SPEC.md derives from the dimensions fits a file. */
static int check_dims(const struct moe_dims *d, uint64_t dense_inter, struct err *e)
{
	uint64_t heads = 0, rows = 0;
	bool ok = u64_mul(d->kv_heads, 2, &heads) && u64_add(heads, d->heads, &heads) &&
		  u64_mul(heads, d->head_dim, &rows);

	if (moe_check_holdable(ok, rows, d->hidden, 1, e,
			       "the fused query_key_value weight [(num_attention_heads %" PRIu64
			       " + 2 x num_key_value_heads %" PRIu64 ") x head_dim %" PRIu64
			       ", hidden_size %" PRIu64 "]",
			       d->heads, d->kv_heads, d->head_dim, d->hidden) < 0 ||
	    moe_check_holdable(true, dense_inter, d->hidden, 1, e,
			       "a dense MLP weight [intermediate_size %" PRIu64
			       ", hidden_size %" PRIu64 "]",
			       dense_inter, d->hidden) < 0)
		return -1;
	return moe_check_experts_holdable(d, e);
}

static int read_dims(const struct ckpt *c, struct moe_dims *d, struct err *e)
{
	uint64_t dense_inter = 0;

	if (moe_config_count(c, "hidden_size", 1, &d->hidden, e) < 0 ||
	    moe_config_count(c, "num_attention_heads", 1, &d->heads, e) < 0 ||
	    moe_config_count(c, "num_key_value_heads", 1, &d->kv_heads, e) < 0 ||
	    moe_config_count(c, "intermediate_size", 1, &dense_inter, e) < 0 ||
	    moe_config_count(c, "moe_intermediate_size", 1, &d->moe_inter, e) < 0 ||
	    moe_config_count(c, "num_experts", 1, &d->experts, e) < 0 ||
	    moe_config_count(c, "num_hidden_layers", 1, &d->layers, e) < 0 ||
	    moe_config_count(c, "first_k_dense_replace", 0, &d->first_dense, e) < 0 ||
	    read_head_dim(c, d, e) < 0)
		return -1;
	return check_dims(d, dense_inter, e);
}

/* ---- names --------------------------------------------------------------- */

static bool hf_name(const char *name)
{
	struct moe_expert_name packed;

	return strstr(name, ".attention.query_key_value.") || strstr(name, "word_embeddings") ||
	       strstr(name, ".attention.dense.") || moe_has_numbered_expert(name) ||
	       moe_parse_packed(name, &packed);
}

static bool native_name(const char *name)
{
	return strstr(name, ".self_attn.") || strstr(name, "embed_tokens") ||
	       strstr(name, MOE_GATE_UP_SUFFIX) || strstr(name, MOE_DOWN_SUFFIX) ||
	       strstr(name, "e_score_correction_bias");
}

static int pass_through_renamed(struct plan *p, const struct ckpt *c, uint32_t i, enum layout to,
				struct err *e)
{
	char *name =
		moe_rename(c->tensors[i].name, renames, sizeof(renames) / sizeof(renames[0]), to);
	int rc = moe_pass_through(p, c, i, name, e);

	free(name);
	return rc;
}

/* ---- HF -> native -------------------------------------------------------- */

/* Rows [row0, row0 + nrows) of the 2-D source as a tensor of its own. */
static int add_row_slice(struct plan *p, const struct ckpt *c, uint32_t i, char *name,
			 uint64_t row0, uint64_t nrows, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	uint64_t shape[2] = {nrows, t->shape[1]};
	long out = plan_add_tensor(p, name, t->dtype, 2, shape, e);
	int rc = -1;

	if (out >= 0)
		rc = moe_copy_elements(p, out, c, i, row0 * t->shape[1], 0, nrows * t->shape[1], e);
	free(name);
	return rc;
}

/* rows [0, nh*D) -> q_proj, the next nkv*D -> k_proj, the last nkv*D -> v_proj. */
static int split_qkv(struct plan *p, const struct ckpt *c, uint32_t i, size_t prefix_len,
		     const struct moe_dims *d, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	uint64_t q = d->heads * d->head_dim, kv = d->kv_heads * d->head_dim;
	char shape[128];

	if (t->ndim != 2 || t->shape[0] != q + 2 * kv) {
		moe_format_shape(t, shape, sizeof(shape));
		err_set_tensor(e, t->name);
		return err_set(e, ERR_QKV_SHAPE_MISMATCH,
			       "%s: shape %s, expected %" PRIu64
			       " rows = (num_attention_heads %" PRIu64
			       " + 2 x num_key_value_heads %" PRIu64 ") x head_dim %" PRIu64,
			       t->name, shape, q + 2 * kv, d->heads, d->kv_heads, d->head_dim);
	}
	if (add_row_slice(p, c, i, moe_join(t->name, prefix_len, ".self_attn.q_proj.weight"), 0, q,
			  e) < 0 ||
	    add_row_slice(p, c, i, moe_join(t->name, prefix_len, ".self_attn.k_proj.weight"), q, kv,
			  e) < 0 ||
	    add_row_slice(p, c, i, moe_join(t->name, prefix_len, ".self_attn.v_proj.weight"),
			  q + kv, kv, e) < 0)
		return -1;
	return 0;
}

static int hf_tensor(struct plan *p, const struct ckpt *c, uint32_t i, const struct moe_dims *d,
		     struct moe_groups *g, struct err *e)
{
	const char *name = c->tensors[i].name;
	size_t prefix_len;
	int rc = moe_groups_collect(g, c, i, e);

	if (rc)
		return rc < 0 ? -1 : 0;
	if ((prefix_len = moe_layer_prefix_len(name, QKV_SUFFIX)))
		return split_qkv(p, c, i, prefix_len, d, e);
	return pass_through_renamed(p, c, i, LAYOUT_NATIVE, e);
}

static int to_native(const struct ckpt *c, const struct adapter_options *o,
		     const struct moe_dims *d, struct plan *p, struct err *e)
{
	struct moe_groups g;
	uint32_t i;
	int rc = moe_groups_init(&g, c, o, d, e);

	for (i = 0; i < c->ntensors && rc == 0; i++)
		rc = hf_tensor(p, c, i, d, &g, e);
	if (rc == 0)
		rc = moe_groups_emit(&g, p, c, e);
	moe_groups_fini(&g);
	return rc;
}

/* ---- native -> HF -------------------------------------------------------- */

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
		if ((*prefix_len = moe_layer_prefix_len(name, suffixes[k]))) {
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
		grp->prefix = moe_join(name, prefix_len, "%s", "");
		grp->part[0] = grp->part[1] = grp->part[2] = -1;
	}
	grp->part[part] = i;
}

static int fuse_qkv(struct plan *p, const struct ckpt *c, const struct qkv_group *grp,
		    struct err *e)
{
	const struct ckpt_tensor *q = &c->tensors[grp->part[0]], *t;
	uint64_t shape[2] = {0, q->ndim == 2 ? q->shape[1] : 0}, offset = 0;
	char *name;
	long out;
	int k;

	for (k = 0; k < 3; k++) {
		t = &c->tensors[grp->part[k]];
		if (t->ndim != 2 || t->dtype != q->dtype || t->shape[1] != shape[1]) {
			char tshape[128], qshape[128];

			moe_format_shape(t, tshape, sizeof(tshape));
			moe_format_shape(q, qshape, sizeof(qshape));
			err_set_tensor(e, t->name);
			return err_set(
				e, ERR_QKV_MISMATCH,
				"%s: %s %s cannot be fused with %s (%s %s); q, k and v need one dtype "
				"and column count",
				t->name, dtype_name(t->dtype), tshape, q->name,
				dtype_name(q->dtype), qshape);
		}
		shape[0] += t->shape[0];
	}
	name = moe_join(grp->prefix, strlen(grp->prefix), ".attention.query_key_value.weight");
	out = plan_add_tensor(p, name, q->dtype, 2, shape, e);
	free(name);
	if (out < 0)
		return -1;
	for (k = 0; k < 3; k++) {
		t = &c->tensors[grp->part[k]];
		if (moe_copy_elements(p, out, c, (uint32_t)grp->part[k], 0, offset,
				      t->shape[0] * shape[1], e) < 0)
			return -1;
		offset += t->shape[0] * shape[1];
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
			name = moe_join(grp->prefix, strlen(grp->prefix),
					".attention.%c_proj.weight", part_names[k]);
			rc = moe_pass_through(p, c, (uint32_t)grp->part[k], name, e);
			free(name);
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}

static int native_tensor(struct plan *p, const struct ckpt *c, uint32_t i, const struct moe_dims *d,
			 struct qkv_groups *qkv, struct err *e)
{
	const struct ckpt_tensor *t = &c->tensors[i];
	size_t prefix_len;
	int part, rc = moe_ungroup(p, c, i, d, e);

	if (rc)
		return rc < 0 ? -1 : 0;
	if (match_native_qkv(t->name, &prefix_len, &part)) {
		qkv_collect(qkv, t->name, prefix_len, part, i);
		return 0;
	}
	return pass_through_renamed(p, c, i, LAYOUT_HF, e);
}

static int to_hf(const struct ckpt *c, const struct adapter_options *o, const struct moe_dims *d,
		 struct plan *p, struct err *e)
{
	struct qkv_groups qkv = {0};
	uint32_t i;
	int rc = 0;

	(void)o; /* checked by moe_build_plan: nothing applies to hf */
	for (i = 0; i < c->ntensors && rc == 0; i++)
		rc = native_tensor(p, c, i, d, &qkv, e);
	if (rc == 0)
		rc = emit_qkv(p, c, &qkv, e);
	qkv_groups_fini(&qkv);
	return rc;
}

/* ---- the adapter --------------------------------------------------------- */

static const struct moe_family ling = {
	.architecture = "BailingMoeV2ForCausalLM",
	.model = "Ling 2.0",
	.hf_name = hf_name,
	.native_name = native_name,
	.read_dims = read_dims,
	.to_native = to_native,
	.to_hf = to_hf,
};

static bool matches(const struct ckpt *c)
{
	return moe_matches(&ling, c);
}

static int detect(const struct ckpt *c, enum layout *out, struct err *e)
{
	return moe_detect(&ling, c, out, e);
}

static int describe(const struct ckpt *c, struct model_info *out, struct err *e)
{
	return moe_describe(&ling, c, out, e);
}

static int build_plan(const struct ckpt *c, const struct adapter_options *o, struct plan *p,
		      struct err *e)
{
	return moe_build_plan(&ling, c, o, p, e);
}

static int check_round_trip(const struct ckpt *c, const struct adapter_options *o,
			    const struct plan *p, struct err *e)
{
	return moe_check_round_trip(&ling, c, o, p, e);
}

const struct adapter bailing_moe_v2_adapter = {
	.name = "bailing_moe_v2",
	.matches = matches,
	.detect = detect,
	.describe = describe,
	.build_plan = build_plan,
	.check_round_trip = check_round_trip,
};
