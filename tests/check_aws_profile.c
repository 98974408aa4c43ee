/* SPDX-License-Identifier: MIT */
/*
 * check_aws_profile: the shared config and credentials files read as the
 * AWS SDKs read them: which sections are profiles in which file, comments,
 * continuations and sub-properties, merging and precedence, the lines that
 * make a file malformed (with the line number), and loading from disk
 * (missing files, a file too large, a NUL byte).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/aws_profile.h"
#include "ckptconv/err.h"
#include "testutil.h"

static void write_text(const char *path, const char *text)
{
	test_write_file(path, text, strlen(text));
}

static struct aws_profiles *ps;

static void setup(void)
{
	ps = aws_profiles_new();
}

static void teardown(void)
{
	aws_profiles_free(ps);
	ps = NULL;
}

static void parse_ok(enum aws_profile_file kind, const char *text)
{
	struct err e = {0};

	ck_assert_msg(aws_profiles_parse(ps, kind, text, strlen(text), "f", &e) == 0, "%s: %s",
		      text, e.msg);
	ck_assert_int_eq(e.code, ERR_NONE);
}

static void config(const char *text)
{
	parse_ok(AWS_PROFILE_CONFIG, text);
}

static void credentials(const char *text)
{
	parse_ok(AWS_PROFILE_CREDENTIALS, text);
}

/* The text is malformed; the message names file and line and holds
 * `fragment`. */
