/* SPDX-License-Identifier: MIT */
/*
 * fuzz_manifest: the parser of the plan manifest a partitioned conversion
 * leaves in its destination (ckptconv-plan.json), which finalize and later
 * partitions read back from a directory or bucket others may write to.
 * The input is the file's content, read as partition_manifest_read does
 * (up to its first NUL).  What is accepted must name a source, a partition
 * count and files beside it, compare equal to itself, and give back the
 * conversion options or manifest_mismatch.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/partition.h"
#include "fuzz.h"

#define WHERE "s3://bucket/out"

static void check(const struct partition_manifest *m)
{
	struct convert_options o;
	struct err e = {0};
	size_t i;
	int rc;

	if (!m->source || !*m->source || m->count == 0 || !m->to || !m->dtype)
		fuzz_fail("an accepted manifest lacks its source, count, target or dtype");
	for (i = 0; i < m->nfiles; i++)
		if (!m->files[i].name || !*m->files[i].name || strchr(m->files[i].name, '/') ||
		    strlen(m->files[i].header_sha256) != 64)
			fuzz_fail("file %zu of an accepted manifest is not a file beside it", i);
	rc = partition_manifest_compare(m, m, WHERE, &e);
	fuzz_check_err("partition_manifest_compare", rc, &e);
	if (rc)
		fuzz_fail("a manifest differs from itself: %s", e.msg);
	rc = partition_manifest_options(m, &o, &e);
	fuzz_check_err("partition_manifest_options", rc, &e);
	if (rc && e.code != ERR_MANIFEST_MISMATCH)
		fuzz_fail("partition_manifest_options failed with %s", err_name(e.code));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct partition_manifest *m = NULL;
	struct err e = {0};
	char *text = malloc(size + 1);
	int rc;

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	rc = partition_manifest_parse(text, WHERE, &m, &e);
	free(text);
	fuzz_check_err("partition_manifest_parse", rc, &e);
	if (rc == 0)
		check(m);
	else if (m)
		fuzz_fail("partition_manifest_parse failed but returned a manifest");
	partition_manifest_free(m);
	return 0;
}
