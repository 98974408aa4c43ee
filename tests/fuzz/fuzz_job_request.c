/* SPDX-License-Identifier: MIT */
/*
 * fuzz_job_request: the daemon's job requests.  The input is the body of a
 * POST /v1/jobs; it is read as the API reads it (jansson, duplicate keys
 * refused), validated by job_spec_parse, shown back by job_spec_json, and
 * checked against a policy (job_spec_check: an allowed root in a temporary
 * directory, an allowed s3:// prefix and S3 endpoint, the state
 * directory).  What is accepted must show no options.s3 in its API form
 * and read back from its record form as the same request.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/job.h"
#include "ckptconv/paths.h"
#include "ckptconv/s3_job.h"
#include "ckptconv/util.h"
#include "fuzz.h"

static char top[4096];
static struct strvec roots, allow_s3, allow_endpoints;
static char *state_dir;
static struct job_policy policy;

static void remove_top(void)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/models", top);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/state", top);
	rmdir(path);
	rmdir(top);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	struct err e = {0};
	char path[4200], *root;

	(void)argc;
	(void)argv;
	snprintf(top, sizeof(top), "%s/ckptconv-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(top))
		abort();
	atexit(remove_top);
	snprintf(path, sizeof(path), "%s/models", top);
	if (mkdir(path, 0700) || paths_root(path, &root, &e))
		abort();
	strvec_push(&roots, root);
	free(root);
	snprintf(path, sizeof(path), "%s/state", top);
	if (mkdir(path, 0700) || paths_root(path, &state_dir, &e))
		abort();
	strvec_push(&allow_s3, "s3://bucket/models");
	strvec_push(&allow_endpoints, "http://127.0.0.1:9000");
	policy.allow_roots = &roots;
	policy.allow_s3 = &allow_s3;
	policy.allow_s3_endpoints = &allow_endpoints;
	policy.state_dir = state_dir;
	policy.s3_options_check = s3_job_options_check;
	policy.s3_options_apply = s3_job_options_apply;
	return 0;
}

/* The API form hides options.s3; the record form, which the daemon writes
 * to its state dir and reads back when it restarts, parses again into the
 * same request. */
static void show(const struct job_spec *spec)
{
	json_t *api = job_spec_json(spec, false), *record = job_spec_json(spec, true), *again;
	struct job_error je = {0};
	struct job_spec reread;
	json_error_t jerr;
	char *text;

	if (!api || !record)
		fuzz_fail("job_spec_json returned NULL");
	if (json_object_get(json_object_get(api, "options"), "s3"))
		fuzz_fail("the API form of a job shows options.s3");
	text = json_dumps(record, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text)
		fuzz_fail("the record form of a job cannot be encoded");
	again = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!again)
		fuzz_fail("the record form of a job does not read back: %s", jerr.text);
	if (job_spec_parse(again, &reread, &je) < 0)
		fuzz_fail("the record form of a job is refused: %s %s: %s", err_name(je.err.code), je.field,
			  je.err.msg);
	json_decref(again);
	again = job_spec_json(&reread, true);
	if (!json_equal(again, record))
		fuzz_fail("the record form of a job changes when read back");
	json_decref(again);
	job_spec_fini(&reread);
	free(text);
	json_decref(api);
	json_decref(record);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct job_error je = {0};
	struct job_spec spec;
	json_error_t jerr;
	char *src = NULL, *dst = NULL;
	json_t *body;
	int rc;

	body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return 0;
	rc = job_spec_parse(body, &spec, &je);
	json_decref(body);
	fuzz_check_err("job_spec_parse", rc, &je.err);
	if (rc)
		return 0;
	if (!spec.destination || (!spec.source && !spec.finalize) || !spec.options || !spec.labels)
		fuzz_fail("job_spec_parse accepted a request without a source, destination, "
			  "options or labels");
	show(&spec);
	memset(&je, 0, sizeof(je));
	rc = job_spec_check(&spec, &policy, &src, &dst, &je);
	fuzz_check_err("job_spec_check", rc, &je.err);
	if (rc == 0 && (!dst || (spec.source && !src)))
		fuzz_fail("job_spec_check accepted a request without resolving its locations");
	free(src);
	free(dst);
	job_spec_fini(&spec);
	return 0;
}