static void malformed_n(enum aws_profile_file kind, const char *text, size_t len,
			const char *fragment)
{
	struct err e = {0};

	ck_assert_int_eq(aws_profiles_parse(ps, kind, text, len, "/x/config", &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_msg(strstr(e.msg, fragment), "'%s' lacks '%s'", e.msg, fragment);
}

static void malformed(enum aws_profile_file kind, const char *text, const char *fragment)
{
	malformed_n(kind, text, strlen(text), fragment);
}

static void expect(const char *profile, const char *property, const char *value)
{
	const char *got = aws_profiles_get(ps, profile, property);

	if (!value)
		ck_assert_msg(!got, "%s.%s is '%s', expected none", profile, property, got);
	else
		ck_assert_msg(got && strcmp(got, value) == 0, "%s.%s is '%s', expected '%s'",
			      profile, property, got ? got : "(none)", value);
}

START_TEST(profiles_and_properties)
{
	config("[profile foo]\nname = value\nName2\t=  \tvalue 2 \t\n[default]\nregion=us-west-2");
	ck_assert(aws_profiles_has(ps, "foo"));
	ck_assert(aws_profiles_has(ps, "default"));
	ck_assert(!aws_profiles_has(ps, "bar"));
	expect("foo", "name", "value");
	expect("foo", "NAME2", "value 2"); /* case-insensitive, trimmed */
	expect("default", "region", "us-west-2");
	expect("foo", "region", NULL); /* default values are not inherited */
	expect("nope", "name", NULL);
}
END_TEST

START_TEST(empty_and_blank)
{
	config("");
	ck_assert(!aws_profiles_has(ps, "default"));
	config("\t \n[profile foo]\n\t\n \nname = \n\t \n[profile bar]\n \t");
	ck_assert(aws_profiles_has(ps, "foo"));
	ck_assert(aws_profiles_has(ps, "bar"));
	expect("foo", "name", "");
	config("[profile w]\r\nkey = v\r\n");
	expect("w", "key", "v");
	config("[profile eq]\nname = val=ue");
	expect("eq", "name", "val=ue");
}
END_TEST

START_TEST(section_kinds)
{
	/* In the config file only "profile NAME" and "default" are profiles. */
	config("[foo]\na = 1\n[sso-session s]\nb = 2\n[services x]\nc = 3\n[profilefoo]\nd = 4\n"
	       "[profile\tbar]\ne = 5\n[   profile baz    ]\nf = 6\n[profile \tqux \t]\ng = 7");
	ck_assert(!aws_profiles_has(ps, "foo"));
	ck_assert(!aws_profiles_has(ps, "s"));
	ck_assert(!aws_profiles_has(ps, "profilefoo"));
	expect("bar", "e", "5");
	expect("baz", "f", "6");
	expect("qux", "g", "7");
	/* In the credentials file the name is the whole section. */
	credentials("[cred]\nh = 8\n[profile pre]\ni = 9");
	expect("cred", "h", "8");
	ck_assert(!aws_profiles_has(ps, "pre"));
	ck_assert(!aws_profiles_has(ps, "profile pre"));
}
END_TEST

START_TEST(names)
{
	config("[profile some-thing:long/the_one%only.foo@bar+]\nok = 1\n[profile foo!bar]\nx = 1\n"
	       "[profile in valid]\ny = 2\n[profile next]\nin valid = 3\ngood_name-2 = 4");
	expect("some-thing:long/the_one%only.foo@bar+", "ok", "1");
	ck_assert(!aws_profiles_has(ps, "foo!bar"));
	ck_assert(!aws_profiles_has(ps, "in valid"));
	expect("next", "in valid", NULL);
	expect("next", "good_name-2", "4");
}
END_TEST

START_TEST(comments)
{
	config("# Comment\n; other\n[profile foo] # Comment\nname = value # Comment with # sign\n"
	       "semi = value ; Comment with ; sign\nadjacent = value; kept\npound = v# kept\n"
	       "empty = value ;\n  \t# indented comment\n[profile bar]; next to it\n"
	       "[profile baz]# likewise\n");
	expect("foo", "name", "value");
	expect("foo", "semi", "value");
	expect("foo", "adjacent", "value; kept");
	expect("foo", "pound", "v# kept");
	expect("foo", "empty", "value");
	ck_assert(aws_profiles_has(ps, "bar"));
	ck_assert(aws_profiles_has(ps, "baz"));
}
END_TEST

START_TEST(continuations)
{
	config("[profile foo]\nname = value\n -continued\n \t -and-continued \t \n"
	       "other = x\n  -more # not a comment\n");
	expect("foo", "name", "value\n-continued\n-and-continued");
	expect("foo", "other", "x\n-more # not a comment");
	/* sub-properties, blank lines among them ignored */
	config("[profile sub]\ns3 =\n max_concurrent_requests = 4\n\t \n region = x\n"
	       "after = 1\n");
	expect("sub", "s3", "\nmax_concurrent_requests = 4\nregion = x");
	expect("sub", "after", "1");
	config("[profile subempty]\ns3 =\n name =\n");
	expect("subempty", "s3", "\nname =");
	/* a continuation of a skipped property is skipped with it */
	config("[profile skipped]\nin valid = 1\n more\nok = 2\n");
	expect("skipped", "ok", "2");
}
END_TEST

START_TEST(merging)
{
	config("[profile foo]\nname = value\n[profile foo]\nname2 = value2\nName = last");
	expect("foo", "name", "last");
	expect("foo", "name2", "value2");
	/* the credentials file wins for a property both define */
	config("[profile both]\nkey = from-config\nonly_config = c");
	credentials("[both]\nkey = from-credentials\nonly_credentials = k");
	expect("both", "key", "from-credentials");
	expect("both", "only_config", "c");
	expect("both", "only_credentials", "k");
}
END_TEST

START_TEST(default_prefixed_wins)
{
	config("[profile default]\nname = value\n[default]\nname2 = value2\n[profile default]\n"
	       "name3 = value3");
	expect("default", "name", "value");
	expect("default", "name2", NULL);
	expect("default", "name3", "value3");
	credentials("[default]\nsecret = s");
	expect("default", "secret", "s");
	teardown();
	setup();
	config("[default]\nname2 = value2\n[profile default]\nname = value");
	expect("default", "name2", NULL);
	expect("default", "name", "value");
	teardown();
	setup();
	config("[default]\nregion = eu-west-1");
	expect("default", "region", "eu-west-1");
}
END_TEST

START_TEST(malformed_lines)
{
	malformed(AWS_PROFILE_CONFIG, "name = value", "line 1: a property comes before");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\n[profile bar",
		  "line 2: a profile definition");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\nkey : value",
		  "line 2: a property has no '='");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\n= value", "a property has no name");
	malformed(AWS_PROFILE_CONFIG, " -continued", "before any profile");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\n -continued", "follows no property");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\nname = value\n[profile foo]\n -continued",
		  "line 4: a continuation line follows no property");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\ns3 =\n invalid", "a sub-property has no '='");
	malformed(AWS_PROFILE_CONFIG, "[profile foo]\ns3 =\n = value",
		  "a sub-property has no name");
	malformed(AWS_PROFILE_CONFIG, "[profile foo] junk", "text follows");
	malformed_n(AWS_PROFILE_CREDENTIALS, "[a]\nk = v\n\n\nk2 = x\0y", 20,
		    "/x/config line 5: a NUL");
}
END_TEST

