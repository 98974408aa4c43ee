/* SPDX-License-Identifier: MIT */
/*
 * moe_groups: HF -> native for routed experts (moe.h).  Each MoE layer's
 * experts are read either per expert (…mlp.experts.e.{gate,up,down}_proj.weight,
 * the published Ling checkpoints) or packed as transformers keeps them
 * (…mlp.experts.gate_up_proj [E, 2I, H], …mlp.experts.down_proj [E, H, I])
 * and stacked, transposed, into gate_and_up_projs [E, H, 2I] and
 * down_projs [E, I, H]: the same bytes from either source.  Before
 * anything is planned, every MoE layer of the checkpoint must have its
 * experts, complete: an output without a layer's grouped experts would
 * load as a model that is not the one converted.
 */
#include <inttypes.h>
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

enum packed { PACKED_GATE_UP, PACKED_DOWN, PACKED_COUNT };
static const char *const packed_names[PACKED_COUNT] = {MOE_PACKED_GATE_UP, MOE_PACKED_DOWN};

/* The routed experts of one MoE layer, by expert number and projection,
 * or packed: one way or the other, never both. */
struct moe_group {
	char *base;                 /* "…layers.L.mlp.experts." */
	uint64_t layer;             /* L */
	long *slots;                /* [expert - start][proj]: source tensor, -1
				     * when absent; NULL until a tensor of one
				     * expert is seen */
	long first_expert;          /* the first such tensor, -1 if none */
	long packed[PACKED_COUNT];  /* gate_up_proj, down_proj: source tensor,
				     * -1 when absent */
};

int moe_groups_init(struct moe_groups *g, const struct ckpt *c, const struct adapter_options *o,
		    const struct moe_dims *d, struct err *e)
{
	memset(g, 0, sizeof(*g));
	g->dims = d;
	if (moe_target_dtype(c, o->dtype, &g->to, e) < 0)
		return -1;
	moe_ep_range(d->experts, o->ep_size, o->ep_rank, &g->start, &g->end);
	return 0;
}

void moe_groups_fini(struct moe_groups *g)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		free(g->items[i].base);
		free(g->items[i].slots);
	}
	free(g->items);
}

static bool is_packed(const struct moe_group *grp)
{
	return grp->packed[PACKED_GATE_UP] >= 0 || grp->packed[PACKED_DOWN] >= 0;
}

/* The slot of stacked expert x (start <= x < end), projection k. */
static long *slot_of(const struct moe_groups *g, const struct moe_group *grp, uint64_t x, int k)
{
	return &grp->slots[(x - g->start) * MOE_PROJ_COUNT + (uint64_t)k];
}

/* The group of the layer whose experts' names start with the first
 * x->base_len bytes of name, made on first use. */
static struct moe_group *group_get(struct moe_groups *g, const char *name,
				   const struct moe_expert_name *x)
{
	struct moe_group *grp;
	size_t i, len = x->base_len;

	for (i = g->n; i-- > 0;)
		if (strlen(g->items[i].base) == len && memcmp(g->items[i].base, name, len) == 0)
			return &g->items[i];
	g->items = xrealloc(g->items, (g->n + 1) * sizeof(*g->items));
	grp = &g->items[g->n++];
	memset(grp, 0, sizeof(*grp));
	grp->base = moe_join(name, len, "%s", "");
	grp->layer = x->layer;
	grp->first_expert = grp->packed[PACKED_GATE_UP] = grp->packed[PACKED_DOWN] = -1;
	return grp;
}

/* The slots of a layer whose experts come one by one.  Each such layer
 * needs the three projections of every stacked expert, so layers that the
 * checkpoint's tensors cannot fill are refused before their slots, sized
 * by num_experts, are allocated (every product overflow-checked). */
static int group_slots(struct moe_groups *g, const struct ckpt *c, struct moe_group *grp,
		       const char *name, struct err *e)
{
	uint64_t k, nslots, needed;
	size_t i, slotted = 1;

	for (i = 0; i < g->n; i++)
		slotted += g->items[i].slots != NULL;
	if (!u64_mul(g->end - g->start, MOE_PROJ_COUNT, &nslots) ||
	    !u64_mul(nslots, (uint64_t)slotted, &needed) || needed > c->ntensors) {
		err_set_tensor(e, name);
		return err_set(e, ERR_MISSING_EXPERTS,
			       "%s: %zu MoE layers x %" PRIu64
			       " experts x %d projections (num_experts %" PRIu64
			       ") are more expert weights than the checkpoint's %zu tensors",
			       name, slotted, g->end - g->start, MOE_PROJ_COUNT, g->dims->experts,
			       c->ntensors);
	}
	grp->slots = xmalloc((nslots ? nslots : 1) * sizeof(*grp->slots));
	for (k = 0; k < nslots; k++)
		grp->slots[k] = -1;
	return 0;
}

