/* SPDX-License-Identifier: MIT */
/*
 * check_aws_credentials: the credentials provider and the parsers of the
 * remote sources' answers, without a network: the refresh schedule; ISO
 * 8601 times; STS's XML and the container / instance metadata JSON,
 * right and wrong; the container URL allow list; the regional STS
 * endpoint; a provider over a scripted source under a controlled clock
 * (first fetch, refresh ahead of expiry, old snapshots still valid, a
 * failed refresh kept quiet until expiry, forced expiry, one fetch at a
 * time while other threads keep signing); and the chain's local sources
 * and precedence from the environment (the remote ones are exercised by
 * tests/s3_credentials.sh against stand-ins).
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/aws_fetch.h"
#include "ckptconv/err.h"
#include "ckptconv/util.h"
#include "testutil.h"

static void write_text(const char *path, const char *text)
{
	test_write_file(path, text, strlen(text));
}

/* ---- schedule and parsers ---- */

START_TEST(schedule)
{
	double refresh, usable;

	aws_credentials_schedule(1000, 1000 + 3600, &refresh, &usable);
	ck_assert(refresh == 1000 + 3600 - 300);
	ck_assert(usable == 1000 + 3600 - 10);
	aws_credentials_schedule(1000, 1020, &refresh, &usable); /* half the lifetime */
	ck_assert(refresh == 1010);
	ck_assert(usable == 1018);
	aws_credentials_schedule(1000, 1000 + 400, &refresh, &usable);
	ck_assert(refresh == 1200);
	aws_credentials_schedule(1000, 990, &refresh, &usable); /* already past */
	ck_assert(refresh == 990 && usable == 990);
}
END_TEST

START_TEST(times)
{
	time_t t;

	ck_assert(aws_parse_time("1970-01-01T00:00:00Z", &t) && t == 0);
	ck_assert(aws_parse_time("2025-01-02T03:04:05Z", &t) && t == 1735787045);
	ck_assert(aws_parse_time("2025-01-02T03:04:05.123Z", &t) && t == 1735787045);
	ck_assert(aws_parse_time("2025-01-02T03:04:05+00:00", &t) && t == 1735787045);
	ck_assert(!aws_parse_time("2025-01-02T03:04:05", &t));
	ck_assert(!aws_parse_time("2025-01-02 03:04:05Z", &t));
	ck_assert(!aws_parse_time("2025-13-02T03:04:05Z", &t));
	ck_assert(!aws_parse_time("2025-01-02T03:04:05+02:00", &t));
	ck_assert(!aws_parse_time("2025-01-02T03:04:05.Z", &t));
	ck_assert(!aws_parse_time("2025-01-02T03:04:05Zjunk", &t));
	ck_assert(!aws_parse_time("yesterday", &t));
	ck_assert(!aws_parse_time(NULL, &t));
}
END_TEST

#define STS_OK                                                                                    \
	"<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">" \
	"<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount"     \
	"</SubjectFromWebIdentityToken><Credentials><SessionToken>FwoToken</SessionToken>"        \
	"<SecretAccessKey>wJalrSecret</SecretAccessKey><Expiration>2030-01-01T00:00:00Z"          \
	"</Expiration><AccessKeyId>ASIAEXAMPLE</AccessKeyId></Credentials>"                       \
	"</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"

