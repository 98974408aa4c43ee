/* SPDX-License-Identifier: MIT */
/*
 * check_paths: resolution of job paths and the allow-root check: `..`,
 * symlinks inside and out of a root, destinations that do not exist yet,
 * dangling links, look-alike prefixes and the filesystem root.
 */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/paths.h"
#include "ckptconv/util.h"
#include "testutil.h"

static char *tmp;     /* resolved temporary directory */
static char *root;    /* tmp/root, the allowed root */
static char *outside; /* tmp/outside */
static struct strvec roots;

static void setup(void)
{
	char *dir = test_mkdtemp();
	char buf[PATH_MAX];

	ck_assert_ptr_nonnull(realpath(dir, buf));
	free(dir);
	tmp = xstrdup(buf);
	root = test_path(tmp, "root");
	outside = test_path(tmp, "outside");
	ck_assert_int_eq(mkdir(root, 0755), 0);
	ck_assert_int_eq(mkdir(outside, 0755), 0);
	memset(&roots, 0, sizeof(roots));
	strvec_push(&roots, root);
}

static void teardown(void)
{
	test_rmtree(tmp);
	strvec_fini(&roots);
	free(root);
	free(outside);
	free(tmp);
}

/* Checks `rel` (joined to tmp) and returns the error code, or NULL when
 * allowed; *resolved (may be NULL) receives the resolved path. */
static const char *check(const char *rel, char **resolved)
{
	static struct err e;
	char *path = test_path(tmp, rel);
	char *r = NULL;
	int rc;

	err_clear(&e);
	rc = paths_check(&roots, path, &r, &e);
	free(path);
	if (resolved)
		*resolved = r;
	else
		free(r);
	return rc == 0 ? NULL : err_name(e.code);
}

START_TEST(existing_path_inside_root)
{
	char *r, *want = test_path(root, "in");

	ck_assert_int_eq(mkdir(want, 0755), 0);
	ck_assert_ptr_null(check("root/in", &r));
	ck_assert_str_eq(r, want);
	free(r);
	free(want);
}
END_TEST

START_TEST(root_itself_allowed)
{
	ck_assert_ptr_null(check("root", NULL));
	ck_assert_ptr_null(check("root/", NULL));
}
END_TEST

START_TEST(missing_tail_resolved_lexically)
{
	char *r, *want = test_path(root, "new/deeper");

	ck_assert_ptr_null(check("root/new/./x/../deeper", &r));
	ck_assert_str_eq(r, want);
	free(r);
	free(want);
}
END_TEST

START_TEST(dotdot_escape_refused)
{
	ck_assert_str_eq(check("root/../outside", NULL), "forbidden_path");
	ck_assert_str_eq(check("root/new/../../outside/x", NULL), "forbidden_path");
	ck_assert_str_eq(check("root/../../etc", NULL), "forbidden_path");
}
END_TEST

START_TEST(symlink_escape_refused)
{
	char *link = test_path(root, "link");

	ck_assert_int_eq(symlink(outside, link), 0);
	ck_assert_str_eq(check("root/link", NULL), "forbidden_path");
	ck_assert_str_eq(check("root/link/not-yet", NULL), "forbidden_path");
	free(link);
}
END_TEST

START_TEST(symlink_inside_root_allowed)
{
	char *target = test_path(root, "real");
	char *link = test_path(root, "alias");
	char *r;

	ck_assert_int_eq(mkdir(target, 0755), 0);
	ck_assert_int_eq(symlink(target, link), 0);
	ck_assert_ptr_null(check("root/alias/out", &r));
	ck_assert_str_eq(r + strlen(target), "/out");
	ck_assert_int_eq(strncmp(r, target, strlen(target)), 0);
	free(r);
	free(target);
	free(link);
}
END_TEST

START_TEST(dangling_symlink_refused)
{
	char *link = test_path(root, "dangling");
	char *gone = test_path(outside, "gone");

	ck_assert_int_eq(symlink(gone, link), 0);
	ck_assert_str_eq(check("root/dangling", NULL), "forbidden_path");
	ck_assert_str_eq(check("root/dangling/x", NULL), "forbidden_path");
	free(link);
	free(gone);
}
END_TEST

START_TEST(lookalike_prefix_refused)
{
	char *lookalike = test_path(tmp, "rootkit");

	ck_assert_int_eq(mkdir(lookalike, 0755), 0);
	ck_assert_str_eq(check("rootkit", NULL), "forbidden_path");
	ck_assert(!paths_inside("/data2", "/data"));
	ck_assert(paths_inside("/data/x", "/data"));
	ck_assert(paths_inside("/data", "/data"));
	ck_assert(paths_inside("/anything", "/"));
	ck_assert(paths_overlap("/a/b", "/a"));
	ck_assert(paths_overlap("/a", "/a/b"));
	ck_assert(!paths_overlap("/a/b", "/a/c"));
	free(lookalike);
}
END_TEST

START_TEST(relative_and_empty_refused)
{
	struct err e = {0};
	char *r = NULL;

	ck_assert_int_eq(paths_check(&roots, "relative/path", &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_field");
	err_clear(&e);
	ck_assert_int_eq(paths_check(&roots, "", &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_field");
	ck_assert_ptr_null(r);
}
END_TEST

START_TEST(no_roots_refuses_everything)
{
	struct strvec none = {0};
	struct err e = {0};
	char *r = NULL;

	ck_assert_int_eq(paths_check(&none, root, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	ck_assert_ptr_null(r);
}
END_TEST

START_TEST(root_must_be_directory)
{
	struct err e = {0};
	char *r = NULL, *file = test_path(tmp, "file");

	test_write_file(file, "x", 1);
	ck_assert_int_eq(paths_root(file, &r, &e), -1);
	ck_assert_str_eq(err_name(e.code), "usage_error");
	err_clear(&e);
	ck_assert_int_eq(paths_root("not/absolute", &r, &e), -1);
	ck_assert_int_eq(paths_root(root, &r, &e), 0);
	ck_assert_str_eq(r, root);
	free(r);
	free(file);
}
END_TEST

static Suite *paths_suite(void)
{
	Suite *s = suite_create("paths");
	TCase *tc = tcase_create("resolve");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, existing_path_inside_root);
	tcase_add_test(tc, root_itself_allowed);
	tcase_add_test(tc, missing_tail_resolved_lexically);
	tcase_add_test(tc, dotdot_escape_refused);
	tcase_add_test(tc, symlink_escape_refused);
	tcase_add_test(tc, symlink_inside_root_allowed);
	tcase_add_test(tc, dangling_symlink_refused);
	tcase_add_test(tc, lookalike_prefix_refused);
	tcase_add_test(tc, relative_and_empty_refused);
	tcase_add_test(tc, no_roots_refuses_everything);
	tcase_add_test(tc, root_must_be_directory);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(paths_suite());
}