/* A layer's experts given both one by one and packed. */
static int both_ways(const struct ckpt *c, const struct moe_group *grp, uint32_t i,
		     struct err *e)
{
	const char *name = c->tensors[i].name;
	long other = grp->first_expert >= 0 ? grp->first_expert :
		     grp->packed[PACKED_GATE_UP] >= 0 ? grp->packed[PACKED_GATE_UP] :
							grp->packed[PACKED_DOWN];

	err_set_tensor(e, name);
	return err_set(e, ERR_DUPLICATE_TENSOR,
		       "%s: layer %" PRIu64 "'s experts are also given %s (%s); a layer's experts "
		       "come either one tensor per expert and projection or packed, not both",
		       name, grp->layer, grp->first_expert >= 0 ? "per expert" : "packed",
		       c->tensors[other].name);
}

int moe_groups_collect(struct moe_groups *g, const struct ckpt *c, uint32_t i, struct err *e)
{
	const char *name = c->tensors[i].name;
	struct moe_group *grp;
	struct moe_expert_name x;
	long *slot;

	if (moe_parse_packed(name, &x)) {
		grp = group_get(g, name, &x);
		if (grp->first_expert >= 0)
			return both_ways(c, grp, i, e);
		grp->packed[x.proj == MOE_PROJ_GATE ? PACKED_GATE_UP : PACKED_DOWN] = i;
		return 1;
	}
	if (!moe_parse_expert(name, &x))
		return 0;
	if (x.expert >= g->dims->experts) {
		err_set_tensor(e, name);
		return err_set(e, ERR_EXPERT_OUT_OF_RANGE,
			       "%s: expert %" PRIu64 " is not below num_experts %" PRIu64, name,
			       x.expert, g->dims->experts);
	}
	grp = group_get(g, name, &x);
	if (is_packed(grp))
		return both_ways(c, grp, i, e);
	if (!grp->slots && group_slots(g, c, grp, name, e) < 0)
		return -1;
	if (grp->first_expert < 0)
		grp->first_expert = i;
	/* Only the stacked experts (an expert-parallel rank's share) matter. */
	if (x.expert < g->start || x.expert >= g->end)
		return 1;
	slot = slot_of(g, grp, x.expert, x.proj);
	if (*slot >= 0) {
		err_set_tensor(e, name);
		return err_set(e, ERR_DUPLICATE_TENSOR,
			       "%s: expert %" PRIu64 " %s is given twice (also as %s)", name,
			       x.expert, moe_proj_names[x.proj], c->tensors[*slot].name);
	}
	*slot = i;
	return 1;
}

/* ---- every MoE layer has experts ----------------------------------------- */

/* The length of "[anything.]layers.N" in name (the first such part, N
 * followed by a dot), with *layer = N; 0 when there is none.  Looser than
 * moe_layer_of: a layer under a prefix whose experts ckptconv does not
 * read still counts as the layer. */
static size_t layer_in_name(const char *name, uint64_t *layer)
{
	const char *p = name;

	while ((p = strstr(p, "layers."))) {
		const char *q = p + 7;
		uint64_t v = 0;

		if (p == name || p[-1] == '.') {
			for (; *q >= '0' && *q <= '9' && v < UINT64_MAX / 10 - 9; q++)
				v = v * 10 + (uint64_t)(*q - '0');
			if (q > p + 7 && *q == '.') {
				*layer = v;
				return (size_t)(q - name);
			}
		}
		p++;
	}
	return 0;
}

/* A layer the checkpoint's names mention: its number and a tensor of it. */
struct layer_seen {
	uint64_t layer;
	uint32_t tensor;
};

static int layer_cmp(const void *a, const void *b)
{
	const struct layer_seen *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return x->tensor < y->tensor ? -1 : x->tensor > y->tensor;
}