static void sts_fails(const char *body, long status, const char *fragment)
{
	struct aws_credentials_answer a;
	struct err e = {0};

	ck_assert_int_eq(aws_sts_answer_parse(body, strlen(body), status, "http://sts", &a, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_msg(strstr(e.msg, fragment), "'%s' lacks '%s'", e.msg, fragment);
	ck_assert_msg(strstr(e.msg, "web identity (STS at http://sts)"), "%s", e.msg);
	ck_assert_ptr_null(a.access_key_id);
}

START_TEST(sts_answers)
{
	struct aws_credentials_answer a;
	struct err e = {0};
	const char *body = "\n  " STS_OK;

	ck_assert_int_eq(aws_sts_answer_parse(body, strlen(body), 200, "http://sts", &a, &e), 0);
	ck_assert_str_eq(a.access_key_id, "ASIAEXAMPLE");
	ck_assert_str_eq(a.secret_access_key, "wJalrSecret");
	ck_assert_str_eq(a.session_token, "FwoToken");
	ck_assert_int_eq(a.expiration, 1893456000);
	aws_credentials_answer_fini(&a);
	ck_assert_ptr_null(a.access_key_id);

	sts_fails("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
		  "<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Incorrect token "
		  "audience</Message></Error><RequestId>r</RequestId></ErrorResponse>",
		  400, "answered HTTP 400 InvalidIdentityToken (Incorrect token audience)");
	sts_fails("<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>", 200,
		  "HTTP 200 AccessDenied (no message)");
	/* control characters of a service's text do not reach the error */
	sts_fails("<ErrorResponse><Error><Code>Bad&#10;Code</Code><Message>a&#13;&#10;X-Forged: "
		  "1</Message></Error></ErrorResponse>",
		  400, "answered HTTP 400 Bad?Code (a??X-Forged: 1)");
	sts_fails("<html>Bad Gateway</html>", 502, "answered HTTP 502");
	sts_fails("", 500, "answered HTTP 500");
	sts_fails("<AssumeRoleWithWebIdentityResponse>", 200, "is not an");
	sts_fails("not xml at all", 200, "is not an");
	sts_fails(
		"<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
		"<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey>"
		"<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
		"</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
		200, "SessionToken");
	sts_fails(
		"<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
		"<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><SessionToken>T"
		"</SessionToken><Expiration>soon</Expiration></Credentials>"
		"</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
		200, "Expiration 'soon' is not an ISO 8601 time");
	/* the credentials must sit at their path, not anywhere */
	sts_fails(
		"<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>A</AccessKeyId>"
		"<SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken><Expiration>"
		"2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResponse>",
		200, "is not an");
}
END_TEST

START_TEST(sts_answer_too_deep)
{
	struct aws_credentials_answer a;
	struct err e = {0};
	char body[4096] = "";
	int i;

	for (i = 0; i < 40; i++)
		strcat(body, "<a>");
	for (i = 0; i < 40; i++)
		strcat(body, "</a>");
	ck_assert_int_eq(aws_sts_answer_parse(body, strlen(body), 200, "x", &a, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
}
END_TEST

static void json_fails(const char *body, const char *fragment)
{
	struct aws_credentials_answer a;
	struct err e = {0};

	ck_assert_int_eq(aws_credentials_json_parse(body, strlen(body), "container credentials (u)",
						    &a, &e),
			 -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_msg(strstr(e.msg, fragment), "'%s' lacks '%s'", e.msg, fragment);
	ck_assert_msg(strncmp(e.msg, "container credentials (u): ", 27) == 0, "%s", e.msg);
}

START_TEST(json_answers)
{
	const char *container = "{\"AccessKeyId\": \"ASIAC\", \"SecretAccessKey\": \"sec\", "
				"\"Token\": \"tok\", \"Expiration\": \"2030-01-01T00:00:00Z\", "
				"\"AccountId\": \"123\"}";
	const char *imds =
		"{\"Code\": \"Success\", \"LastUpdated\": \"2029-12-31T18:00:00Z\", "
		"\"Type\": \"AWS-HMAC\", \"AccessKeyId\": \"ASIAI\", \"SecretAccessKey\": "
		"\"s\", \"Token\": \"t\", \"Expiration\": \"2030-01-01T06:00:00Z\"}";
	struct aws_credentials_answer a;
	struct err e = {0};

	ck_assert_int_eq(aws_credentials_json_parse(container, strlen(container), "c", &a, &e), 0);
	ck_assert_str_eq(a.access_key_id, "ASIAC");
	ck_assert_str_eq(a.session_token, "tok");
	ck_assert_int_eq(a.expiration, 1893456000);
	aws_credentials_answer_fini(&a);
	ck_assert_int_eq(aws_credentials_json_parse(imds, strlen(imds), "i", &a, &e), 0);
	ck_assert_str_eq(a.access_key_id, "ASIAI");
	ck_assert_int_eq(a.expiration, 1893456000 + 6 * 3600);
	aws_credentials_answer_fini(&a);

	json_fails("{\"Code\": \"AssumeRoleUnauthorizedAccess\", \"Message\": \"no role\"}",
		   "Code is AssumeRoleUnauthorizedAccess (no role)");
	json_fails("{\"Code\": \"Denied\\r\\n\", \"Message\": \"no\\u001brole\"}",
		   "Code is Denied?? (no?role)");
	json_fails("[1, 2]", "not a JSON object");
	json_fails("{\"AccessKeyId\": \"A\"", "not a JSON object");
	json_fails("{\"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\", \"Expiration\": "
		   "\"2030-01-01T00:00:00Z\"}",
		   "lacks a string");
	json_fails("{\"AccessKeyId\": 1, \"SecretAccessKey\": \"S\", \"Token\": \"T\", "
		   "\"Expiration\": \"2030-01-01T00:00:00Z\"}",
		   "lacks a string");
	json_fails("{\"AccessKeyId\": \"A\", \"SecretAccessKey\": \"S\", \"Token\": \"T\", "
		   "\"Expiration\": \"tomorrow\"}",
		   "Expiration 'tomorrow'");
}
END_TEST

/* Keys and tokens go into headers: one byte outside printable ASCII
 * makes them malformed, and the value is never quoted. */
START_TEST(credential_text)
{
	struct err e = {0};

	ck_assert_int_eq(aws_credential_text_check("s", "session token", "Fwo/+=Tok en~", &e), 0);
	ck_assert_int_eq(e.code, ERR_NONE);
	ck_assert_int_eq(
		aws_credential_text_check("environment", "session token", "tok\r\nX-I: 1", &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_str_eq(e.msg, "environment: the session token is malformed: byte 4 is a "
				"control character (0x0d), not printable ASCII");
	err_clear(&e);
	ck_assert_int_eq(aws_credential_text_check("c", "access key id", "AKID\x7f", &e), -1);
	ck_assert_str_eq(e.msg, "c: the access key id is malformed: byte 5 is a control "
				"character (0x7f), not printable ASCII");
	err_clear(&e);
	ck_assert_int_eq(aws_credential_text_check("c", "secret access key", "s\xc3\xa9", &e), -1);
	ck_assert_str_eq(e.msg, "c: the secret access key is malformed: byte 2 is outside ASCII "
				"(0xc3), not printable ASCII");
	err_clear(&e);
	ck_assert_int_eq(aws_credential_text_check("c", "access key id", "", &e), -1);
	ck_assert_str_eq(e.msg, "c: the access key id is malformed: it is empty");
	err_clear(&e);
}
END_TEST

/* A custom source's answer goes through the same check. */
static int crlf_source(void *arg, struct aws_credentials_answer *out, struct err *e)
{
	(void)arg;
	(void)e;
	out->access_key_id = xstrdup("ASIA\nX");
	out->secret_access_key = xstrdup("s");
	out->session_token = xstrdup("t");
	out->expiration = 0;
	return 0;
}

START_TEST(provider_refuses_malformed_answer)
{
	struct aws_credentials *p = aws_credentials_new_custom("crlf", crlf_source, NULL);
	const struct aws_credentials_snapshot *s = NULL;
	struct err e = {0};

	ck_assert_int_eq(aws_credentials_get(p, &s, &e), -1);
	ck_assert_ptr_null(s);
	ck_assert_str_eq(e.msg, "crlf: the access key id is malformed: byte 5 is a control "
				"character (0x0a), not printable ASCII");
	ck_assert_ptr_null(aws_credentials_source(p));
	aws_credentials_unref(p);
}
END_TEST

START_TEST(container_urls)
{
	static const char *const allowed[] = {
		"http://127.0.0.1:8080/creds", "http://127.5.6.7/x",
		"http://169.254.170.2/v2/c",   "http://169.254.170.23/v1",
		"http://[fd00:ec2::23]/v1",    "http://[::1]:9/c",
		"http://localhost:1234/c",     "https://creds.example.com/c",
	};
	static const char *const refused[] = {
		"http://10.0.0.1/creds", "http://169.254.169.254/latest",
		"http://169.254.170.3/", "http://[fd00:ec2::24]/",
		"ftp://127.0.0.1/c",	 "not a url",
	};
	struct err e = {0};
	size_t i;

	for (i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		ck_assert_msg(aws_container_url_allowed(allowed[i], &e), "%s: %s", allowed[i],
			      e.msg);
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		err_clear(&e);
		ck_assert_msg(!aws_container_url_allowed(refused[i], &e), "%s", refused[i]);
		ck_assert_str_eq(err_name(e.code), "s3_credentials");
		ck_assert_msg(strstr(e.msg, "container credentials"), "%s", e.msg);
	}
	err_clear(&e);
	aws_container_url_allowed("http://10.0.0.1/creds", &e);
	ck_assert_ptr_nonnull(strstr(e.msg, "10.0.0.1 over http"));
}
END_TEST

/* ECS's relative URI is a path on 169.254.170.2 and wins over a full URI;
 * a full URI must be allowed; one of them is needed. */
START_TEST(container_url_choice)
{
	struct err e = {0};
	char *u;

	u = aws_container_url("/v2/credentials/4f1b", NULL, &e);
	ck_assert_str_eq(u, "http://169.254.170.2/v2/credentials/4f1b");
	free(u);
	u = aws_container_url("v2/credentials/4f1b", "http://10.0.0.1/creds", &e);
	ck_assert_str_eq(u, "http://169.254.170.2/v2/credentials/4f1b");
	free(u);
	u = aws_container_url("", "http://169.254.170.23/v1/credentials", &e);
	ck_assert_str_eq(u, "http://169.254.170.23/v1/credentials");
	free(u);
	ck_assert(!err_is_set(&e));
	ck_assert_ptr_null(aws_container_url(NULL, "http://10.0.0.1/creds", &e));
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, "10.0.0.1 over http"));
	err_clear(&e);
	ck_assert_ptr_null(aws_container_url(NULL, NULL, &e));
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, "neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor"));
}
END_TEST

START_TEST(sts_endpoints)
{
	char *u;

	u = aws_sts_regional_endpoint("us-west-2");
	ck_assert_str_eq(u, "https://sts.us-west-2.amazonaws.com");
	free(u);
	u = aws_sts_regional_endpoint("cn-north-1");
	ck_assert_str_eq(u, "https://sts.cn-north-1.amazonaws.com.cn");
	free(u);
	u = aws_sts_regional_endpoint(NULL);
	ck_assert_str_eq(u, "https://sts.amazonaws.com");
	free(u);
	ck_assert_ptr_null(aws_sts_regional_endpoint("Mars Base"));
	ck_assert_ptr_null(aws_sts_regional_endpoint("x/../y"));
}
END_TEST

/* ---- the provider over a scripted source ---- */

static _Atomic double fake_now;

static double fake_clock(void)
{
	return atomic_load(&fake_now);
}

struct script {
	atomic_uint fetches;
	atomic_bool fail;
	atomic_bool in_fetch;
	unsigned fetch_ms; /* how long a fetch takes */
	double lifetime;   /* of the credentials answered */
};

static int scripted(void *arg, struct aws_credentials_answer *out, struct err *e)
{
	struct script *s = arg;
	unsigned n = atomic_fetch_add(&s->fetches, 1) + 1;
	int rc = 0;

	atomic_store(&s->in_fetch, true);
	if (s->fetch_ms)
		usleep(s->fetch_ms * 1000);
	if (atomic_load(&s->fail)) {
		rc = err_set(e, ERR_S3_CREDENTIALS, "scripted: refused (fetch %u)", n);
	} else {
		if (asprintf(&out->access_key_id, "KEY%u", n) < 0 ||
		    asprintf(&out->secret_access_key, "SECRET%u", n) < 0 ||
		    asprintf(&out->session_token, "TOKEN%u", n) < 0)
			abort();
		out->expiration = (time_t)(fake_clock() + s->lifetime);
	}
	atomic_store(&s->in_fetch, false);
	return rc;
}

static double (*real_clock)(void);

static void clock_setup(void)
{
	atomic_store(&fake_now, 1.0e9);
	real_clock = aws_credentials_clock;
	aws_credentials_clock = fake_clock;
}

static void clock_teardown(void)
{
	aws_credentials_clock = real_clock;
}

static const struct aws_credentials_snapshot *get_ok(struct aws_credentials *p)
{
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	ck_assert_msg(aws_credentials_get(p, &s, &e) == 0, "%s", e.msg);
	return s;
}

START_TEST(provider_refresh)
{
	struct script sc = {.lifetime = 20};
	struct aws_credentials *p = aws_credentials_new_custom("scripted", scripted, &sc);
	const struct aws_credentials_snapshot *first, *s;

	ck_assert_ptr_null(aws_credentials_source(p));
	first = get_ok(p);
	ck_assert_str_eq(first->access_key_id, "KEY1");
	ck_assert_str_eq(first->secret_access_key, "SECRET1");
	ck_assert_str_eq(first->session_token, "TOKEN1");
	ck_assert_str_eq(first->source, "scripted");
	ck_assert_str_eq(aws_credentials_source(p), "scripted");
	/* before the refresh time: the same credentials, no fetch */
	atomic_store(&fake_now, 1.0e9 + 9.5);
	s = get_ok(p);
	ck_assert_ptr_eq(s, first);
	aws_credentials_release(s);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 1);
	/* at half the lifetime: refreshed; the old snapshot is intact */
	atomic_store(&fake_now, 1.0e9 + 10);
	s = get_ok(p);
	ck_assert_str_eq(s->access_key_id, "KEY2");
	ck_assert_uint_eq(atomic_load(&sc.fetches), 2);
	ck_assert_uint_eq(aws_credentials_refreshes(p), 1);
	ck_assert_str_eq(first->access_key_id, "KEY1");
	ck_assert_str_eq(first->secret_access_key, "SECRET1");
	aws_credentials_release(first);
	aws_credentials_release(s);
	aws_credentials_unref(p);
}
END_TEST

START_TEST(provider_failed_refresh)
{
	struct script sc = {.lifetime = 20};
	struct aws_credentials *p = aws_credentials_new_custom("scripted", scripted, &sc);
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	aws_credentials_release(get_ok(p));
	atomic_store(&sc.fail, true);
	/* refresh due, the source fails: the current credentials still serve */
	atomic_store(&fake_now, 1.0e9 + 11);
	s = get_ok(p);
	ck_assert_str_eq(s->access_key_id, "KEY1");
	aws_credentials_release(s);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 2);
	/* not tried again at once (usable 7 s more: next try 1.75 s later) */
	s = get_ok(p);
	aws_credentials_release(s);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 2);
	atomic_store(&fake_now, 1.0e9 + 13);
	s = get_ok(p);
	ck_assert_str_eq(s->access_key_id, "KEY1");
	aws_credentials_release(s);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 3);
	/* once expired (18 s: 20 s less a tenth), the failure is the answer */
	atomic_store(&fake_now, 1.0e9 + 18);
	ck_assert_int_eq(aws_credentials_get(p, &s, &e), -1);
	ck_assert_ptr_null(s);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, "scripted: refused"));
	/* the source is back: credentials again */
	atomic_store(&sc.fail, false);
	s = get_ok(p);
	ck_assert_str_eq(s->access_key_id, "KEY5");
	aws_credentials_release(s);
	aws_credentials_unref(p);
}
END_TEST

