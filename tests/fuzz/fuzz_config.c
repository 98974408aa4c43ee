/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config: the parser of config.json (ckpt_config_parse) and what the
 * model adapters read from it.  The input is the file's content.  What
 * parses is put in place of the config of the golden checkpoints
 * ($GOLDEN_DIR/tiny/hf and tiny/native, opened once), and the adapter that
 * claims it describes the model, detects the layout and plans the
 * conversion to the other layout (from HF also with expert parallelism),
 * as a conversion would.
 *
 * libFuzzer options: -max_len=16384 -dict=tests/fuzz/json.dict
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/plan.h"
#include "fuzz.h"

static struct ckpt *golden[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const names[2] = {"tiny/hf", "tiny/native"};
	const char *dir = getenv("GOLDEN_DIR");
	struct err e = {0};
	char path[4096];
	int i;

	(void)argc;
	(void)argv;
	if (!dir) {
		fprintf(stderr, "fuzz_config: set GOLDEN_DIR to tests/golden\n");
		exit(2);
	}
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (ckpt_open(path, CKPT_REQUIRE_CONFIG, &golden[i], &e)) {
			fprintf(stderr, "fuzz_config: %s\n", e.msg);
			exit(2);
		}
	}
	return 0;
}

static void plan(const struct adapter *a, const struct ckpt *c, enum layout from,
		 const struct adapter_options *o)
{
	struct plan_options po = {0};
	struct err e = {0};
	struct plan *p = plan_new(c, from, o->to);
	int rc;

	rc = a->build_plan(c, o, p, &e);
	fuzz_check_err("build_plan", rc, &e);
	if (rc == 0) {
		rc = plan_finish(p, &po, &e);
		fuzz_check_err("plan_finish", rc, &e);
	}
	plan_free(p);
}

/* What a conversion asks of the adapter, with c->config the input's. */
static void adapt(const struct ckpt *c)
{
	struct adapter_options o = {0};
	struct model_info info;
	const struct adapter *a;
	struct err e = {0};
	int rc;

	a = adapter_for(c, &e);
	fuzz_check_err("adapter_for", a ? 0 : -1, &e);
	if (!a)
		return;
	rc = a->describe(c, &info, &e);
	fuzz_check_err("describe", rc, &e);
	if (rc)
		return;
	o.to = info.layout == LAYOUT_HF ? LAYOUT_NATIVE : LAYOUT_HF;
	plan(a, c, info.layout, &o);
	if (o.to == LAYOUT_NATIVE) {
		o.dtype = DTYPE_CHOICE_KEEP;
		o.ep_size = 3;
		o.ep_rank = 2;
		plan(a, c, info.layout, &o);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *config = NULL, *saved;
	struct err e = {0};
	int rc, i;

	rc = ckpt_config_parse("fuzz/config.json", (const char *)data, size, &config, &e);
	fuzz_check_err("ckpt_config_parse", rc, &e);
	if (rc) {
		if (config)
			fuzz_fail("ckpt_config_parse failed but returned a config");
		return 0;
	}
	if (!json_is_object(config))
		fuzz_fail("ckpt_config_parse accepted a config that is not an object");
	for (i = 0; i < 2; i++) {
		saved = golden[i]->config;
		golden[i]->config = config;
		adapt(golden[i]);
		golden[i]->config = saved;
	}
	json_decref(config);
	return 0;
}