static bool has_group(const struct moe_groups *g, uint64_t layer)
{
	size_t i;

	for (i = 0; i < g->n; i++)
		if (g->items[i].layer == layer)
			return true;
	return false;
}

/* Whether name is under its layer's MLP (experts: under .mlp.experts.). */
static bool in_mlp(const char *name, bool experts)
{
	uint64_t unused;
	const char *rest = name + layer_in_name(name, &unused);

	return strncmp(rest, experts ? ".mlp.experts." : ".mlp.", experts ? 13 : 5) == 0;
}

/* missing_experts for a layer whose tensors (c's, from `seen` on, all of
 * one layer) include no routed expert: what the layer's MLP holds, the
 * tensors under .mlp.experts. first.  The layer is named as ckptconv reads
 * it when one of its tensors is so named. */
static int layer_without_experts(const struct moe_groups *g, const struct ckpt *c,
				 const struct layer_seen *seen, size_t nseen, struct err *e)
{
	const char *first = c->tensors[seen[0].tensor].name;
	uint64_t layer = seen[0].layer, unused;
	size_t plen = layer_in_name(first, &unused), n, i, found = 0, used = 0;
	char shown[ERR_MSG_MAX / 2] = "", prefix[ERR_TENSOR_MAX];
	int pass;

	for (n = 0; n < nseen && seen[n].layer == layer; n++)
		;
	for (i = 0; i < n; i++)
		if (moe_layer_of(c->tensors[seen[i].tensor].name, &unused)) {
			first = c->tensors[seen[i].tensor].name;
			plen = moe_layer_of(first, &unused);
			break;
		}
	snprintf(prefix, sizeof(prefix), "%.*s", (int)plen, first);
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < n; i++) {
			const char *name = c->tensors[seen[i].tensor].name;

			if (!in_mlp(name, false) || in_mlp(name, true) != (pass == 0))
				continue;
			if (found < MISSING_NAMES_SHOWN && used < sizeof(shown))
				used += (size_t)snprintf(shown + used, sizeof(shown) - used,
							 "%s%s", found ? ", " : "", name);
			found++;
		}
	if (found > MISSING_NAMES_SHOWN && used < sizeof(shown))
		snprintf(shown + used, sizeof(shown) - used, " and %zu more",
			 found - MISSING_NAMES_SHOWN);
	err_set_tensor(e, prefix);
	return err_set(e, ERR_MISSING_EXPERTS,
		       "%s: a MoE layer (first_k_dense_replace %" PRIu64
		       ") without routed experts, neither %s.mlp.experts.E.{gate,up,down}_proj.weight "
		       "nor %s.mlp.experts.{gate_up_proj,down_proj}; its MLP tensors: %s",
		       prefix, g->dims->first_dense, prefix, prefix, found ? shown : "none");
}

/* missing_experts for MoE layer `layer`, of which c has no tensor at all
 * (named like the layer `like`). */
static int layer_absent(const struct moe_groups *g, const struct ckpt *c, uint64_t layer,
			const struct layer_seen *like, struct err *e)
{
	const char *name = c->tensors[like->tensor].name;
	uint64_t unused;
	size_t plen = layer_in_name(name, &unused), digits = 0;
	char prefix[ERR_TENSOR_MAX];

	while (digits < plen && name[plen - 1 - digits] >= '0' && name[plen - 1 - digits] <= '9')
		digits++;
	snprintf(prefix, sizeof(prefix), "%.*s%" PRIu64, (int)(plen - digits), name, layer);
	err_set_tensor(e, prefix);
	return err_set(e, ERR_MISSING_EXPERTS,
		       "%s: a MoE layer (first_k_dense_replace %" PRIu64
		       ", num_hidden_layers %" PRIu64 ") of which the checkpoint has no tensor",
		       prefix, g->dims->first_dense, g->dims->layers);
}

/* Every layer from first_k_dense_replace to num_hidden_layers - 1 has
 * routed experts, and so has the MTP layer num_hidden_layers when c has
 * it. */