/* What came before a malformed line stays; the file name leads the
 * message. */
START_TEST(malformed_keeps_earlier)
{
	struct err e = {0};
	const char text[] = "[profile ok]\na = 1\n[profile bad\nb = 2";

	ck_assert_int_eq(aws_profiles_parse(ps, AWS_PROFILE_CONFIG, text, strlen(text),
					    "/home/u/.aws/config", &e),
			 -1);
	ck_assert_str_eq(e.msg, "/home/u/.aws/config line 3: a profile definition does not end "
				"with ']'");
	expect("ok", "a", "1");
}
END_TEST

START_TEST(load_files)
{
	char *dir = test_mkdtemp();
	char *cfg = test_path(dir, "config"), *cred = test_path(dir, "credentials");
	char *missing = test_path(dir, "missing"), *big = test_path(dir, "big");
	struct aws_profiles *loaded = NULL;
	struct err e = {0};
	char *text;

	write_text(cfg, "[profile dev]\nregion = eu-west-1\naws_access_key_id = CFG\n");
	write_text(cred, "[dev]\naws_access_key_id = AKIDDEV\naws_secret_access_key = s\n");
	ck_assert_int_eq(aws_profiles_load(cfg, cred, &loaded, &e), 0);
	ck_assert_str_eq(aws_profiles_get(loaded, "dev", "aws_access_key_id"), "AKIDDEV");
	ck_assert_str_eq(aws_profiles_get(loaded, "dev", "region"), "eu-west-1");
	aws_profiles_free(loaded);
	/* missing files add nothing */
	ck_assert_int_eq(aws_profiles_load(missing, NULL, &loaded, &e), 0);
	ck_assert(!aws_profiles_has(loaded, "default"));
	aws_profiles_free(loaded);
	/* a directory, a file too large */
	ck_assert_int_eq(aws_profiles_load(dir, NULL, &loaded, &e), -1);
	ck_assert_ptr_null(loaded);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, dir));
	err_clear(&e);
	text = calloc(1, AWS_PROFILE_FILE_MAX + 2);
	memset(text, '#', AWS_PROFILE_FILE_MAX + 1);
	test_write_file(big, text, AWS_PROFILE_FILE_MAX + 1);
	free(text);
	ck_assert_int_eq(aws_profiles_load(NULL, big, &loaded, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "is larger than 4194304 bytes"));
	err_clear(&e);
	/* a FIFO is refused by its type, without waiting for a writer */
	ck_assert_int_eq(mkfifo(missing, 0600), 0);
	ck_assert_int_eq(aws_profiles_load(NULL, missing, &loaded, &e), -1);
	ck_assert_str_eq(err_name(e.code), "s3_credentials");
	ck_assert_ptr_nonnull(strstr(e.msg, "shared files: "));
	ck_assert_ptr_nonnull(strstr(e.msg, "/missing is not a regular file"));
	err_clear(&e);
	/* a malformed credentials file names itself */
	write_text(cred, "[dev]\nbroken line\n");
	ck_assert_int_eq(aws_profiles_load(cfg, cred, &loaded, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "credentials line 2"));
	test_rmtree(dir);
	free(dir);
	free(cfg);
	free(cred);
	free(missing);
	free(big);
}
END_TEST

/* Files of the largest size read, shaped to make a parser that looks up
 * profiles and properties one by one, or copies a value at each of its
 * lines, take time quadratic in their size: read in time linear in it
 * (each must finish long before the test case's timeout). */
