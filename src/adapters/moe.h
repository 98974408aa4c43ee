/* SPDX-License-Identifier: MIT */
/*
 * moe: what the adapters of mixture-of-experts families share, internal to
 * src/adapters/.  The HF spelling of routed experts
 * ([model.][language_model.]layers.L.mlp.experts.E.{gate,up,down}_proj.weight)
 * and NeMo Automodel's grouped experts (gate_and_up_projs [E, H, 2I],
 * down_projs [E, I, H]), with expert-parallel ranges; grouping and
 * ungrouping them in a plan; the config.json readers; and the adapter
 * entry points (struct adapter's contract) for a family described by a
 * struct moe_family: layout detection, describe, build_plan with the
 * checks every family makes, and the check that the output converts back.
 * A family's own file keeps only what is its own: its config keys, the
 * names that tell its layouts apart, and its other tensors' rules.
 * Everything here is pure over its arguments; any thread may call it.
 */
#ifndef CKPTCONV_ADAPTERS_MOE_H
#define CKPTCONV_ADAPTERS_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/adapter.h"
#include "ckptconv/dtype.h"
#include "ckptconv/plan.h"

struct ckpt;
struct ckpt_tensor;
struct err;

/* A layer's grouped experts (native), after "[anything.]layers.L". */
#define MOE_GATE_UP_SUFFIX ".mlp.experts.gate_and_up_projs"
#define MOE_DOWN_SUFFIX ".mlp.experts.down_projs"
/* transformers' packed experts (HF), after "…layers.L.mlp.experts.":
 * gate_up_proj [E, 2I, H], each expert's gate rows then its up rows (the
 * Concatenate(dim=1) of [gate, up] in transformers' conversion_mapping.py),
 * and down_proj [E, H, I]. */
#define MOE_PACKED_GATE_UP "gate_up_proj"
#define MOE_PACKED_DOWN "down_proj"

/* Dimensions from config.json, under the keys transformers' MoE configs
 * share.  Every tensor shape derived from them fits a safetensors file
 * (the family's read_dims checks it with moe_check_holdable). */
struct moe_dims {
	uint64_t hidden;            /* H, hidden_size */
	uint64_t heads, kv_heads;   /* num_attention_heads, num_key_value_heads */
	uint64_t head_dim;          /* D */
	uint64_t moe_inter;         /* I, moe_intermediate_size */
	uint64_t experts;           /* E, num_experts */
	uint64_t layers;            /* num_hidden_layers */
	uint64_t first_dense;       /* first_k_dense_replace: layers below it
				     * have a dense MLP, the others (the MTP
				     * layer `layers` included) routed experts */
};

/* What a family's adapter tells the shared parts. */
struct moe_family {
	const char *architecture;   /* in config.json's architectures */
	const char *model;          /* the family's name in messages: "Ling 2.0" */
	/* Whether a tensor name occurs only in the HF layout, only in the
	 * native layout. */
	bool (*hf_name)(const char *name);
	bool (*native_name)(const char *name);
	/* d from config.json (present).  Codes: missing_config_key,
	 * config_invalid. */
	int (*read_dims)(const struct ckpt *c, struct moe_dims *d, struct err *e);
	/* The output tensors, pieces and ops of a conversion from the other
	 * layout to native, and to HF (o->to says which). */
	int (*to_native)(const struct ckpt *c, const struct adapter_options *o,
			 const struct moe_dims *d, struct plan *p, struct err *e);
	int (*to_hf)(const struct ckpt *c, const struct adapter_options *o,
		     const struct moe_dims *d, struct plan *p, struct err *e);
};

/* ---- struct adapter's entry points, for family f ---- */

bool moe_matches(const struct moe_family *f, const struct ckpt *c);
int moe_detect(const struct moe_family *f, const struct ckpt *c, enum layout *out,
	       struct err *e);
int moe_describe(const struct moe_family *f, const struct ckpt *c, struct model_info *out,
		 struct err *e);
/* Reads the dimensions, refuses quantized input, a checkpoint already in
 * o->to and options adapter_options_check refuses, then lets f plan.
 * Codes: missing_config, those of f->read_dims, quantized_input,
 * already_in_layout, invalid_option, the model rules. */
int moe_build_plan(const struct moe_family *f, const struct ckpt *c,
		   const struct adapter_options *o, struct plan *p, struct err *e);
int moe_check_round_trip(const struct moe_family *f, const struct ckpt *c,
			 const struct adapter_options *o, const struct plan *p, struct err *e);

/* The experts [start, end) an expert-parallel rank of `size` holds: E / size
 * each, the first E % size ranks one more.  size 0: all of them. */
void moe_ep_range(uint64_t experts, uint32_t size, uint32_t rank, uint64_t *start, uint64_t *end);

/* The dtype of the grouped expert tensors for --dtype `choice`;
 * DTYPE_INVALID for "keep".  Codes: config_invalid (auto, and a model dtype
 * that cannot be cast to), invalid_option. */
int moe_target_dtype(const struct ckpt *c, enum dtype_choice choice, enum dtype *out,
		     struct err *e);

/* ---- config.json ---- */

/* An integer of at least min under key.  Codes: missing_config_key,
 * config_invalid. */
int moe_config_count(const struct ckpt *c, const char *key, int64_t min, uint64_t *out,
		     struct err *e);