static int check_layers(const struct moe_groups *g, const struct ckpt *c, struct err *e)
{
	const struct moe_dims *d = g->dims;
	struct layer_seen *seen = xmalloc((c->ntensors ? c->ntensors : 1) * sizeof(*seen));
	uint64_t layer, want = d->first_dense;
	size_t nseen = 0, i;
	int rc = 0;

	for (i = 0; i < c->ntensors; i++)
		if (layer_in_name(c->tensors[i].name, &layer) && layer >= d->first_dense &&
		    layer <= d->layers)
			seen[nseen++] = (struct layer_seen){.layer = layer, .tensor = (uint32_t)i};
	qsort(seen, nseen, sizeof(*seen), layer_cmp);
	for (i = 0; i < nseen && rc == 0; i++) {
		if (i > 0 && seen[i].layer == seen[i - 1].layer)
			continue;
		if (seen[i].layer > want && want < d->layers)
			rc = layer_absent(g, c, want, &seen[i], e);
		else if (!has_group(g, seen[i].layer))
			rc = layer_without_experts(g, c, &seen[i], nseen - i, e);
		want = seen[i].layer + 1;
	}
	if (rc == 0 && want < d->layers) {
		if (nseen > 0)
			rc = layer_absent(g, c, want, &seen[0], e);
		else
			rc = err_set(e, ERR_MISSING_EXPERTS,
				     "no tensor of any MoE layer (layers %" PRIu64 " to %" PRIu64
				     " by first_k_dense_replace and num_hidden_layers) is in the "
				     "checkpoint",
				     d->first_dense, d->layers - 1);
	}
	free(seen);
	return rc;
}

/* ---- complete and well formed -------------------------------------------- */

/* A packed layer has both its tensors. */
static int check_packed_complete(const struct moe_group *grp, const struct ckpt *c,
				 struct err *e)
{
	char missing[ERR_TENSOR_MAX];
	int k = grp->packed[PACKED_GATE_UP] < 0 ? PACKED_GATE_UP : PACKED_DOWN;

	if (grp->packed[k] >= 0)
		return 0;
	snprintf(missing, sizeof(missing), "%s%s", grp->base, packed_names[k]);
	err_set_tensor(e, missing);
	return err_set(e, ERR_MISSING_EXPERTS,
		       "%s is missing: the layer's experts are packed (%s) and need both "
		       "gate_up_proj and down_proj",
		       missing, c->tensors[grp->packed[1 - k]].name);
}

/* Every needed expert of every layer has all three projections. */
static int check_complete(const struct moe_groups *g, const struct ckpt *c, struct err *e)
{
	char shown[ERR_MSG_MAX] = "", first[ERR_TENSOR_MAX] = "";
	size_t missing = 0, used = 0, slotted = 0, i;
	uint64_t x;
	int k;

	for (i = 0; i < g->n; i++) {
		const struct moe_group *grp = &g->items[i];

		if (is_packed(grp)) {
			if (check_packed_complete(grp, c, e) < 0)
				return -1;
			continue;
		}
		slotted++;
		for (x = g->start; x < g->end; x++)
			for (k = 0; k < MOE_PROJ_COUNT; k++) {
				if (*slot_of(g, grp, x, k) >= 0)
					continue;
				if (missing < MISSING_NAMES_SHOWN && used < sizeof(shown))
					used += (size_t)snprintf(shown + used, sizeof(shown) - used,
								 "%s%s%" PRIu64 ".%s.weight",
								 missing ? ", " : "", grp->base, x,
								 moe_proj_names[k]);
				if (missing == 0)
					snprintf(first, sizeof(first), "%s%" PRIu64 ".%s.weight",
						 grp->base, x, moe_proj_names[k]);
				missing++;
			}
	}
	if (missing == 0)
		return 0;
	err_set_tensor(e, first);
	if (missing > MISSING_NAMES_SHOWN)
		return err_set(e, ERR_MISSING_EXPERTS,
			       "%zu of %" PRIu64 " expert weights are missing: %s and %zu more",
			       missing, (uint64_t)slotted * (g->end - g->start) * MOE_PROJ_COUNT,
			       shown, missing - MISSING_NAMES_SHOWN);
	return err_set(e, ERR_MISSING_EXPERTS, "%zu of %" PRIu64 " expert weights are missing: %s",
		       missing, (uint64_t)slotted * (g->end - g->start) * MOE_PROJ_COUNT, shown);
}

/* Source tensor t has shape `want` (ndim dimensions, `what` saying where
 * they come from) and a dtype the experts can be stacked in: one dtype
 * for the layer when it is kept, castable to the target otherwise. */
