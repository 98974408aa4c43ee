/* SPDX-License-Identifier: MIT */
/*
 * check_sigv4: AWS Signature Version 4 as the S3 client sends it.  The
 * signer is checked against the worked example of AWS's documentation, its
 * encoding and query canonicalisation on their own, and then every kind of
 * request the client makes (ListObjectsV2 with prefix, delimiter and
 * continuation token, CreateMultipartUpload, UploadPart,
 * CompleteMultipartUpload, AbortMultipartUpload, a ranged GET of a key with
 * spaces and UTF-8, PutObject, HEAD, DELETE; path-style over http and
 * virtual-hosted over https with a session token) is signed by the client
 * and, independently, by botocore (tests/sigv4_reference.py run by Debian's
 * /usr/bin/python3) at the same time stamp: URL and Authorization header
 * must be identical.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "ckptconv/sigv4.h"
#include "testutil.h"

#define PYTHON "/usr/bin/python3"
#define ACCESS_KEY "AKIDEXAMPLE0123"
#define SECRET_KEY "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SESSION_TOKEN "IQoJb3JpZ2luX2VjEXAMPLE//token+with/odd=chars"
#define WHEN ((time_t)1717171717) /* 2024-05-31T16:08:37Z */

START_TEST(test_aws_documentation_example)
{
	/* "GET Object" example of the S3 SigV4 documentation
	 * (sig-v4-header-based-auth). */
	struct sigv4_credentials c = {"AKIAIOSFODNN7EXAMPLE",
				      "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL};
	struct sigv4_header range = {"range", "bytes=0-9"};
	struct sigv4_request r = {
		.method = "GET",
		.host = "examplebucket.s3.amazonaws.com",
		.canonical_uri = "/test.txt",
		.canonical_query = "",
		.headers = &range,
		.nheaders = 1,
		.payload_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		.region = "us-east-1",
		.service = "s3",
		.when = 1369353600, /* 2013-05-24T00:00:00Z */
	};
	char *auth = sigv4_sign(&r, &c);

	ck_assert_ptr_nonnull(auth);
	ck_assert_str_eq(
		auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
		      "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	free(auth);
}
END_TEST

/* x-amz-date is always 16 characters, even for a time the format cannot
 * spell (a ServerTime of year 99999 once overran the buffer). */
START_TEST(test_amz_date)
{
	char out[SIGV4_AMZ_DATE_SIZE + 8];

	memset(out, 'x', sizeof(out));
	sigv4_amz_date((time_t)1369353600, out);
	ck_assert_str_eq(out, "20130524T000000Z");
	memset(out, 'x', sizeof(out));
	sigv4_amz_date((time_t)253402300799, out);
	ck_assert_str_eq(out, "99991231T235959Z");
	memset(out, 'x', sizeof(out));
	sigv4_amz_date((time_t)3093527980800, out); /* year 99999 */
	ck_assert_str_eq(out, "19700101T000000Z");
	memset(out, 'x', sizeof(out));
	sigv4_amz_date((time_t)-62198755200, out); /* year -1 */
	ck_assert_str_eq(out, "19700101T000000Z");
}
END_TEST

START_TEST(test_uri_encode)
{
	char *s;

	s = sigv4_uri_encode("a b/c+d=e&f~g_h-i.j", true);
	ck_assert_str_eq(s, "a%20b/c%2Bd%3De%26f~g_h-i.j");
	free(s);
	s = sigv4_uri_encode("a b/c", false);
	ck_assert_str_eq(s, "a%20b%2Fc");
	free(s);
	s = sigv4_uri_encode("\xc3\xbc\xe2\x82\xac", true); /* ü€ */
	ck_assert_str_eq(s, "%C3%BC%E2%82%AC");
	free(s);
	s = sigv4_uri_encode("", true);
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

START_TEST(test_canonical_query)
{
	struct sigv4_param p[] = {
		{"prefix", "a b/"}, {"list-type", "2"},
		{"uploads", NULL},  {"continuation-token", "x+y=="},
		{"B", "2"},	    {"B", "1"},
	};
	char *q = sigv4_canonical_query(p, 6);

	/* Sorted by encoded name (upper case first), then by value. */
	ck_assert_str_eq(q, "B=1&B=2&continuation-token=x%2By%3D%3D&list-type=2&prefix=a%20b%2F&"
			    "uploads=");
	free(q);
	q = sigv4_canonical_query(NULL, 0);
	ck_assert_str_eq(q, "");
	free(q);
}
END_TEST

START_TEST(test_session_token_and_trim)
{
	struct sigv4_credentials c = {"AKID", "SECRET", "TOKEN"};
	struct sigv4_header h = {"x-amz-meta-note", "  two   spaces  "};
	struct sigv4_request r = {
		.method = "PUT",
		.host = "h",
		.canonical_uri = "/b/k",
		.canonical_query = "",
		.headers = &h,
		.nheaders = 1,
		.payload_hash = SIGV4_UNSIGNED_PAYLOAD,
		.region = "eu-west-1",
		.service = "s3",
		.when = WHEN,
	};
	char *auth = sigv4_sign(&r, &c);

	ck_assert_ptr_nonnull(strstr(auth, "Credential=AKID/20240531/eu-west-1/s3/aws4_request"));
	ck_assert_ptr_nonnull(
		strstr(auth, "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-note;"
			     "x-amz-security-token, "));
	ck_assert_ptr_null(strstr(auth, "SECRET"));
	ck_assert_ptr_null(strstr(auth, "TOKEN"));
	free(auth);
}
END_TEST

/* ---- the client's requests against botocore ---- */

struct ref_case {
	const char *name;
	const char *method;
	const char *key; /* NULL: bucket-level */
	struct sigv4_param params[5];
	size_t nparams;
	const char *range;
	const char *body;
};

static const struct ref_case path_cases[] = {
	{"list_first_page",
	 "GET",
	 NULL,
	 {{"list-type", "2"},
	  {"prefix", "models/ling mini/"},
	  {"delimiter", "/"},
	  {"max-keys", "2"}},
	 4,
	 NULL,
	 NULL},
	{"list_next_page",
	 "GET",
	 NULL,
	 {{"list-type", "2"},
	  {"prefix", "models/ling mini/"},
	  {"delimiter", "/"},
	  {"continuation-token", "1/ZXhh+bXBsZQ==~x"}},
	 4,
	 NULL,
	 NULL},
	{"create_multipart",
	 "POST",
	 "out/model-00001-of-00002.safetensors",
	 {{"uploads", ""}},
	 1,
	 NULL,
	 ""},
	{"upload_part",
	 "PUT",
	 "out/model-00001-of-00002.safetensors",
	 {{"partNumber", "7"}, {"uploadId", "2~iCw_lDY8VoNPGq7Ac/aR+Hw=="}},
	 2,
	 NULL,
	 "the bytes of part seven\n"},
	{"complete_multipart",
	 "POST",
	 "out/model-00001-of-00002.safetensors",
	 {{"uploadId", "2~iCw_lDY8VoNPGq7Ac/aR+Hw=="}},
	 1,
	 NULL,
	 "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part>"
	 "<PartNumber>1</PartNumber><ETag>&quot;3858f62230ac3c915f300c664312c11f&quot;</ETag>"
	 "</Part></CompleteMultipartUpload>"},
	{"abort_multipart",
	 "DELETE",
	 "out/model-00001-of-00002.safetensors",
	 {{"uploadId", "2~iCw_lDY8VoNPGq7Ac/aR+Hw=="}},
	 1,
	 NULL,
	 NULL},
	{"get_range_spaces_utf8",
	 "GET",
	 "in/Ling mini \xc3\xbc\xe2\x82\xac/shard 1+2=3&x.safetensors",
	 {{0}},
	 0,
	 "bytes=8-1048583",
	 NULL},
	{"put_object",
	 "PUT",
	 "out/config.json",
	 {{0}},
	 0,
	 NULL,
	 "{\"model_type\": \"bailing_moe\"}\n"},
	{"head_object", "HEAD", "in/config.json", {{0}}, 0, NULL, NULL},
	{"delete_object", "DELETE", "out/model.safetensors.index.json", {{0}}, 0, NULL, NULL},
};

static const struct ref_case virtual_cases[] = {
	{"tls_put_unsigned_payload",
	 "PUT",
	 "ckpt/x y/model.safetensors",
	 {{0}},
	 0,
	 NULL,
	 "payload not hashed over TLS"},
	{"tls_list",
	 "GET",
	 NULL,
	 {{"list-type", "2"}, {"prefix", "ckpt/"}, {"delimiter", "/"}},
	 3,
	 NULL,
	 NULL},
	{"tls_get_range", "GET", "ckpt/model.safetensors", {{0}}, 0, "bytes=0-7", NULL},
};

static char *hex_of(const char *s)
{
	size_t n = strlen(s), i;
	char *out = malloc(2 * n + 1);

	for (i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", (unsigned char)s[i]);
	out[2 * n] = '\0';
	return out;
}

/* Signs each case with a client made under the current settings; appends
 * the case to `cases` and our result to `ours`. */
static void sign_cases(const struct ref_case *rc, size_t n, const struct s3_settings *settings,
		       const char *endpoint, const char *style, const char *region,
		       const char *bucket, const char *token, json_t *cases, json_t *ours)
{
	struct s3_client *c = NULL;
	struct err e = {0};
	size_t i, j;

	ck_assert_msg(s3_client_new(settings, NULL, &c, &e) == 0, "%s", e.msg);
	for (i = 0; i < n; i++) {
		struct s3_signed_request r;
		json_t *params = json_array(), *jc;
		char *hex = hex_of(rc[i].body ? rc[i].body : "");

		ck_assert_msg(s3_sign_request(c, rc[i].method, bucket, rc[i].key, rc[i].params,
					      rc[i].nparams, rc[i].range, rc[i].body,
					      rc[i].body ? strlen(rc[i].body) : 0, WHEN, &r,
					      &e) == 0,
			      "%s", e.msg);
		for (j = 0; j < rc[i].nparams; j++)
			json_array_append_new(params, json_pack("[s,s]", rc[i].params[j].name,
								rc[i].params[j].value));
		jc = json_pack(
			"{s:s, s:s, s:s?, s:s, s:s, s:s, s:s?, s:o, s:s?, s:s, s:s, s:s, s:s?, "
			"s:I}",
			"name", rc[i].name, "method", rc[i].method, "endpoint", endpoint, "style",
			style, "region", region, "bucket", bucket, "key", rc[i].key, "params",
			params, "range", rc[i].range, "body_hex", hex, "access_key", ACCESS_KEY,
			"secret_key", SECRET_KEY, "token", token, "time", (json_int_t)WHEN);
		ck_assert_ptr_nonnull(jc);
		json_array_append_new(cases, jc);
		json_object_set_new(ours, rc[i].name,
				    json_pack("{s:s, s:s, s:s}", "url", r.url, "authorization",
					      r.authorization, "payload_hash", r.payload_hash));
		s3_signed_request_fini(&r);
		free(hex);
	}
	s3_client_free(c);
}

static json_t *run_reference(json_t *cases)
{
	char *dir = test_mkdtemp(), *in = test_path(dir, "cases.json"),
	     *out = test_path(dir, "out.json");
	char *cmd;
	json_error_t je;
	json_t *result;

	ck_assert_int_eq(json_dump_file(cases, in, JSON_INDENT(1)), 0);
	if (asprintf(&cmd, "%s '%s/tests/sigv4_reference.py' '%s' > '%s'", PYTHON, TOP_SRCDIR, in,
		     out) < 0)
		abort();
	ck_assert_msg(system(cmd) == 0, "the botocore reference failed: %s", cmd);
	result = json_load_file(out, 0, &je);
	ck_assert_msg(result != NULL, "reference output: %s", je.text);
	free(cmd);
	free(in);
	free(out);
	test_rmtree(dir);
	free(dir);
	return result;
}

static void set_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

START_TEST(test_against_botocore)
{
	json_t *cases = json_array(), *ours = json_object(), *theirs, *mine, *ref;
	struct s3_settings virtual_hosted = {.addressing_style = "virtual"};
	struct err e = {0};
	const char *name;
	size_t compared = 0;

	set_env("AWS_ACCESS_KEY_ID", ACCESS_KEY);
	set_env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
	set_env("AWS_SESSION_TOKEN", NULL);
	set_env("AWS_REGION", "us-east-1");
	set_env("AWS_ENDPOINT_URL", NULL);
	set_env("CKPTCONV_S3_ADDRESSING_STYLE", NULL);
	/* A custom http endpoint: path-style (auto), payload hashed. */
	set_env("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000");
	sign_cases(path_cases, sizeof(path_cases) / sizeof(path_cases[0]), NULL,
		   "http://127.0.0.1:9000", "path", "us-east-1", "ckpt-bucket", NULL, cases, ours);

	/* AWS itself over TLS, virtual-hosted, with a session token. */
	set_env("AWS_ENDPOINT_URL_S3", NULL);
	set_env("AWS_REGION", "eu-central-1");
	set_env("AWS_SESSION_TOKEN", SESSION_TOKEN);
	ck_assert_msg(s3_settings_check(&virtual_hosted, &e) == 0, "%s", e.msg);
	sign_cases(virtual_cases, sizeof(virtual_cases) / sizeof(virtual_cases[0]), &virtual_hosted,
		   NULL, "virtual", "eu-central-1", "ckpt-bucket", SESSION_TOKEN, cases, ours);
	set_env("AWS_SESSION_TOKEN", NULL);

	theirs = run_reference(cases);
	json_object_foreach(ours, name, mine) {
		ref = json_object_get(theirs, name);
		ck_assert_msg(ref != NULL, "botocore did not sign %s", name);
		ck_assert_msg(json_equal(json_object_get(mine, "url"), json_object_get(ref, "url")),
			      "%s: URL %s, botocore %s", name,
			      json_string_value(json_object_get(mine, "url")),
			      json_string_value(json_object_get(ref, "url")));
		ck_assert_msg(json_equal(json_object_get(mine, "payload_hash"),
					 json_object_get(ref, "payload_hash")),
			      "%s: payload hash %s, botocore %s", name,
			      json_string_value(json_object_get(mine, "payload_hash")),
			      json_string_value(json_object_get(ref, "payload_hash")));
		ck_assert_msg(json_equal(json_object_get(mine, "authorization"),
					 json_object_get(ref, "authorization")),
			      "%s:\n ours     %s\n botocore %s", name,
			      json_string_value(json_object_get(mine, "authorization")),
			      json_string_value(json_object_get(ref, "authorization")));
		compared++;
	}
	ck_assert_uint_eq(compared, sizeof(path_cases) / sizeof(path_cases[0]) +
					    sizeof(virtual_cases) / sizeof(virtual_cases[0]));
	json_decref(cases);
	json_decref(ours);
	json_decref(theirs);
}
END_TEST

/* The botocore comparison must fail when a signature is wrong: a request
 * signed with another secret differs from the reference. */
START_TEST(test_reference_detects_a_wrong_secret)
{
	json_t *cases = json_array(), *ours = json_object(), *theirs, *c0;

	set_env("AWS_ACCESS_KEY_ID", ACCESS_KEY);
	set_env("AWS_SECRET_ACCESS_KEY", "not-the-secret-the-reference-uses");
	set_env("AWS_SESSION_TOKEN", NULL);
	set_env("AWS_REGION", "us-east-1");
	set_env("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000");
	set_env("CKPTCONV_S3_ADDRESSING_STYLE", NULL);
	sign_cases(path_cases, 1, NULL, "http://127.0.0.1:9000", "path", "us-east-1", "ckpt-bucket",
		   NULL, cases, ours);
	theirs = run_reference(cases);
	c0 = json_object_get(ours, path_cases[0].name);
	ck_assert(json_equal(json_object_get(c0, "url"),
			     json_object_get(json_object_get(theirs, path_cases[0].name), "url")));
	ck_assert(!json_equal(json_object_get(c0, "authorization"),
			      json_object_get(json_object_get(theirs, path_cases[0].name),
					      "authorization")));
	json_decref(cases);
	json_decref(ours);
	json_decref(theirs);
}
END_TEST

static Suite *sigv4_suite(void)
{
	Suite *s = suite_create("sigv4");
	TCase *t = tcase_create("signer");

	tcase_add_test(t, test_aws_documentation_example);
	tcase_add_test(t, test_amz_date);
	tcase_add_test(t, test_uri_encode);
	tcase_add_test(t, test_canonical_query);
	tcase_add_test(t, test_session_token_and_trim);
	suite_add_tcase(s, t);
	t = tcase_create("botocore");
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_against_botocore);
	tcase_add_test(t, test_reference_detects_a_wrong_secret);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return test_run_suite(sigv4_suite());
}