/* 0 when a tensor of a x b x c elements (as config.json implies it; `ok`
 * false when computing a already overflowed) is one a safetensors file can
 * hold, else config_invalid with `fmt` describing the tensor and the keys
 * it comes from. */
int moe_check_holdable(bool ok, uint64_t a, uint64_t b, uint64_t c, struct err *e,
		       const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The grouped experts' shapes fit a file (config_invalid otherwise). */
int moe_check_experts_holdable(const struct moe_dims *d, struct err *e);

/* ---- names ---- */

/* When name is P + suffix with P = "[anything.]layers.<number>", the
 * length of P; else 0. */
size_t moe_layer_prefix_len(const char *name, const char *suffix);
enum moe_proj { MOE_PROJ_GATE, MOE_PROJ_UP, MOE_PROJ_DOWN, MOE_PROJ_COUNT };
extern const char *const moe_proj_names[MOE_PROJ_COUNT]; /* "gate_proj", ... */

/* The length of "[model.][language_model.]layers.N" at the start of name
 * (followed by a dot), with *layer = N; 0 when name does not start so. */
size_t moe_layer_of(const char *name, uint64_t *layer);

/* A routed expert's tensor in the HF layout: base_len covers the name up
 * to and including ".mlp.experts.". */
struct moe_expert_name {
	size_t base_len;
	uint64_t layer;
	uint64_t expert;            /* 0 for a packed tensor */
	enum moe_proj proj;         /* packed: MOE_PROJ_GATE for gate_up_proj */
};
/* `[model.][language_model.]layers.L.mlp.experts.e.{gate,up,down}_proj.weight`. */
bool moe_parse_expert(const char *name, struct moe_expert_name *out);
/* `[model.][language_model.]layers.L.mlp.experts.{gate_up_proj,down_proj}`. */
bool moe_parse_packed(const char *name, struct moe_expert_name *out);

/* ".mlp.experts.<number>." somewhere in the name. */
bool moe_has_numbered_expert(const char *name);
/* The first prefix_len bytes of prefix, then fmt; aborts on no memory. */
char *moe_join(const char *prefix, size_t prefix_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "[2, 3]" */
void moe_format_shape(const struct ckpt_tensor *t, char *buf, size_t len);

/* A substring spelled one way in the HF layout and another in native. */
struct moe_rename {
	const char *hf, *native;
};
/* name in layout `to`: the first rule whose other spelling occurs in name
 * has every occurrence replaced; no rule, name unchanged.  Owned by the
 * caller. */
char *moe_rename(const char *name, const struct moe_rename *rules, size_t nrules,
		 enum layout to);

/* ---- plan ---- */

/* Source tensor i copied unchanged as output tensor `name`, whatever its
 * dtype (those narrower than a byte as bytes). */
int moe_pass_through(struct plan *p, const struct ckpt *c, uint32_t i, const char *name,
		     struct err *e);
/* Elements [src_elem, src_elem + nelems) of source tensor i copied into
 * output tensor `out` from element dst_elem on.  For a dtype narrower than
 * a byte the run must start and end on whole bytes, else quantized_input
 * naming the tensor and dtype. */
int moe_copy_elements(struct plan *p, long out, const struct ckpt *c, uint32_t i,
		      uint64_t src_elem, uint64_t dst_elem, uint64_t nelems, struct err *e);

/* HF -> native (moe_groups.c): the routed experts of every MoE layer,
 * collected by expert and projection (or as transformers' two packed
 * tensors), then stacked into the layer's grouped tensors. */
struct moe_group;
struct moe_groups {
	struct moe_group *items;
	size_t n;
	const struct moe_dims *dims;
	uint64_t start, end;        /* the experts stacked: all, or an
				     * expert-parallel rank's share */
	enum dtype to;              /* DTYPE_INVALID: keep the source dtype */
};
/* Empty groups for a conversion with o (checked by moe_build_plan).
 * Codes: config_invalid (--dtype auto and a model dtype that cannot be
 * cast to). */
int moe_groups_init(struct moe_groups *g, const struct ckpt *c, const struct adapter_options *o,
		    const struct moe_dims *d, struct err *e);
/* 1 when source tensor i is a routed expert's (one expert's projection,
 * or a packed gate_up_proj or down_proj), now collected; 0 when it is not
 * one.  Codes: expert_out_of_range, duplicate_tensor (also a layer given
 * both per expert and packed), missing_experts (more MoE layers than the
 * tensors could fill). */
int moe_groups_collect(struct moe_groups *g, const struct ckpt *c, uint32_t i, struct err *e);
/* Adds every layer's gate_and_up_projs and down_projs, after checking
 * that every MoE layer of c (first_k_dense_replace on, the MTP layer
 * included when c has it) has routed experts, and each of them all three
 * projections.  Codes: missing_experts (naming the layer and what it
 * holds instead), expert_shape_mismatch, quantized_input,
 * unsupported_cast.  An expert-parallel rank without experts adds
 * nothing and checks nothing. */
int moe_groups_emit(const struct moe_groups *g, struct plan *p, const struct ckpt *c,
		    struct err *e);
void moe_groups_fini(struct moe_groups *g);

/* 1 when source tensor i is a layer's grouped tensor, now split into its
 * experts' tensors; 0 when it is not one.  Codes: grouped_shape_mismatch. */
int moe_ungroup(struct plan *p, const struct ckpt *c, uint32_t i, const struct moe_dims *d,
		struct err *e);

#endif