static int check_source(const struct moe_groups *g, const struct ckpt_tensor *t, int ndim,
			const uint64_t *want, const char *what, enum dtype first_dtype,
			struct err *e)
{
	char shape[128], expected[128];
	struct ckpt_tensor as_wanted = {.ndim = ndim};

	if (dtype_copy_only(t->dtype)) {
		err_set_tensor(e, t->name);
		return err_set(e, ERR_QUANTIZED_INPUT,
			       "%s: dtype %s is only ever copied byte for byte, and a routed "
			       "expert's weights are transposed into the layer's grouped tensors",
			       t->name, dtype_name(t->dtype));
	}
	memcpy(as_wanted.shape, want, (size_t)ndim * sizeof(*want));
	if (t->ndim != ndim || memcmp(t->shape, want, (size_t)ndim * sizeof(*want)) != 0) {
		moe_format_shape(t, shape, sizeof(shape));
		moe_format_shape(&as_wanted, expected, sizeof(expected));
		err_set_tensor(e, t->name);
		return err_set(e, ERR_EXPERT_SHAPE_MISMATCH,
			       "%s: shape %s differs from %s, the shape of the layer's experts by "
			       "config.json (%s)",
			       t->name, shape, expected, what);
	}
	if (g->to == DTYPE_INVALID && t->dtype != first_dtype) {
		err_set_tensor(e, t->name);
		return err_set(
			e, ERR_EXPERT_SHAPE_MISMATCH,
			"%s: dtype %s differs from %s of the layer's other experts (kept dtype)",
			t->name, dtype_name(t->dtype), dtype_name(first_dtype));
	}
	if (g->to != DTYPE_INVALID && !kern_can_cast(t->dtype, g->to)) {
		err_set_tensor(e, t->name);
		return err_set(e, ERR_UNSUPPORTED_CAST, "%s: %s cannot be cast to %s", t->name,
			       dtype_name(t->dtype), dtype_name(g->to));
	}
	return 0;
}

/* The tensor whose dtype the layer's grouped tensors keep. */
static const struct ckpt_tensor *first_source(const struct moe_groups *g, const struct ckpt *c,
					      const struct moe_group *grp)
{
	if (is_packed(grp))
		return &c->tensors[grp->packed[PACKED_GATE_UP]];
	return &c->tensors[*slot_of(g, grp, g->start, MOE_PROJ_GATE)];
}

static int check_shapes(const struct ckpt *c, const struct moe_groups *g,
			const struct moe_group *grp, struct err *e)
{
	const struct moe_dims *d = g->dims;
	enum dtype first = first_source(g, c, grp)->dtype;
	char what[160];
	uint64_t x;
	int k;

	if (is_packed(grp)) {
		const uint64_t gate_up[3] = {d->experts, 2 * d->moe_inter, d->hidden};
		const uint64_t down[3] = {d->experts, d->hidden, d->moe_inter};

		snprintf(what, sizeof(what),
			 "num_experts %" PRIu64 ", moe_intermediate_size %" PRIu64
			 ", hidden_size %" PRIu64,
			 d->experts, d->moe_inter, d->hidden);
		if (check_source(g, &c->tensors[grp->packed[PACKED_GATE_UP]], 3, gate_up, what,
				 first, e) < 0 ||
		    check_source(g, &c->tensors[grp->packed[PACKED_DOWN]], 3, down, what, first,
				 e) < 0)
			return -1;
		return 0;
	}
	snprintf(what, sizeof(what), "moe_intermediate_size %" PRIu64 ", hidden_size %" PRIu64,
		 d->moe_inter, d->hidden);
	for (x = g->start; x < g->end; x++)
		for (k = 0; k < MOE_PROJ_COUNT; k++) {
			const uint64_t shape[2] = {k == MOE_PROJ_DOWN ? d->hidden : d->moe_inter,
						   k == MOE_PROJ_DOWN ? d->moe_inter : d->hidden};

			if (check_source(g, &c->tensors[*slot_of(g, grp, x, k)], 2, shape, what,
					 first, e) < 0)
				return -1;
		}
	return 0;
}

/* ---- stacking ------------------------------------------------------------- */

/* The [rows, cols] source tensor of expert x's projection k, read whole:
 * transposed into cols destination rows. */