static char *big_text(size_t *len)
{
	char *text = malloc(AWS_PROFILE_FILE_MAX + 64);

	ck_assert_ptr_nonnull(text);
	*len = 0;
	return text;
}

START_TEST(large_many_properties)
{
	size_t len, n = 0;
	char *text = big_text(&len), name[32];
	struct err e = {0};

	len += (size_t)sprintf(text + len, "[a]\n");
	while (len + 16 < AWS_PROFILE_FILE_MAX)
		len += (size_t)sprintf(text + len, "p%zu=1\n", n++);
	ck_assert_uint_gt(n, 400000);
	ck_assert_int_eq(aws_profiles_parse(ps, AWS_PROFILE_CREDENTIALS, text, len, "f", &e), 0);
	expect("a", "p0", "1");
	snprintf(name, sizeof(name), "P%zu", n - 1);
	expect("a", name, "1");
	snprintf(name, sizeof(name), "p%zu", n);
	expect("a", name, NULL);
	free(text);
}
END_TEST

START_TEST(large_many_sections)
{
	size_t len, n = 0;
	char *text = big_text(&len), name[32];
	struct err e = {0};

	while (len + 16 < AWS_PROFILE_FILE_MAX)
		len += (size_t)sprintf(text + len, "[s%zu]\n", n++);
	/* and each again, with a property */
	ck_assert_uint_gt(n, 400000);
	ck_assert_int_eq(aws_profiles_parse(ps, AWS_PROFILE_CREDENTIALS, text, len, "f", &e), 0);
	len = 0;
	len += (size_t)sprintf(text + len, "[s%zu]\nk = last\n[s0]\nk = first\n", n - 1);
	ck_assert_int_eq(aws_profiles_parse(ps, AWS_PROFILE_CREDENTIALS, text, len, "f", &e), 0);
	ck_assert(aws_profiles_has(ps, "s0"));
	snprintf(name, sizeof(name), "s%zu", n - 1);
	expect(name, "k", "last");
	expect("s0", "k", "first");
	snprintf(name, sizeof(name), "s%zu", n);
	ck_assert(!aws_profiles_has(ps, name));
	free(text);
}
END_TEST

START_TEST(large_long_continuation)
{
	size_t len, n = 0;
	char *text = big_text(&len);
	struct err e = {0};
	const char *v;

	len += (size_t)sprintf(text + len, "[profile a]\nv = x\n");
	while (len + 3 < AWS_PROFILE_FILE_MAX) {
		memcpy(text + len, " x\n", 3);
		len += 3;
		n++;
	}
	ck_assert_uint_gt(n, 1000000);
	ck_assert_int_eq(aws_profiles_parse(ps, AWS_PROFILE_CONFIG, text, len, "f", &e), 0);
	v = aws_profiles_get(ps, "a", "v");
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(strlen(v), 1 + 2 * n);
	ck_assert(strncmp(v, "x\nx\nx", 5) == 0 && strcmp(v + 2 * n - 1, "\nx") == 0);
	free(text);
}
END_TEST

static Suite *aws_profile_suite(void)
{
	Suite *s = suite_create("aws_profile");
	TCase *tc = tcase_create("files");
	TCase *tl = tcase_create("large");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, profiles_and_properties);
	tcase_add_test(tc, empty_and_blank);
	tcase_add_test(tc, section_kinds);
	tcase_add_test(tc, names);
	tcase_add_test(tc, comments);
	tcase_add_test(tc, continuations);
	tcase_add_test(tc, merging);
	tcase_add_test(tc, default_prefixed_wins);
	tcase_add_test(tc, malformed_lines);
	tcase_add_test(tc, malformed_keeps_earlier);
	tcase_add_test(tc, load_files);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tl, setup, teardown);
	tcase_set_timeout(tl, 60);
	tcase_add_test(tl, large_many_properties);
	tcase_add_test(tl, large_many_sections);
	tcase_add_test(tl, large_long_continuation);
	suite_add_tcase(s, tl);
	return s;
}

int main(void)
{
	return test_run_suite(aws_profile_suite());
}