START_TEST(provider_first_failure)
{
	struct script sc = {.lifetime = 20};
	struct aws_credentials *p = aws_credentials_new_custom("scripted", scripted, &sc);
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	atomic_store(&sc.fail, true);
	ck_assert_int_eq(aws_credentials_get(p, &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_null(aws_credentials_source(p));
	/* not cached: the next request tries again */
	atomic_store(&sc.fail, false);
	s = get_ok(p);
	ck_assert_str_eq(s->access_key_id, "KEY2");
	aws_credentials_release(s);
	aws_credentials_unref(p);
}
END_TEST

START_TEST(provider_expire)
{
	struct script sc = {.lifetime = 3600};
	struct aws_credentials *p = aws_credentials_new_custom("scripted", scripted, &sc);
	const struct aws_credentials_snapshot *s1, *s2;

	s1 = get_ok(p);
	aws_credentials_expire(p, s1);
	s2 = get_ok(p);
	ck_assert_str_eq(s2->access_key_id, "KEY2");
	/* a refused old snapshot does not throw away newer credentials */
	aws_credentials_expire(p, s1);
	aws_credentials_release(s1);
	s1 = get_ok(p);
	ck_assert_ptr_eq(s1, s2);
	aws_credentials_release(s1);
	aws_credentials_release(s2);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 2);
	aws_credentials_unref(p);
}
END_TEST

/* Credentials answered already expired are an error, not installed. */
START_TEST(provider_expired_answer)
{
	struct script sc = {.lifetime = -5};
	struct aws_credentials *p = aws_credentials_new_custom("scripted", scripted, &sc);
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	ck_assert_int_eq(aws_credentials_get(p, &s, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "scripted: the credentials answered expired"));
	aws_credentials_unref(p);
}
END_TEST

struct hammer {
	struct aws_credentials *p;
	atomic_bool stop;
	atomic_uint during_fetch; /* gets answered while a fetch was under way */
	atomic_uint inconsistent;
	atomic_uint failures;
	struct script *sc;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	while (!atomic_load(&h->stop)) {
		if (aws_credentials_get(h->p, &s, &e) < 0) {
			atomic_fetch_add(&h->failures, 1);
			continue;
		}
		if (atomic_load(&h->sc->in_fetch))
			atomic_fetch_add(&h->during_fetch, 1);
		/* key, secret and token of one snapshot belong together */
		if (strcmp(s->access_key_id + 3, s->secret_access_key + 6) != 0 ||
		    strcmp(s->access_key_id + 3, s->session_token + 5) != 0)
			atomic_fetch_add(&h->inconsistent, 1);
		aws_credentials_release(s);
	}
	return NULL;
}

/* Eight threads sign all along; refreshes are due every 10 s of the fake
 * clock and each takes 50 ms: one fetch per refresh, and the others keep
 * being served meanwhile. */
START_TEST(provider_threads)
{
	struct script sc = {.lifetime = 20, .fetch_ms = 50};
	struct hammer h = {.sc = &sc};
	pthread_t threads[8];
	unsigned i;

	h.p = aws_credentials_new_custom("scripted", scripted, &sc);
	aws_credentials_release(get_ok(h.p));
	for (i = 0; i < 8; i++)
		ck_assert_int_eq(pthread_create(&threads[i], NULL, hammer_main, &h), 0);
	for (i = 1; i <= 5; i++) {
		atomic_store(&fake_now, 1.0e9 + 10.0 * i);
		usleep(150 * 1000);
	}
	atomic_store(&h.stop, true);
	for (i = 0; i < 8; i++)
		pthread_join(threads[i], NULL);
	ck_assert_uint_eq(atomic_load(&sc.fetches), 6);
	ck_assert_uint_eq(aws_credentials_refreshes(h.p), 5);
	ck_assert_uint_eq(atomic_load(&h.inconsistent), 0);
	ck_assert_uint_eq(atomic_load(&h.failures), 0);
	ck_assert_uint_gt(atomic_load(&h.during_fetch), 0);
	aws_credentials_unref(h.p);
}
END_TEST

/* ---- the chain's local sources ---- */

static const char *const chain_variables[] = {
	"AWS_ACCESS_KEY_ID",
	"AWS_SECRET_ACCESS_KEY",
	"AWS_SESSION_TOKEN",
	"AWS_ROLE_ARN",
	"AWS_WEB_IDENTITY_TOKEN_FILE",
	"AWS_ROLE_SESSION_NAME",
	"AWS_ENDPOINT_URL_STS",
	"AWS_ENDPOINT_URL",
	"AWS_REGION",
	"AWS_DEFAULT_REGION",
	"AWS_PROFILE",
	"AWS_CONFIG_FILE",
	"AWS_SHARED_CREDENTIALS_FILE",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
	"AWS_CONTAINER_CREDENTIALS_FULL_URI",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN",
	"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
	"AWS_EC2_METADATA_SERVICE_ENDPOINT",
	"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
};

static char *home;

static void env_setup(void)
{
	size_t i;

	for (i = 0; i < sizeof(chain_variables) / sizeof(chain_variables[0]); i++)
		unsetenv(chain_variables[i]);
	/* Nothing here may reach 169.254.169.254. */
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	home = test_mkdtemp();
	setenv("HOME", home, 1);
}

static void env_teardown(void)
{
	test_rmtree(home);
	free(home);
}

static void write_home(const char *name, const char *text)
{
	char *dir = test_path(home, ".aws"), *path = test_path(dir, name);

	mkdir(dir, 0700);
	test_write_file(path, text, strlen(text));
	free(dir);
	free(path);
}

/* The environment's provider answers from `source` with `key`. */
static void chain_gives(const char *source, const char *key, const char *token)
{
	struct aws_credentials *p = aws_credentials_new();
	const struct aws_credentials_snapshot *s = get_ok(p);

	ck_assert_str_eq(s->source, source);
	ck_assert_str_eq(s->access_key_id, key);
	if (token)
		ck_assert_str_eq(s->session_token, token);
	else
		ck_assert_ptr_null(s->session_token);
	ck_assert_int_eq(s->expiration, 0);
	aws_credentials_release(s);
	ck_assert_str_eq(aws_credentials_source(p), source);
	aws_credentials_unref(p);
}

/* The environment's provider fails with s3_credentials naming `fragment`. */
static void chain_fails(const char *fragment)
{
	struct aws_credentials *p = aws_credentials_new();
	const struct aws_credentials_snapshot *s;
	struct err e = {0};

	ck_assert_int_eq(aws_credentials_get(p, &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_msg(strstr(e.msg, fragment), "'%s' lacks '%s'", e.msg, fragment);
	ck_assert_ptr_null(strstr(e.msg, "SECRETVALUE"));
	ck_assert_ptr_null(aws_credentials_source(p));
	aws_credentials_unref(p);
}

START_TEST(chain_environment)
{
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE", 1);
	chain_gives(AWS_SOURCE_ENVIRONMENT, "AKIDENV", NULL);
	setenv("AWS_SESSION_TOKEN", "TOKENENV", 1);
	chain_gives(AWS_SOURCE_ENVIRONMENT, "AKIDENV", "TOKENENV");
	/* keys in part are an error, not a source to skip */
	unsetenv("AWS_SECRET_ACCESS_KEY");
	write_home("credentials", "[default]\naws_access_key_id = AKIDFILE\n"
				  "aws_secret_access_key = SECRETVALUE\n");
	chain_fails("environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
	unsetenv("AWS_ACCESS_KEY_ID");
	setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE", 1);
	chain_fails("environment: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
}
END_TEST

START_TEST(chain_shared_files)
{
	write_home("config", "[default]\nregion = eu-west-1\n[profile dev]\naws_access_key_id = "
			     "AKIDCFG\naws_secret_access_key = SECRETVALUE\n[profile sso]\n"
			     "sso_session = corp\n[profile onlyregion]\nregion = us-east-2\n");
	write_home("credentials",
		   "[default]\naws_access_key_id = AKIDDEFAULT\n"
		   "aws_secret_access_key = SECRETVALUE\naws_session_token = TOKDEF\n"
		   "[half]\naws_access_key_id = AKIDHALF\n");
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDDEFAULT", "TOKDEF");
	setenv("AWS_PROFILE", "dev", 1);
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDCFG", NULL);
	/* the environment comes first */
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE", 1);
	chain_gives(AWS_SOURCE_ENVIRONMENT, "AKIDENV", NULL);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_PROFILE", "nosuch", 1);
	chain_fails("shared files: profile 'nosuch' (AWS_PROFILE) is in neither");
	chain_fails("/.aws/credentials");
	setenv("AWS_PROFILE", "half", 1);
	chain_fails("profile 'half' has aws_access_key_id but not aws_secret_access_key");
	setenv("AWS_PROFILE", "sso", 1);
	chain_fails("profile 'sso' gets its credentials through sso_session");
	/* a profile without credentials lets the chain go on */
	setenv("AWS_PROFILE", "onlyregion", 1);
	chain_fails("no credentials: none in the environment");
	chain_fails("AWS_EC2_METADATA_DISABLED");
}
END_TEST

START_TEST(chain_file_variables)
{
	char *cfg = test_path(home, "elsewhere-config"), *cred = test_path(home, "elsewhere-cred");

	write_text(cred, "[ci]\naws_access_key_id = AKIDCI\naws_secret_access_key = x\n");
	write_text(cfg, "[profile ci]\naws_session_token = TOKCI\n");
	setenv("AWS_SHARED_CREDENTIALS_FILE", cred, 1);
	setenv("AWS_CONFIG_FILE", cfg, 1);
	setenv("AWS_PROFILE", "ci", 1);
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDCI", "TOKCI");
	/* "~/" is the home directory */
	setenv("AWS_SHARED_CREDENTIALS_FILE", "~/elsewhere-cred", 1);
	setenv("AWS_CONFIG_FILE", "~/nothing", 1);
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDCI", NULL);
	/* a malformed file is an error naming it */
	write_text(cred, "[ci]\nno equals sign\n");
	chain_fails("elsewhere-cred line 2: a property has no '='");
	free(cfg);
	free(cred);
}
END_TEST

START_TEST(chain_web_identity_local_errors)
{
	char *token = test_path(home, "token");

	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ckptconv", 1);
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token, 1);
	/* the token file is read before anything is sent */
	setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1);
	chain_fails("web identity (STS at http://127.0.0.1:1): cannot read the token file");
	write_text(token, "\n\n");
	chain_fails("is empty or not text");
	unsetenv("AWS_ENDPOINT_URL_STS");
	setenv("AWS_REGION", "Mars Base", 1);
	chain_fails("web identity: region 'Mars Base' (AWS_REGION) is not a region name");
	/* web identity comes before the shared files; only both variables count */
	unsetenv("AWS_ROLE_ARN");
	write_home("credentials", "[default]\naws_access_key_id = AKIDFILE\n"
				  "aws_secret_access_key = s\n");
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDFILE", NULL);
	free(token);
}
END_TEST

/* A FIFO given as any of the files is refused at once by its type (open
 * does not wait for a writer). */
START_TEST(chain_fifo_files)
{
	char *fifo = test_path(home, "fifo");
	char want[600];

	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ckptconv", 1);
	setenv("AWS_WEB_IDENTITY_TOKEN_FILE", fifo, 1);
	setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1", 1);
	snprintf(want, sizeof(want),
		 "web identity (STS at http://127.0.0.1:1): the token file %s is not a regular "
		 "file",
		 fifo);
	chain_fails(want);
	unsetenv("AWS_ROLE_ARN");
	unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
	setenv("AWS_SHARED_CREDENTIALS_FILE", fifo, 1);
	snprintf(want, sizeof(want), "shared files: %s is not a regular file", fifo);
	chain_fails(want);
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	setenv("AWS_CONFIG_FILE", fifo, 1);
	chain_fails(want);
	unsetenv("AWS_CONFIG_FILE");
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds", 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", fifo, 1);
	snprintf(want, sizeof(want),
		 "container credentials (http://127.0.0.1:1/creds): the token file %s is not a "
		 "regular file",
		 fifo);
	chain_fails(want);
	free(fifo);
}
END_TEST

START_TEST(chain_container_refused_host)
{
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://192.0.2.1/creds", 1);
	chain_fails("container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI names host "
		    "192.0.2.1 over http");
	/* the shared files come before the container endpoint */
	write_home("credentials", "[default]\naws_access_key_id = AKIDFILE\n"
				  "aws_secret_access_key = s\n");
	chain_gives(AWS_SOURCE_SHARED_FILES, "AKIDFILE", NULL);
}
END_TEST

START_TEST(chain_nothing)
{
	chain_fails("no credentials: none in the environment (AWS_ACCESS_KEY_ID), no web identity");
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "ftp://127.0.0.1", 1);
	setenv("AWS_EC2_METADATA_DISABLED", "false", 1);
	chain_fails(
		"instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT 'ftp://127.0.0.1' is not");
	chain_fails("no credentials in the environment, a web identity, the shared files or a "
		    "container endpoint, and ");
}
END_TEST

static Suite *aws_credentials_suite(void)
{
	Suite *s = suite_create("aws_credentials");
	TCase *tc = tcase_create("parsers");
	TCase *tp = tcase_create("provider");
	TCase *tch = tcase_create("chain");

	tcase_add_test(tc, schedule);
	tcase_add_test(tc, times);
	tcase_add_test(tc, sts_answers);
	tcase_add_test(tc, sts_answer_too_deep);
	tcase_add_test(tc, json_answers);
	tcase_add_test(tc, credential_text);
	tcase_add_test(tc, container_urls);
	tcase_add_test(tc, container_url_choice);
	tcase_add_test(tc, sts_endpoints);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tp, clock_setup, clock_teardown);
	tcase_add_test(tp, provider_refresh);
	tcase_add_test(tp, provider_failed_refresh);
	tcase_add_test(tp, provider_first_failure);
	tcase_add_test(tp, provider_expire);
	tcase_add_test(tp, provider_expired_answer);
	tcase_add_test(tp, provider_threads);
	tcase_add_test(tp, provider_refuses_malformed_answer);
	suite_add_tcase(s, tp);
	tcase_add_checked_fixture(tch, env_setup, env_teardown);
	tcase_add_test(tch, chain_environment);
	tcase_add_test(tch, chain_shared_files);
	tcase_add_test(tch, chain_file_variables);
	tcase_add_test(tch, chain_web_identity_local_errors);
	tcase_add_test(tch, chain_fifo_files);
	tcase_add_test(tch, chain_container_refused_host);
	tcase_add_test(tch, chain_nothing);
	suite_add_tcase(s, tch);
	return s;
}

int main(void)
{
	return test_run_suite(aws_credentials_suite());
}
