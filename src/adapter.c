/* SPDX-License-Identifier: MIT */
/*
 * adapter: the table of model families and the choice of the one that
 * converts a checkpoint, by config.json's architectures.  A checkpoint no
 * adapter claims is refused naming the architectures it declares, with a
 * precise reason for the families known to be different (Ling 1.x).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"

static const struct adapter *const adapters[] = {
	&bailing_moe_v2_adapter,
};

static const char *const dtype_choice_names[] = {
	[DTYPE_CHOICE_AUTO] = "auto", [DTYPE_CHOICE_KEEP] = "keep", [DTYPE_CHOICE_BF16] = "bf16",
	[DTYPE_CHOICE_F16] = "f16",   [DTYPE_CHOICE_F32] = "f32", [DTYPE_CHOICE_F64] = "f64",
};

int dtype_choice_parse(const char *text)
{
	size_t i;

	for (i = 0; text && i < sizeof(dtype_choice_names) / sizeof(dtype_choice_names[0]); i++)
		if (strcmp(text, dtype_choice_names[i]) == 0)
			return (int)i;
	return -1;
}

const char *dtype_choice_name(enum dtype_choice c)
{
	if ((unsigned)c >= sizeof(dtype_choice_names) / sizeof(dtype_choice_names[0]))
		return "invalid";
	return dtype_choice_names[c];
}

static int refuse_option(const char **field, const char *name)
{
	if (field)
		*field = name;
	return -1;
}

int adapter_options_check(const struct adapter_options *o, const char **field, struct err *e)
{
	if (o->to != LAYOUT_HF && o->to != LAYOUT_NATIVE) {
		err_set(e, ERR_INVALID_OPTION, "the target layout must be native or hf");
		return refuse_option(field, "to");
	}
	if (o->to == LAYOUT_HF && (o->ep_size || o->ep_rank)) {
		err_set(e, ERR_INVALID_OPTION,
			"expert parallelism applies only to conversions to native");
		return refuse_option(field, "expert_parallel");
	}
	if (o->to == LAYOUT_HF && o->dtype != DTYPE_CHOICE_AUTO) {
		err_set(e, ERR_INVALID_OPTION,
			"a dtype (%s) applies only to conversions to native and to consolidations"
			" of a sharded checkpoint (to hf keeps an HF or native checkpoint's dtypes)",
			dtype_choice_name(o->dtype));
		return refuse_option(field, "dtype");
	}
	if (o->ep_rank && !o->ep_size) {
		err_set(e, ERR_INVALID_OPTION,
			"an expert-parallel rank needs an expert-parallel size");
		return refuse_option(field, "expert_parallel.size");
	}
	if (o->ep_size > ADAPTER_EP_SIZE_MAX) {
		err_set(e, ERR_INVALID_OPTION, "the expert-parallel size %" PRIu32 " is above %u",
			o->ep_size, ADAPTER_EP_SIZE_MAX);
		return refuse_option(field, "expert_parallel.size");
	}
	if (o->ep_size && o->ep_rank >= o->ep_size) {
		err_set(e, ERR_INVALID_OPTION,
			"the expert-parallel rank %" PRIu32 " is not below the size %" PRIu32,
			o->ep_rank, o->ep_size);
		return refuse_option(field, "expert_parallel.rank");
	}
	return 0;
}

bool adapter_declares(const struct ckpt *c, const char *architecture)
{
	json_t *list = c->config ? json_object_get(c->config, "architectures") : NULL, *a;
	size_t i;

	json_array_foreach(list, i, a)
		if (json_is_string(a) && strcmp(json_string_value(a), architecture) == 0)
			return true;
	return false;
}

static int refuse(const struct ckpt *c, struct err *e)
{
	json_t *architectures = json_object_get(c->config, "architectures");
	char *found;
	int rc;

	if (!json_is_array(architectures))
		return err_set(e, ERR_UNSUPPORTED_MODEL,
			       "config.json names no architectures; ckptconv converts Ling 2.0 "
			       "(BailingMoeV2ForCausalLM)");
	found = json_dumps(architectures, JSON_COMPACT | JSON_ENCODE_ANY);
	if (adapter_declares(c, "BailingMoeForCausalLM"))
		rc = err_set(
			e, ERR_UNSUPPORTED_MODEL,
			"config.json architectures %s: Ling 1.x uses a different layout and is not supported",
			found ? found : "[]");
	else
		rc = err_set(e, ERR_UNSUPPORTED_MODEL,
			     "config.json architectures %s: not a model family ckptconv converts "
			     "(Ling 2.0, BailingMoeV2ForCausalLM)",
			     found ? found : "[]");
	free(found);
	return rc;
}

const struct adapter *adapter_for(const struct ckpt *c, struct err *e)
{
	size_t i;

	if (!c->config) {
		err_set(e, ERR_MISSING_CONFIG, "the checkpoint has no config.json");
		return NULL;
	}
	for (i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
		if (adapters[i]->matches(c))
			return adapters[i];
	refuse(c, e);
	return NULL;
}
