/* SPDX-License-Identifier: MIT */
/*
 * check_exclude: the bounds on exclude patterns.  Realistic patterns pass
 * and keep POSIX ERE's unanchored search; each bound (length,
 * back-references, group depth, expanded size) refuses with
 * invalid_exclude and a message naming it; bracket expressions are read as
 * regcomp reads them, so a repetition can hide neither inside nor after
 * one; and regcomp's memory for the costliest patterns the check lets
 * through stays small.
 */
#include <check.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/exclude.h"
#include "testutil.h"

static void expect_ok(const char *pattern)
{
	struct err e = {0};
	regex_t re;

	ck_assert_msg(exclude_check(pattern, NULL, &e) == 0, "%s: %s", pattern, e.msg);
	ck_assert_msg(exclude_compile(pattern, &re, &e) == 0, "%s: %s", pattern, e.msg);
	regfree(&re);
}

/* Refused by the check with invalid_exclude and a message holding `why`. */
static void expect_refused(const char *pattern, const char *why)
{
	struct err e = {0};
	regex_t re;

	ck_assert_msg(exclude_check(pattern, NULL, &e) == -1, "%s passed the check", pattern);
	ck_assert_str_eq(err_name(e.code), "invalid_exclude");
	ck_assert_msg(strstr(e.msg, why), "%s: '%s' lacks '%s'", pattern, e.msg, why);
	err_clear(&e);
	ck_assert_int_eq(exclude_compile(pattern, &re, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_exclude");
}

static bool matches(const char *pattern, const char *name)
{
	struct err e = {0};
	regex_t re;
	bool m;

	ck_assert_msg(exclude_compile(pattern, &re, &e) == 0, "%s", e.msg);
	m = regexec(&re, name, 0, NULL, 0) == 0;
	regfree(&re);
	return m;
}

START_TEST(test_realistic_patterns)
{
	static const char *const patterns[] = {
		"experts",
		"^lm_head\\.",
		"model\\.layers\\.(1[0-9]|2[0-3])\\.mlp\\.experts\\.[0-9]{1,3}\\.",
		"(gate|up|down)_proj",
		"layers\\.[0-9]+\\.(self_attn|mlp\\.gate)\\.",
		"\\.(bias|weight)$",
		"[[:digit:]]{2,3}",
		"mtp|model\\.layers\\.[2-9][0-9]\\.",
		"x{0}",
		"a{,3}b{2,}",
	};
	size_t i;

	for (i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++)
		expect_ok(patterns[i]);
	/* POSIX ERE, unanchored search. */
	ck_assert(matches("experts", "model.layers.3.mlp.experts.7.down_proj.weight"));
	ck_assert(!matches("^experts", "model.layers.3.mlp.experts.7.down_proj.weight"));
	ck_assert(matches("layers\\.[0-9]{2}\\.", "model.layers.12.mlp.w"));
	ck_assert(!matches("layers\\.[0-9]{2}\\.", "model.layers.1.mlp.w"));
	/* At the top level an unmatched ')' is an ordinary character, as in glibc. */
	ck_assert(matches("a)", "xa)y"));
}
END_TEST

START_TEST(test_length_bound)
{
	char *p = malloc(EXCLUDE_LENGTH_MAX + 2);

	memset(p, 'a', EXCLUDE_LENGTH_MAX);
	p[EXCLUDE_LENGTH_MAX] = '\0';
	expect_ok(p);
	p[EXCLUDE_LENGTH_MAX] = 'a';
	p[EXCLUDE_LENGTH_MAX + 1] = '\0';
	expect_refused(p, "1025 bytes long, over the limit of 1024");
	free(p);
}
END_TEST

START_TEST(test_back_references_refused)
{
	expect_refused("(a)\\1", "back-references such as \\1");
	expect_refused("(a|b)x\\9", "\\9");
	expect_refused("^(.*)(.*)(.*)\\3\\2$", "back-references");
	/* An escaped backslash followed by a digit is not one. */
	expect_ok("a\\\\1");
}
END_TEST

START_TEST(test_depth_bound)
{
	char p[2 * (EXCLUDE_DEPTH_MAX + 1) + 2];
	int i, n = 0;

	for (i = 0; i < EXCLUDE_DEPTH_MAX; i++)
		p[n++] = '(';
	p[n++] = 'a';
	for (i = 0; i < EXCLUDE_DEPTH_MAX; i++)
		p[n++] = ')';
	p[n] = '\0';
	expect_ok(p);
	n = 0;
	for (i = 0; i <= EXCLUDE_DEPTH_MAX; i++)
		p[n++] = '(';
	p[n++] = 'a';
	for (i = 0; i <= EXCLUDE_DEPTH_MAX; i++)
		p[n++] = ')';
	p[n] = '\0';
	expect_refused(p, "nested more than 32 deep");
}
END_TEST

START_TEST(test_expansion_bound)
{
	uint64_t n;
	struct err e = {0};

	/* 26 characters that took regcomp to over 1 GiB. */
	expect_refused("((a{1,100}){1,100}){1,100}", "expands to more than 4000");
	expect_refused("((a{0,30}){0,30}){0,30}", "nested repetitions multiply");
	expect_refused("x{4000}", "expands to more than");
	expect_refused("(a?){1000}", "expands to more than");
	/* Repetition operators applied one after another multiply too. */
	expect_refused("a{100}{100}", "expands to more than");
	expect_refused("(ab|cd)+{3000}", "expands to more than");
	/* The count grows with the copies. */
	ck_assert_int_eq(exclude_check("a{10}", &n, &e), 0);
	ck_assert_uint_ge(n, 10);
	ck_assert_int_eq(exclude_check("(a{10}){10}", &n, &e), 0);
	ck_assert_uint_ge(n, 100);
	expect_ok("(a?){500}");
}
END_TEST

START_TEST(test_brackets_read_as_regcomp_reads_them)
{
	/* A ']' first in the list, after '^', inside [. .] or [: :] does not
	 * close it, so what follows is a repetition and is counted. */
	expect_refused("[]a]{4000}", "expands");
	expect_refused("[^]a]{4000}", "expands");
	expect_refused("[[.].]]{4000}", "expands");
	expect_refused("[[:alpha:]]{4000}", "expands");
	expect_refused("[a-]{4000}", "expands");
	/* In a list a backslash is an ordinary character: [\] is complete. */
	expect_refused("[\\]{4000}", "expands");
	/* Operators inside a list are characters, not operators. */
	expect_ok("[{(|*+?]");
	ck_assert(matches("[{(|]", "a{b"));
	expect_ok("[]{4000}]");
	/* Unterminated lists and symbols are refused, as regcomp does. */
	expect_refused("[abc", "no closing ]");
	expect_refused("[[:alpha]", "no closing :]");
	expect_refused("a[]", "no closing ]");
}
END_TEST

START_TEST(test_intervals)
{
	expect_refused("a{2,1}", "minimum above its maximum");
	expect_refused("a{}", "is empty");
	expect_refused("a{1x}", "is not {m}, {m,}, {,n} or {m,n}");
	expect_refused("a{3", "no closing }");
	expect_refused("a{40000}", "over 32767");
	expect_ok("a{0,1}");
	expect_ok("a{,}");
}
END_TEST

/* Resident memory of the process, in KiB. */
static long rss_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = atol(line + 6);
	fclose(f);
	ck_assert_int_gt(kib, 0);
	return kib;
}

/* A pattern the check lets through never costs regcomp much: the
 * costliest shapes near the limit (chains of optional copies, whose
 * epsilon closures glibc stores quadratically) stay within 64 MiB of
 * resident memory while compiled (about 10 MiB in a plain build; the
 * refused ones above reach 1 GiB), and match a name at once. */
START_TEST(test_admitted_patterns_compile_small)
{
	static const char *const patterns[] = {
		"(a?){570}",	"(a?|b?){300}",		  "((a?){20}){25}",
		"(.*){570}",	"(a?b?c?d?e?f?g?h?){80}", "(a*b*c*){200}",
		"([^a]?){500}", "((a|b)?(c|d)?){150}",	  "(a?){400}(b?){150}",
	};
	size_t i;

	for (i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
		struct err e = {0};
		long before = rss_kib(), grown;
		regex_t re;

		ck_assert_msg(exclude_compile(patterns[i], &re, &e) == 0, "%s: %s", patterns[i],
			      e.msg);
		grown = rss_kib() - before;
		ck_assert_msg(grown < 64 * 1024, "%s: regcomp grew the RSS by %ld KiB", patterns[i],
			      grown);
		ck_assert_int_eq(regexec(&re, "model.layers.0.mlp.experts.0.down_proj.weight", 0,
					 NULL, 0),
				 0);
		regfree(&re);
	}
}
END_TEST

static Suite *exclude_suite(void)
{
	Suite *s = suite_create("exclude");
	TCase *tc = tcase_create("bounds");

	tcase_add_test(tc, test_realistic_patterns);
	tcase_add_test(tc, test_length_bound);
	tcase_add_test(tc, test_back_references_refused);
	tcase_add_test(tc, test_depth_bound);
	tcase_add_test(tc, test_expansion_bound);
	tcase_add_test(tc, test_brackets_read_as_regcomp_reads_them);
	tcase_add_test(tc, test_intervals);
	tcase_add_test(tc, test_admitted_patterns_compile_small);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(exclude_suite());
}
