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
/* The golden directory: $GOLDEN_DIR or the compiled-in ../shared/golden. */
const char *test_golden_dir(void);
/* Runs a suite with CK_NORMAL output; returns the process exit code. */
typedef struct Suite Suite;
int test_run_suite(Suite *s);

#endif
