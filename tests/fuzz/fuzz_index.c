/* SPDX-License-Identifier: MIT */
/*
 * fuzz_index: the parser of model.safetensors.index.json (ckpt_index_parse).
 * The input is the file's content.  What it accepts must be a weight_map of
 * tensor names to file names beside the index.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *map = NULL, *v;
	struct err e = {0};
	const char *key;
	int rc;

	rc = ckpt_index_parse("fuzz/model.safetensors.index.json", (const char *)data, size, &map,
			      &e);
	fuzz_check_err("ckpt_index_parse", rc, &e);
	if (rc == 0) {
		if (!json_is_object(map))
			fuzz_fail("ckpt_index_parse accepted a weight_map that is not an object");
		json_object_foreach(map, key, v)
			if (!json_is_string(v) || strchr(json_string_value(v), '/'))
				fuzz_fail("weight_map entry '%s' is not a file name", key);
	} else if (map) {
		fuzz_fail("ckpt_index_parse failed but returned a weight_map");
	}
	json_decref(map);
	return 0;
}
