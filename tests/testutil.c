/* SPDX-License-Identifier: MIT */
/*
 * testutil: temporary directories, files and paths for the Check suites,
 * and confinement of the local store to a root for them.
 */

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "testutil.h"

char *test_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char *dir;

	if (!base || !*base)
		base = "/tmp";
	if (asprintf(&dir, "%s/ckptconv-test.XXXXXX", base) < 0)
		abort();
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		abort();
	}
	return dir;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void test_rmtree(const char *dir)
{
	if (dir)
		nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void test_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
		perror(path);
		abort();
	}
}

char *test_path(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		abort();
	return p;
}

const char *test_golden_dir(void)
{
	const char *d = getenv("GOLDEN_DIR");

	return d && *d ? d : GOLDEN_DIR;
}

int test_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}

size_t test_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

void test_confine_under(const char *base, char **root, char **outside)
{
	char resolved[PATH_MAX];
	struct strvec roots = {0};
	struct err e = {0};

	ck_assert_ptr_nonnull(realpath(base, resolved));
	*root = test_path(resolved, "root");
	*outside = test_path(resolved, "outside");
	ck_assert_int_eq(mkdir(*root, 0755), 0);
	ck_assert_int_eq(mkdir(*outside, 0755), 0);
	strvec_push(&roots, *root);
	ck_assert_msg(store_local_confine(&roots, &e) == 0, "%s", e.msg);
	strvec_fini(&roots);
}

void test_unconfine(void)
{
	store_local_confine(NULL, NULL);
	store_local_force_walk = false;
}

/* Two checksum records naming the same files with the same sizes and
 * CRC-32C (the identities as published differ between runs). */
void test_assert_same_sums(const char *name, const void *want, size_t want_len, const void *got,
			   size_t got_len)
{
	char *want_text = xmalloc(want_len + 1), *got_text = xmalloc(got_len + 1);
	struct manifest_sums *a = NULL, *b = NULL;
	struct err e = {0};
	size_t i;

	memcpy(want_text, want, want_len);
	want_text[want_len] = '\0';
	memcpy(got_text, got, got_len);
	got_text[got_len] = '\0';
	ck_assert_msg(manifest_sums_parse(want_text, name, &a, &e) == 0, "%s", e.msg);
	ck_assert_msg(manifest_sums_parse(got_text, name, &b, &e) == 0, "%s", e.msg);
	free(want_text);
	free(got_text);
	ck_assert_str_eq(a->plan_digest, b->plan_digest);
	ck_assert_uint_eq(a->n, b->n);
	for (i = 0; i < a->n; i++) {
		ck_assert_str_eq(a->files[i].name, b->files[i].name);
		ck_assert_uint_eq(a->files[i].size, b->files[i].size);
		ck_assert_uint_eq(a->files[i].crc32c, b->files[i].crc32c);
	}
	manifest_sums_free(a);
	manifest_sums_free(b);
}

void test_assert_same_plan_manifest(const char *name, const void *want, size_t want_len,
				    const void *got, size_t got_len)
{
	json_t *a = json_loadb(want, want_len, 0, NULL), *b = json_loadb(got, got_len, 0, NULL);

	ck_assert_msg(a && b, "%s: not JSON", name);
	json_object_del(a, "boot_id");
	json_object_del(b, "boot_id");
	ck_assert_msg(json_equal(a, b), "%s differs", name);
	json_decref(a);
	json_decref(b);
}
