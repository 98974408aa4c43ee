/* SPDX-License-Identifier: MIT */
/*
 * fuzz_aws_answers: the parsers of what the credential sources answer or
 * hold.  The input goes to each of them, as each may receive anything: STS's
 * AssumeRoleWithWebIdentity answer (as a 200 and as a 400), the JSON of the
 * container endpoint and of the instance metadata service, the shared
 * config and credentials files, and (its first line) an ISO 8601 time.
 * Properties: credentials parsed have every field; a time parsed and
 * printed again parses to the same second; a profile set answers look-ups
 * after any input, and a property found under one case of its name is found
 * under the other.
 *
 * libFuzzer options: -max_len=16384 -dict=tests/fuzz/xml.dict
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/aws_fetch.h"
#include "ckptconv/aws_profile.h"
#include "ckptconv/err.h"
#include "fuzz.h"

static void check_answer(const char *what, int rc, const struct err *e,
			 struct aws_credentials_answer *a)
{
	fuzz_check_err(what, rc, e);
	if (rc == 0 && (!a->access_key_id || !*a->access_key_id || !a->secret_access_key ||
			!*a->secret_access_key || !a->session_token || !*a->session_token))
		fuzz_fail("%s accepted credentials with a field missing", what);
	if (rc < 0 && (a->access_key_id || a->secret_access_key || a->session_token))
		fuzz_fail("%s failed but left credentials", what);
	aws_credentials_answer_fini(a);
}

static void answers(const char *data, size_t size)
{
	struct aws_credentials_answer a;
	struct err e = {0};
	int rc;

	rc = aws_sts_answer_parse(data, size, 200, "http://sts", &a, &e);
	check_answer("aws_sts_answer_parse", rc, &e, &a);
	err_clear(&e);
	rc = aws_sts_answer_parse(data, size, 400, "http://sts", &a, &e);
	if (rc == 0)
		fuzz_fail("aws_sts_answer_parse accepted an HTTP 400");
	check_answer("aws_sts_answer_parse (400)", rc, &e, &a);
	err_clear(&e);
	rc = aws_credentials_json_parse(data, size, "container credentials (u)", &a, &e);
	check_answer("aws_credentials_json_parse", rc, &e, &a);
}

static void profiles(const char *data, size_t size)
{
	static const char *const names[] = {"default", "dev", "profile"};
	struct aws_profiles *ps = aws_profiles_new();
	const char *lower, *upper;
	struct err e = {0};
	size_t i;
	int rc;

	rc = aws_profiles_parse(ps, AWS_PROFILE_CONFIG, data, size, "config", &e);
	fuzz_check_err("aws_profiles_parse (config)", rc, &e);
	err_clear(&e);
	rc = aws_profiles_parse(ps, AWS_PROFILE_CREDENTIALS, data, size, "credentials", &e);
	fuzz_check_err("aws_profiles_parse (credentials)", rc, &e);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		lower = aws_profiles_get(ps, names[i], "aws_access_key_id");
		upper = aws_profiles_get(ps, names[i], "AWS_ACCESS_KEY_ID");
		if (lower != upper)
			fuzz_fail("property names are not case-insensitive in profile %s", names[i]);
		if (lower && !aws_profiles_has(ps, names[i]))
			fuzz_fail("profile %s has a property but is not defined", names[i]);
	}
	aws_profiles_free(ps);
}

static void times(const char *data, size_t size)
{
	char line[64], again[32];
	size_t n = strcspn(data, "\n");
	struct tm tm;
	time_t t, u;

	if (n >= sizeof(line) || n > size)
		return;
	memcpy(line, data, n);
	line[n] = '\0';
	if (!aws_parse_time(line, &t))
		return;
	if (!gmtime_r(&t, &tm) || strftime(again, sizeof(again), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		fuzz_fail("time %s parsed to %lld, which does not print", line, (long long)t);
	if (!aws_parse_time(again, &u) || u != t)
		fuzz_fail("time %s parsed to %lld, printed %s, parsed again differently", line,
			  (long long)t, again);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);

	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	answers(text, size);
	profiles(text, size);
	times(text, size);
	free(text);
	return 0;
}