static struct plan_block expert_block(const struct ckpt *c, const struct moe_groups *g,
				      const struct moe_group *grp, uint64_t x, enum moe_proj k)
{
	const struct ckpt_tensor *t = &c->tensors[*slot_of(g, grp, x, k)];

	return (struct plan_block){.src = (uint32_t)*slot_of(g, grp, x, k),
				   .stride = t->shape[1] * dtype_size(t->dtype),
				   .rows = t->shape[0]};
}

/* Expert x's [rows, cols] matrix of packed tensor k ([E, rows, cols]). */
static struct plan_block packed_block(const struct ckpt *c, const struct moe_group *grp,
				      uint64_t x, enum packed k)
{
	const struct ckpt_tensor *t = &c->tensors[grp->packed[k]];
	uint64_t row_bytes = t->shape[2] * dtype_size(t->dtype);

	return (struct plan_block){.src = (uint32_t)grp->packed[k],
				   .offset = x * t->shape[1] * row_bytes,
				   .stride = row_bytes,
				   .rows = t->shape[1]};
}

/* out[x][h][i] = gate_x[i][h], out[x][h][I + i] = up_x[i][h]: per expert,
 * its [H, 2I] block (packed: the transpose of gate_up_proj[x], whose rows
 * are gate's then up's). */
static int emit_gate_up(const struct moe_groups *g, struct plan *p, const struct ckpt *c,
			const struct moe_group *grp, enum dtype to, struct err *e)
{
	uint64_t n = g->end - g->start, H = g->dims->hidden, I = g->dims->moe_inter;
	uint64_t shape[3] = {n, H, 2 * I}, expert_bytes = H * 2 * I * dtype_size(to), k;
	char *name = moe_join(grp->base, strlen(grp->base), "gate_and_up_projs");
	long t = plan_add_tensor(p, name, to, 3, shape, e);
	int rc = t < 0 ? -1 : 0;

	for (k = 0; k < n && rc == 0; k++) {
		struct plan_block halves[2];
		size_t nblocks = 2;

		if (is_packed(grp)) {
			halves[0] = packed_block(c, grp, g->start + k, PACKED_GATE_UP);
			nblocks = 1;
		} else {
			halves[0] = expert_block(c, g, grp, g->start + k, MOE_PROJ_GATE);
			halves[1] = expert_block(c, g, grp, g->start + k, MOE_PROJ_UP);
		}
		rc = plan_add_transposed(p, t, k * expert_bytes, H, halves, nblocks, e);
	}
	free(name);
	return rc;
}

/* out[x][i][h] = down_x[h][i]: per expert, its [I, H] block. */
static int emit_down(const struct moe_groups *g, struct plan *p, const struct ckpt *c,
		     const struct moe_group *grp, enum dtype to, struct err *e)
{
	uint64_t n = g->end - g->start, H = g->dims->hidden, I = g->dims->moe_inter;
	uint64_t shape[3] = {n, I, H}, expert_bytes = I * H * dtype_size(to), k;
	char *name = moe_join(grp->base, strlen(grp->base), "down_projs");
	long t = plan_add_tensor(p, name, to, 3, shape, e);
	int rc = t < 0 ? -1 : 0;

	for (k = 0; k < n && rc == 0; k++) {
		const struct plan_block down =
			is_packed(grp) ? packed_block(c, grp, g->start + k, PACKED_DOWN) :
					 expert_block(c, g, grp, g->start + k, MOE_PROJ_DOWN);

		rc = plan_add_transposed(p, t, k * expert_bytes, I, &down, 1, e);
	}
	free(name);
	return rc;
}

int moe_groups_emit(const struct moe_groups *g, struct plan *p, const struct ckpt *c, struct err *e)
{
	size_t i;

	if (g->end <= g->start)
		return 0; /* an expert-parallel rank without experts */
	if (check_layers(g, c, e) < 0 || check_complete(g, c, e) < 0)
		return -1;
	for (i = 0; i < g->n; i++) {
		const struct moe_group *grp = &g->items[i];
		enum dtype to = g->to;

		if (check_shapes(c, g, grp, e) < 0)
			return -1;
		if (to == DTYPE_INVALID)
			to = first_source(g, c, grp)->dtype;
		if (emit_gate_up(g, p, c, grp, to, e) < 0 || emit_down(g, p, c, grp, to, e) < 0)
			return -1;
	}
	return 0;
}
