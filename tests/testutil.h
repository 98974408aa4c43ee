/* SPDX-License-Identifier: MIT */
/*
 * testutil: helpers shared by the Check suites: temporary directories
 * removed at teardown, file writing, the golden directory's path.
 */
#ifndef CKPTCONV_TESTUTIL_H
#define CKPTCONV_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* A fresh directory under $TMPDIR (or /tmp); caller frees the string. */
char *test_mkdtemp(void);
/* rm -rf of dir (no shell). */
void test_rmtree(const char *dir);
void test_write_file(const char *path, const void *data, size_t len);
/* path/name joined; caller frees. */
char *test_path(const char *dir, const char *name);
/* Entries of a directory, hidden ones included (read without a store). */
size_t test_count_entries(const char *dir);
/* Creates base/root and base/outside and confines the local store to
 * base/root (store_local_confine); *root and *outside receive their
 * resolved paths (caller frees).  test_unconfine lifts the confinement and
 * restores the openat2 resolution (store_local_force_walk). */
void test_confine_under(const char *base, char **root, char **outside);
void test_unconfine(void);
/* The golden directory: $GOLDEN_DIR or the compiled-in tests/golden. */
const char *test_golden_dir(void);

/* Asserts that the checksum records (ckptconv-sums*.json texts of
 * want_len and got_len bytes) `want` and `got`, of file `name`, hold the same plan digest and the same files with
 * the same sizes and CRC-32C; the identities as published, each run's own,
 * are not compared. */
void test_assert_same_sums(const char *name, const void *want, size_t want_len, const void *got,
			   size_t got_len);
/* Asserts that two plan manifests (ckptconv-plan.json) are equal but for
 * "boot_id", which only a conversion run on one machine records. */
void test_assert_same_plan_manifest(const char *name, const void *want, size_t want_len,
				    const void *got, size_t got_len);
/* Runs a suite with CK_NORMAL output; returns the process exit code. */
typedef struct Suite Suite;
int test_run_suite(Suite *s);

#endif
