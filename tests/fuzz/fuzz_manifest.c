/* SPDX-License-Identifier: MIT */
/*
 * fuzz_manifest: the parsers of the records a conversion leaves in its
 * destination, which finalize, later partitions, resumed runs and verify
 * --checksums read back from a directory or bucket others may write to:
 * the plan manifest (ckptconv-plan.json) and the checksum record
 * (ckptconv-sums.json).  The input is a file's content, read as
 * partition_manifest_read does (up to its first NUL), and goes to both.
 * An accepted manifest must name a source and files beside it, compare
 * equal to itself, and give back the conversion options or
 * manifest_mismatch; an accepted record must name files beside it, each
 * once, and read back equal from the text it builds.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/partition.h"
#include "fuzz.h"

#define WHERE "s3://bucket/out"

static void check(const struct partition_manifest *m)
{
	struct convert_options o;
	struct err e = {0};
	size_t i;
	int rc;

	/* (A count of 0: a conversion that is not partitioned.) */
	if (!m->source || !*m->source || !m->to || !m->dtype)
		fuzz_fail("an accepted manifest lacks its source, target or dtype");
	for (i = 0; i < m->nfiles; i++)
		if (!m->files[i].name || !*m->files[i].name || strchr(m->files[i].name, '/') ||
		    strlen(m->files[i].header_sha256) != 64)
			fuzz_fail("file %zu of an accepted manifest is not a file beside it", i);
	rc = partition_manifest_compare(m, m, WHERE, false, &e);
	fuzz_check_err("partition_manifest_compare", rc, &e);
	if (rc)
		fuzz_fail("a manifest differs from itself: %s", e.msg);
	rc = partition_manifest_options(m, &o, &e);
	fuzz_check_err("partition_manifest_options", rc, &e);
	if (rc && e.code != ERR_MANIFEST_MISMATCH)
		fuzz_fail("partition_manifest_options failed with %s", err_name(e.code));
}

static void check_sums(const char *text)
{
	struct manifest_sums *s = NULL, *back = NULL;
	struct err e = {0};
	char *built;
	size_t i, k;
	int rc;

	rc = manifest_sums_parse(text, WHERE, &s, &e);
	fuzz_check_err("manifest_sums_parse", rc, &e);
	if (rc) {
		if (s)
			fuzz_fail("manifest_sums_parse failed but returned a record");
		return;
	}
	for (i = 0; i < s->n; i++) {
		if (!*s->files[i].name || strchr(s->files[i].name, '/'))
			fuzz_fail("file %zu of an accepted record is not a file beside it", i);
		for (k = 0; k < i; k++)
			if (strcmp(s->files[i].name, s->files[k].name) == 0)
				fuzz_fail("an accepted record names %s twice", s->files[i].name);
	}
	built = manifest_sums_build(s);
	if (manifest_sums_parse(built, WHERE, &back, &e) || back->n != s->n)
		fuzz_fail("a record does not read back from the text it builds");
	for (i = 0; i < s->n; i++)
		if (strcmp(back->files[i].name, s->files[i].name) ||
		    back->files[i].size != s->files[i].size ||
		    back->files[i].crc32c != s->files[i].crc32c)
			fuzz_fail("file %zu of a record reads back otherwise", i);
	free(built);
	manifest_sums_free(back);
	manifest_sums_free(s);
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
	check_sums(text);
	free(text);
	fuzz_check_err("partition_manifest_parse", rc, &e);
	if (rc == 0)
		check(m);
	else if (m)
		fuzz_fail("partition_manifest_parse failed but returned a manifest");
	partition_manifest_free(m);
	return 0;
}
