/* SPDX-License-Identifier: MIT */
/*
 * check_store: the local store reads exact ranges and views, keeps outputs
 * invisible until they are committed, leaves nothing after an abort, and
 * prepares a destination strictly: refuses a non-empty one without
 * overwrite, checks free space before removing anything, removes only the
 * previous checkpoint's index and weights, and cleans its own leftovers.
 * Temporary names never look like weights.  A store keeps working on the
 * directory it opened when that is swapped for a symbolic link, and a
 * confined store (both with openat2 and with the O_NOFOLLOW walk) follows
 * links inside its root only.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/output.h"
#include "ckptconv/store.h"
#include "testutil.h"

static char *tmpdir;
static char *dst;
static uint64_t hook_free_bytes;

static int fake_free_bytes(const char *dir, uint64_t *free_bytes)
{
	(void)dir;
	*free_bytes = hook_free_bytes;
	return 0;
}

static void setup(void)
{
	tmpdir = test_mkdtemp();
	dst = test_path(tmpdir, "out");
	store_local_free_bytes_hook = NULL;
}

static void teardown(void)
{
	store_local_free_bytes_hook = NULL;
	test_rmtree(tmpdir);
	free(dst);
	free(tmpdir);
}

static bool exists(const char *dir, const char *name)
{
	char *p = test_path(dir, name);
	struct stat st;
	bool found = lstat(p, &st) == 0;

	free(p);
	return found;
}

static void write_in(const char *dir, const char *name, size_t len)
{
	char *p = test_path(dir, name);
	char *buf = calloc(1, len + 1);

	test_write_file(p, buf, len);
	free(buf);
	free(p);
}

static size_t count_entries(const char *dir)
{
	struct store_entry *entries;
	struct store *s;
	struct err e = {0};
	size_t n;

	ck_assert_int_eq(store_open(dir, &s, &e), 0);
	ck_assert_msg(store_list(s, &entries, &n, &e) == 0, "%s", e.msg);
	store_entries_free(entries, n);
	store_free(s);
	return n;
}

static struct store *open_output(bool overwrite, uint64_t needed, struct err *e, int *rc)
{
	struct store_output_options o = {.overwrite = overwrite, .durable = true, .bytes_needed = needed};
	struct store *s;

	ck_assert_int_eq(store_open(dst, &s, e), 0);
	*rc = output_prepare(s, &o, e);
	return s;
}

START_TEST(test_location_normalised)
{
	struct store *s;
	struct err e = {0};
	char *loc;

	if (asprintf(&loc, "%s///", tmpdir) < 0)
		abort();
	ck_assert_int_eq(store_open(loc, &s, &e), 0);
	ck_assert_str_eq(s->location, tmpdir);
	ck_assert(!store_is_remote(loc));
	ck_assert(store_is_remote("s3://bucket/prefix/"));
	store_free(s);
	free(loc);
	ck_assert_int_eq(store_open("", &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_location");
}
END_TEST

START_TEST(test_list_sorted_with_kinds)
{
	struct store_entry *entries;
	struct store *s;
	struct err e = {0};
	char *dir = test_path(tmpdir, "a-dir");
	char *link = test_path(tmpdir, "c-link");
	size_t n;

	write_in(tmpdir, "b-file", 5);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	ck_assert_int_eq(symlink("missing-target", link), 0);
	ck_assert_int_eq(store_open(tmpdir, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(entries[0].name, "a-dir");
	ck_assert_int_eq(entries[0].kind, STORE_DIR);
	ck_assert_str_eq(entries[1].name, "b-file");
	ck_assert_int_eq(entries[1].kind, STORE_FILE);
	ck_assert_uint_eq(entries[1].size, 5);
	ck_assert_str_eq(entries[2].name, "c-link");
	ck_assert_int_eq(entries[2].kind, STORE_OTHER);
	store_entries_free(entries, n);
	store_free(s);
	free(dir);
	free(link);
}
END_TEST

START_TEST(test_list_missing)
{
	struct store_entry *entries;
	struct store *s;
	struct err e = {0};
	size_t n;

	ck_assert_int_eq(store_open(dst, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	ck_assert_ptr_nonnull(strstr(e.msg, dst));
	store_free(s);
}
END_TEST

/* A file whose byte i is (i * 7) & 0xff, larger than a few pages. */
/* buf[i] = the byte of the test pattern at offset first + i. */
static void fill_pattern(unsigned char *buf, size_t len, uint64_t first)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)((first + i) * 7);
}

static size_t write_pattern(const char *name)
{
	size_t len = 3 * (size_t)sysconf(_SC_PAGESIZE) + 123;
	unsigned char *buf = malloc(len);
	char *p = test_path(tmpdir, name);

	fill_pattern(buf, len, 0);
	test_write_file(p, buf, len);
	free(buf);
	free(p);
	return len;
}

START_TEST(test_read_exact_and_truncated)
{
	size_t len = write_pattern("data.bin"), i;
	unsigned char buf[300];
	struct store *s;
	struct err e = {0};

	ck_assert_int_eq(store_open(tmpdir, &s, &e), 0);
	ck_assert_int_eq(store_read(s, "data.bin", 4000, buf, sizeof(buf), &e), 0);
	for (i = 0; i < sizeof(buf); i++)
		ck_assert_uint_eq(buf[i], (unsigned char)((4000 + i) * 7));
	ck_assert_int_eq(store_read(s, "data.bin", len - 10, buf, 20, &e), -1);
	ck_assert_str_eq(err_name(e.code), "file_truncated");
	ck_assert_ptr_nonnull(strstr(e.msg, "data.bin"));
	err_clear(&e);
	ck_assert_int_eq(store_read(s, "absent.bin", 0, buf, 1, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_not_found");
	ck_assert_ptr_nonnull(strstr(e.msg, "absent.bin"));
	store_free(s);
}
END_TEST

/* A file of size 3 MiB + 100 whose only data are 8 KiB at 1 MiB and the
 * last 100 bytes; the rest are holes. */
#define HOLES_SIZE ((3u << 20) + 100)
static void write_holes(const char *name)
{
	unsigned char data[8192];
	char *p = test_path(tmpdir, name);
	struct stat st;
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	ck_assert_int_ge(fd, 0);
	fill_pattern(data, sizeof(data), 1u << 20);
	ck_assert_int_eq(pwrite(fd, data, sizeof(data), 1u << 20), (ssize_t)sizeof(data));
	fill_pattern(data, 100, HOLES_SIZE - 100);
	ck_assert_int_eq(pwrite(fd, data, 100, HOLES_SIZE - 100), 100);
	ck_assert_int_eq(fsync(fd), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	/* the test is about holes: a filesystem without them must not pass it */
	ck_assert_msg((uint64_t)st.st_blocks * 512 < (uint64_t)st.st_size, "%s has no holes", p);
	close(fd);
	free(p);
}

static void expect_holes_read(struct store *s, uint64_t off, size_t len)
{
	unsigned char *got = malloc(len), *want = malloc(len);
	struct err e = {0};
	uint64_t i;

	memset(got, 0xAA, len);
	for (i = 0; i < len; i++) {
		uint64_t at = off + i;
		bool data = (at >= (1u << 20) && at < (1u << 20) + 8192) || at >= HOLES_SIZE - 100;

		want[i] = 0;
		if (data)
			fill_pattern(&want[i], 1, at);
	}
	ck_assert_msg(store_read(s, "holes.bin", off, got, len, &e) == 0, "%s", e.msg);
	ck_assert_msg(memcmp(got, want, len) == 0, "read of %zu bytes at %" PRIu64 " differs", len,
		      off);
	free(got);
	free(want);
}

/* Holes read as zeros (they are not read: store_local skips them as cp
 * does), data around and between them exactly, and a read past the end is
 * file_truncated as in a file without holes. */
START_TEST(test_read_holes)
{
	unsigned char buf[300];
	struct store *s;
	struct err e = {0};

	write_holes("holes.bin");
	ck_assert_int_eq(store_open(tmpdir, &s, &e), 0);
	expect_holes_read(s, 0, 4096);			       /* a hole alone */
	expect_holes_read(s, (1u << 20) - 5000, 20000);	       /* hole, data, hole */
	expect_holes_read(s, (1u << 20) + 100, 500);	       /* data alone */
	expect_holes_read(s, 0, HOLES_SIZE);		       /* the whole file */
	expect_holes_read(s, HOLES_SIZE - 4196, 4196);	       /* hole up to the last data */
	ck_assert_int_eq(store_read(s, "holes.bin", HOLES_SIZE - 10, buf, 20, &e), -1);
	ck_assert_str_eq(err_name(e.code), "file_truncated");
	ck_assert_ptr_nonnull(strstr(e.msg, "holes.bin"));
	store_free(s);
}
END_TEST

/* A write larger than one pwrite(2) of the local store lands whole. */
START_TEST(test_large_write_whole)
{
	size_t len = (1u << 20) + 12345;
	unsigned char *buf = malloc(len), *back;
	struct store_writer *w;
	struct store *s;
	struct err e = {0};
	size_t got;
	int rc;

	fill_pattern(buf, len, 0);
	s = open_output(false, len + 7, &e, &rc);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert_int_eq(store_writer_open(s, "big.safetensors", len + 7, &w, &e), 0);
	ck_assert_int_eq(store_writer_write(w, 0, "0123456", 7, &e), 0);
	ck_assert_msg(store_writer_write(w, 7, buf, len, &e) == 0, "%s", e.msg);
	ck_assert_msg(store_writer_commit(w, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(store_read_file(s, "big.safetensors", len + 7, (char **)&back, &got, &e),
			 0);
	ck_assert_uint_eq(got, len + 7);
	ck_assert_mem_eq(back, "0123456", 7);
	ck_assert(memcmp(back + 7, buf, len) == 0);
	free(back);
	free(buf);
	store_free(s);
}
END_TEST

/* Writeback that fails where write-behind waits for it (flags with
 * SYNC_FILE_RANGE_WAIT_AFTER), with fail_errno; the calls that only start
 * writeback succeed. */
static int fail_errno;
static int waits;

static int failing_writeback(int fd, int64_t offset, int64_t nbytes, unsigned int flags)
{
	(void)fd;
	(void)offset;
	(void)nbytes;
	if (!(flags & SYNC_FILE_RANGE_WAIT_AFTER))
		return 0;
	waits++;
	errno = fail_errno;
	return -1;
}

/* Writes an output of 8 write-behind chunks (256 MiB) in 1 MiB pieces
 * with writeback failing as failing_writeback says; returns the offset of
 * the first write that failed (the whole size if none did), with its
 * error in *e, and leaves the writer committed or aborted. */
static uint64_t write_with_failing_writeback(int errnum, struct err *e, int *commit_rc)
{
	const uint64_t size = 256u << 20, piece = 1u << 20;
	unsigned char *buf = calloc(1, piece);
	struct store_writer *w;
	struct store *s;
	uint64_t off;
	int rc;

	fail_errno = errnum;
	waits = 0;
	store_local_sync_file_range_hook = failing_writeback;
	s = open_output(false, size, e, &rc);
	ck_assert_msg(rc == 0, "%s", e->msg);
	ck_assert_int_eq(store_writer_open(s, "model.safetensors", size, &w, e), 0);
	for (off = 0; off < size; off += piece)
		if (store_writer_write(w, off, buf, piece, e) != 0)
			break;
	*commit_rc = -2;
	if (off < size)
		store_writer_abort(w);
	else
		*commit_rc = store_writer_commit(w, e);
	store_local_sync_file_range_hook = NULL;
	store_free(s);
	free(buf);
	return off;
}

/* The kernel reports a writeback error once per descriptor, to the
 * sync_file_range that waits for it, and fsync then finds none: write-behind
 * must fail the write that saw it, naming the file, and nothing is
 * published. */
START_TEST(test_writeback_error_fails_the_write)
{
	struct err e = {0};
	uint64_t off;
	int rc;

	off = write_with_failing_writeback(EIO, &e, &rc);
	ck_assert_uint_lt(off, 256u << 20);
	ck_assert_int_eq(waits, 1);
	ck_assert_str_eq(err_name(e.code), "io_error");
	ck_assert_msg(strstr(e.msg, "model.safetensors") && strstr(e.msg, strerror(EIO)), "%s",
		      e.msg);
	ck_assert_uint_eq(count_entries(dst), 0);

	memset(&e, 0, sizeof(e));
	off = write_with_failing_writeback(ENOSPC, &e, &rc);
	ck_assert_uint_lt(off, 256u << 20);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_ptr_nonnull(strstr(e.msg, "model.safetensors"));
	ck_assert_uint_eq(count_entries(dst), 0);
}
END_TEST

/* A filesystem without sync_file_range (EINVAL) ends write-behind for the
 * file, and the output is written and published as without it. */
START_TEST(test_writeback_unsupported_is_no_error)
{
	struct err e = {0};
	uint64_t off;
	int rc;

	off = write_with_failing_writeback(EINVAL, &e, &rc);
	ck_assert_msg(off == 256u << 20, "%s", e.msg);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert_int_eq(waits, 1);
	ck_assert_uint_eq(count_entries(dst), 1);
}
END_TEST

START_TEST(test_view_unaligned_window)
{
	size_t len = write_pattern("data.bin"), i;
	struct store_view v;
	struct store *s;
	struct err e = {0};

	ck_assert_int_eq(store_open(tmpdir, &s, &e), 0);
	ck_assert_int_eq(store_view(s, "data.bin", 4097, 5000, &v, &e), 0);
	ck_assert_uint_eq(v.len, 5000);
	ck_assert_str_eq(v.file, "data.bin");
	for (i = 0; i < v.len; i++)
		ck_assert_uint_eq(v.data[i], (unsigned char)((4097 + i) * 7));
	store_view_release(&v);
	ck_assert_ptr_null(v.data);
	/* a range past the end is refused instead of faulting later */
	ck_assert_int_eq(store_view(s, "data.bin", len - 1, 2, &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	ck_assert_ptr_nonnull(strstr(e.msg, "data.bin"));
	store_free(s);
}
END_TEST

START_TEST(test_read_file)
{
	struct store *s;
	struct err e = {0};
	size_t len;
	char *text;

	write_in(tmpdir, "config.json", 0);
	{
		char *p = test_path(tmpdir, "config.json");

		test_write_file(p, "{}", 2);
		free(p);
	}
	ck_assert_int_eq(store_open(tmpdir, &s, &e), 0);
	ck_assert_int_eq(store_read_file(s, "config.json", 100, &text, &len, &e), 0);
	ck_assert_str_eq(text, "{}");
	ck_assert_uint_eq(len, 2);
	free(text);
	ck_assert_int_eq(store_read_file(s, "config.json", 1, &text, &len, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_unreadable");
	ck_assert_ptr_null(text);
	store_free(s);
}
END_TEST

START_TEST(test_writer_invisible_until_commit)
{
	struct store_writer *w;
	struct store *s;
	struct err e = {0};
	char *tmp_name = store_temporary_name("model.safetensors", NULL);
	char *tmp = test_path(dst, tmp_name);
	char *final = test_path(dst, "model.safetensors");
	char buf[16];
	struct stat st;
	FILE *f;
	int rc;

	s = open_output(false, 10, &e, &rc);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert_int_eq(store_writer_open(s, "model.safetensors", 10, &w, &e), 0);
	ck_assert_int_eq(stat(tmp, &st), 0);
	ck_assert_int_eq(st.st_size, 10); /* space reserved up front */
	ck_assert_int_eq(store_writer_write(w, 5, "56789", 5, &e), 0);
	ck_assert_int_eq(store_writer_write(w, 0, "01234", 5, &e), 0);
	ck_assert(!exists(dst, "model.safetensors"));
	/* a write past the reserved size is a bug, refused */
	ck_assert_int_eq(store_writer_write(w, 8, "abc", 3, &e), -1);
	ck_assert_str_eq(err_name(e.code), "plan_invalid");
	err_clear(&e);
	ck_assert_int_eq(store_writer_commit(w, &e), 0);
	ck_assert(!exists(dst, tmp_name));
	f = fopen(final, "rb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(buf, 1, sizeof(buf), f), 10);
	fclose(f);
	ck_assert_mem_eq(buf, "0123456789", 10);
	store_free(s);
	free(tmp_name);
	free(tmp);
	free(final);
}
END_TEST

START_TEST(test_abort_leaves_nothing)
{
	struct store_writer *w;
	struct store *s;
	struct err e = {0};
	int rc;

	s = open_output(false, 100, &e, &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(store_writer_open(s, "model-00001-of-00002.safetensors", 100, &w, &e), 0);
	ck_assert_int_eq(store_writer_write(w, 0, "abc", 3, &e), 0);
	store_writer_abort(w);
	store_writer_abort(NULL);
	ck_assert_uint_eq(count_entries(dst), 0);
	store_free(s);
}
END_TEST

/* Worker threads writing disjoint quarters of one output, each copying
 * from its own view of one shared source. */
struct quarter {
	struct store *src;
	struct store_writer *w;
	uint64_t off, len;
	int rc;
};

static void *copy_quarter(void *arg)
{
	struct quarter *q = arg;
	struct store_view v;
	struct err e = {0};

	q->rc = store_view(q->src, "data.bin", q->off, (size_t)q->len, &v, &e);
	if (q->rc == 0) {
		q->rc = store_writer_write(q->w, q->off, v.data, v.len, &e);
		store_view_release(&v);
	}
	return NULL;
}

START_TEST(test_concurrent_views_and_writes)
{
	size_t len = write_pattern("data.bin"), i;
	struct quarter q[4];
	pthread_t th[4];
	struct store_writer *w;
	struct store *src, *s;
	struct err e = {0};
	unsigned char *out;
	char *final;
	FILE *f;
	int rc;

	ck_assert_int_eq(store_open(tmpdir, &src, &e), 0);
	s = open_output(false, len, &e, &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(store_writer_open(s, "copy.bin", len, &w, &e), 0);
	for (i = 0; i < 4; i++) {
		q[i].src = src;
		q[i].w = w;
		q[i].off = len / 4 * i;
		q[i].len = i == 3 ? len - q[i].off : len / 4;
		ck_assert_int_eq(pthread_create(&th[i], NULL, copy_quarter, &q[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(q[i].rc, 0);
	}
	ck_assert_int_eq(store_writer_commit(w, &e), 0);
	final = test_path(dst, "copy.bin");
	out = malloc(len + 1);
	f = fopen(final, "rb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(out, 1, len + 1, f), len);
	fclose(f);
	for (i = 0; i < len; i++)
		ck_assert_uint_eq(out[i], (unsigned char)(i * 7));
	free(out);
	free(final);
	store_free(s);
	store_free(src);
}
END_TEST

START_TEST(test_put_and_remove)
{
	struct store *s;
	struct err e = {0};
	size_t len;
	char *text;
	int rc;

	s = open_output(false, 5, &e, &rc);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(store_put(s, "config.json", "{\"a\"}", 5, &e), 0);
	ck_assert_uint_eq(count_entries(dst), 1);
	ck_assert_int_eq(store_read_file(s, "config.json", 100, &text, &len, &e), 0);
	ck_assert_str_eq(text, "{\"a\"}");
	free(text);
	ck_assert_int_eq(store_remove(s, "config.json", &e), 0);
	ck_assert_int_eq(store_remove(s, "config.json", &e), 0);
	ck_assert_int_eq(e.code, ERR_NONE);
	ck_assert_uint_eq(count_entries(dst), 0);
	store_free(s);
}
END_TEST

START_TEST(test_prepare_creates_directories)
{
	struct store *s;
	struct err e = {0};
	char *deep = test_path(tmpdir, "x/y/z");
	struct store_output_options o = {.bytes_needed = 1};
	struct stat st;

	ck_assert_int_eq(store_open(deep, &s, &e), 0);
	ck_assert_msg(output_prepare(s, &o, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(stat(deep, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_uint_eq(count_entries(deep), 0);
	store_free(s);
	free(deep);
}
END_TEST

START_TEST(test_not_empty_refused)
{
	struct store *s;
	struct err e = {0};
	int rc;

	ck_assert_int_eq(mkdir(dst, 0755), 0);
	write_in(dst, "model.safetensors", 64);
	write_in(dst, "config.json", 2);
	s = open_output(false, 10, &e, &rc);
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_empty");
	ck_assert_ptr_nonnull(strstr(e.msg, dst));
	ck_assert_ptr_nonnull(strstr(e.msg, "model.safetensors"));
	ck_assert_ptr_nonnull(strstr(e.msg, "config.json"));
	ck_assert_ptr_nonnull(strstr(e.msg, "--overwrite"));
	ck_assert(exists(dst, "model.safetensors"));
	ck_assert(exists(dst, "config.json"));
	store_free(s);
}
END_TEST

static void make_old_checkpoint(void)
{
	ck_assert_int_eq(mkdir(dst, 0755), 0);
	write_in(dst, "model.safetensors.index.json", 20);
	write_in(dst, "model-00001-of-00002.safetensors", 30);
	write_in(dst, "model-00002-of-00002.safetensors", 40);
	write_in(dst, "README.md", 7);
	write_in(dst, "notes.safetensors", 3);
}

START_TEST(test_overwrite_removes_old_checkpoint)
{
	struct store *s;
	struct err e = {0};
	int rc;

	make_old_checkpoint();
	s = open_output(true, 10, &e, &rc);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert(!exists(dst, "model.safetensors.index.json"));
	ck_assert(!exists(dst, "model-00001-of-00002.safetensors"));
	ck_assert(!exists(dst, "model-00002-of-00002.safetensors"));
	/* nothing else is touched */
	ck_assert(exists(dst, "README.md"));
	ck_assert(exists(dst, "notes.safetensors"));
	ck_assert_uint_eq(count_entries(dst), 2);
	store_free(s);
}
END_TEST

START_TEST(test_overwrite_space_checked_before_removal)
{
	struct store *s;
	struct err e = {0};
	int rc;

	make_old_checkpoint();
	store_local_free_bytes_hook = fake_free_bytes;
	hook_free_bytes = 100;
	/* 100 free + 90 freed by the old checkpoint < 200 needed */
	s = open_output(true, 200, &e, &rc);
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_ptr_nonnull(strstr(e.msg, "200 bytes"));
	ck_assert_ptr_nonnull(strstr(e.msg, "190 bytes"));
	ck_assert(exists(dst, "model.safetensors.index.json"));
	ck_assert(exists(dst, "model-00001-of-00002.safetensors"));
	ck_assert(exists(dst, "model-00002-of-00002.safetensors"));
	ck_assert_uint_eq(count_entries(dst), 5);
	store_free(s);

	/* the freed bytes count: 100 + 90 >= 190 */
	err_clear(&e);
	s = open_output(true, 190, &e, &rc);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert(!exists(dst, "model.safetensors.index.json"));
	store_free(s);
}
END_TEST

START_TEST(test_insufficient_space)
{
	struct store *s;
	struct err e = {0};
	int rc;

	store_local_free_bytes_hook = fake_free_bytes;
	hook_free_bytes = 500000000;
	s = open_output(false, 1769472000, &e, &rc);
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	ck_assert_msg(strstr(e.msg, "needs 1.77 GB (1769472000 bytes) but only 500.00 MB (500000000 "
				    "bytes) is free"),
		      "%s", e.msg);
	ck_assert_int_eq(strncmp(e.msg, dst, strlen(dst)), 0);
	ck_assert_uint_eq(count_entries(dst), 0);
	store_free(s);
}
END_TEST

START_TEST(test_statvfs_space)
{
	struct store *s;
	struct err e = {0};
	int rc;

	/* no filesystem has 2^63 bytes free */
	s = open_output(false, UINT64_C(1) << 63, &e, &rc);
	ck_assert_int_eq(rc, -1);
	ck_assert_str_eq(err_name(e.code), "insufficient_space");
	store_free(s);
}
END_TEST

START_TEST(test_not_writable_under_file)
{
	struct store *s;
	struct err e = {0};
	struct store_output_options o = {.bytes_needed = 1};
	char *file = test_path(tmpdir, "plain-file");
	char *below = test_path(file, "out");

	test_write_file(file, "x", 1);
	ck_assert_int_eq(store_open(below, &s, &e), 0);
	ck_assert_int_eq(output_prepare(s, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_writable");
	ck_assert_ptr_nonnull(strstr(e.msg, file));
	store_free(s);
	free(below);
	free(file);
}
END_TEST

START_TEST(test_not_writable_is_file)
{
	struct store *s;
	struct err e = {0};
	struct store_output_options o = {.bytes_needed = 1};
	char *file = test_path(tmpdir, "plain-file");

	test_write_file(file, "x", 1);
	ck_assert_int_eq(store_open(file, &s, &e), 0);
	ck_assert_int_eq(output_prepare(s, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "destination_not_writable");
	ck_assert_ptr_nonnull(strstr(e.msg, file));
	store_free(s);
	free(file);
}
END_TEST

START_TEST(test_leftover_temp_files_removed)
{
	struct store *s;
	struct err e = {0};
	char *current = store_temporary_name("model-00001-of-00002.safetensors", NULL);
	int rc;

	ck_assert_int_eq(mkdir(dst, 0755), 0);
	/* this version's name, and an earlier one's */
	write_in(dst, current, 50);
	write_in(dst, ".ckptconv-tmp.model-00002-of-00002.safetensors", 50);
	free(current);
	s = open_output(false, 10, &e, &rc);
	ck_assert_msg(rc == 0, "%s", e.msg);
	ck_assert_uint_eq(count_entries(dst), 0);
	store_free(s);
}
END_TEST

/* ---- temporary names ---- */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

START_TEST(test_temporary_names)
{
	char *single = store_temporary_name("model.safetensors", NULL);
	char *put = store_temporary_name("config.json", "123.4");

	ck_assert_str_eq(single, ".ckptconv-tmp.model.safetensors.tmp");
	ck_assert(!ends_with(single, ".safetensors"));
	ck_assert_str_eq(put, ".ckptconv-tmp.config.json.123.4.tmp");
	ck_assert(store_is_temporary(single));
	ck_assert(store_is_temporary(".ckptconv-tmp.model.safetensors"));
	ck_assert(!store_is_temporary("model.safetensors"));
	ck_assert(!store_is_temporary("ckptconv-tmp.model.safetensors"));
	ck_assert(store_is_temporary_of(single, "model.safetensors"));
	ck_assert(store_is_temporary_of(".ckptconv-tmp.model.safetensors", "model.safetensors"));
	ck_assert(store_is_temporary_of(put, "config.json"));
	ck_assert(store_is_temporary_of(".ckptconv-tmp.config.json.123.4", "config.json"));
	ck_assert(!store_is_temporary_of(".ckptconv-tmp.model.safetensors.index.json.tmp",
					 "model.safetensors"));
	ck_assert(!store_is_temporary_of(".ckptconv-tmp.model-00001-of-00002.safetensors.tmp",
					 "model-00001-of-00002.safetensor"));
	ck_assert(!store_is_temporary_of(".ckptconv-tmp.config.json.123.tmp", "config.json"));
	ck_assert(!store_is_temporary_of("config.json", "config.json"));
	free(single);
	free(put);
}
END_TEST

/* ---- a directory swapped for a symbolic link ---- */

static char *root_dir, *outside_dir; /* the allowed root, and beside it */

static void make_dir(const char *dir, const char *name)
{
	char *p = test_path(dir, name);

	ck_assert_int_eq(mkdir(p, 0755), 0);
	free(p);
}

static void link_in(const char *dir, const char *name, const char *target)
{
	char *p = test_path(dir, name);

	ck_assert_int_eq(symlink(target, p), 0);
	free(p);
}

static char *read_in(const char *dir, const char *name)
{
	char *p = test_path(dir, name), *text = calloc(1, 256);
	FILE *f = fopen(p, "rb");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_gt(fread(text, 1, 255, f) + 1, 0);
	fclose(f);
	free(p);
	return text;
}

static void write_text_in(const char *dir, const char *name, const char *text)
{
	char *p = test_path(dir, name);

	test_write_file(p, text, strlen(text));
	free(p);
}

static void roots_setup(void)
{
	setup();
	test_confine_under(tmpdir, &root_dir, &outside_dir);
}

static void roots_teardown(void)
{
	test_unconfine();
	free(root_dir);
	free(outside_dir);
	teardown();
}

/* The destination `out` is prepared and opened, then replaced by a link to
 * `outside`, which holds a file of the same name as one the store wrote:
 * later writes, renames and removals still happen in the directory
 * opened, now at `out.moved`, and never in `outside`. */
static void swap_destination_while_open(const char *dir)
{
	struct store_output_options o = {.durable = true, .bytes_needed = 10};
	char *out = test_path(dir, "out"), *moved = test_path(dir, "out.moved");
	struct store_writer *w;
	struct store *s;
	struct err e = {0};
	char *text;

	ck_assert_int_eq(store_open(out, &s, &e), 0);
	ck_assert_msg(output_prepare(s, &o, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(store_put(s, "a.json", "first", 5, &e), 0);
	ck_assert_int_eq(rename(out, moved), 0);
	ck_assert_int_eq(symlink(outside_dir, out), 0);
	write_text_in(outside_dir, "a.json", "theirs");
	ck_assert_int_eq(store_writer_open(s, "b.safetensors", 4, &w, &e), 0);
	ck_assert_int_eq(store_writer_write(w, 0, "bbbb", 4, &e), 0);
	ck_assert_int_eq(store_writer_commit(w, &e), 0);
	ck_assert_int_eq(store_put(s, "c.json", "third", 5, &e), 0);
	ck_assert_int_eq(store_remove(s, "a.json", &e), 0);
	ck_assert_msg(e.code == ERR_NONE, "%s", e.msg);
	store_free(s);
	/* the opened directory got the writes and the removal */
	ck_assert(!exists(moved, "a.json"));
	ck_assert(exists(moved, "b.safetensors"));
	ck_assert(exists(moved, "c.json"));
	/* the link's target kept its file and got nothing */
	text = read_in(outside_dir, "a.json");
	ck_assert_str_eq(text, "theirs");
	free(text);
	ck_assert_uint_eq(test_count_entries(outside_dir), 1);
	free(out);
	free(moved);
}

START_TEST(test_swapped_destination_unconfined)
{
	char resolved[PATH_MAX];

	ck_assert_ptr_nonnull(realpath(tmpdir, resolved));
	outside_dir = test_path(resolved, "outside");
	ck_assert_int_eq(mkdir(outside_dir, 0755), 0);
	swap_destination_while_open(resolved);
	free(outside_dir);
	outside_dir = NULL;
}
END_TEST

START_TEST(test_swapped_destination_confined)
{
	store_local_force_walk = _i == 1;
	swap_destination_while_open(root_dir);
}
END_TEST

/* A source listed (its directory opened), then swapped for a link to a
 * directory outside the root holding a file of the same name: reads come
 * from the directory listed. */
START_TEST(test_swapped_source_confined)
{
	char *src = test_path(root_dir, "src"), *moved = test_path(root_dir, "src.moved");
	struct store_entry *entries;
	struct store *s;
	struct err e = {0};
	size_t n, len;
	char *text;

	store_local_force_walk = _i == 1;
	ck_assert_int_eq(mkdir(src, 0755), 0);
	write_text_in(src, "config.json", "ours");
	write_text_in(outside_dir, "config.json", "secret");
	ck_assert_int_eq(store_open(src, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), 0);
	store_entries_free(entries, n);
	ck_assert_int_eq(rename(src, moved), 0);
	ck_assert_int_eq(symlink(outside_dir, src), 0);
	ck_assert_msg(store_read_file(s, "config.json", 100, &text, &len, &e) == 0, "%s", e.msg);
	ck_assert_str_eq(text, "ours");
	free(text);
	store_free(s);
	/* opened now, the location leads outside the root */
	ck_assert_int_eq(store_open(src, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	ck_assert_ptr_nonnull(strstr(e.msg, src));
	store_free(s);
	free(src);
	free(moved);
}
END_TEST

/* ---- confinement to allowed roots ---- */

/* root/src holds a file, links that stay inside the root (relative,
 * absolute, through a linked directory) and links that leave it (absolute,
 * relative with "..", a chain ending outside, a loop). */
static char *make_linked_source(void)
{
	char *src = test_path(root_dir, "src"), *shared = test_path(root_dir, "shared");
	char *target;

	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(mkdir(shared, 0755), 0);
	write_text_in(src, "a.json", "plain");
	write_text_in(shared, "tok.json", "shared");
	write_text_in(outside_dir, "token", "secret");
	link_in(src, "in-relative", "../shared/tok.json");
	target = test_path(shared, "tok.json");
	link_in(src, "in-absolute", target);
	free(target);
	link_in(root_dir, "shared-link", "shared");
	link_in(src, "in-via-dir", "../shared-link/tok.json");
	target = test_path(outside_dir, "token");
	link_in(src, "out-absolute", target);
	free(target);
	link_in(src, "out-relative", "../../outside/token");
	link_in(src, "out-chain", "in-chain-step");
	link_in(src, "in-chain-step", "../../outside/token");
	link_in(src, "loop", "loop");
	free(shared);
	return src;
}

static const struct store_entry *entry_named(const struct store_entry *entries, size_t n,
					     const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(entries[i].name, name) == 0)
			return &entries[i];
	ck_abort_msg("no entry %s", name);
	return NULL;
}

START_TEST(test_confined_links)
{
	static const char *const inside[] = {"in-relative", "in-absolute", "in-via-dir"};
	static const char *const outside[] = {"out-absolute", "out-relative", "out-chain",
					      "in-chain-step"};
	char *src = make_linked_source(), *text;
	struct store_entry *entries, st;
	struct store *s;
	struct err e = {0};
	size_t n, len, i;

	store_local_force_walk = _i == 1;
	ck_assert_int_eq(store_open(src, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), 0);
	ck_assert_int_eq(entry_named(entries, n, "a.json")->kind, STORE_FILE);
	ck_assert_int_eq(entry_named(entries, n, "loop")->kind, STORE_OTHER);
	for (i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
		ck_assert_int_eq(entry_named(entries, n, inside[i])->kind, STORE_FILE);
		ck_assert_msg(store_read_file(s, inside[i], 100, &text, &len, &e) == 0, "%s: %s",
			      inside[i], e.msg);
		ck_assert_str_eq(text, "shared");
		free(text);
	}
	for (i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
		ck_assert_int_eq(entry_named(entries, n, outside[i])->kind, STORE_OUTSIDE);
		err_clear(&e);
		ck_assert_int_eq(store_read_file(s, outside[i], 100, &text, &len, &e), -1);
		ck_assert_str_eq(err_name(e.code), "forbidden_path");
		ck_assert_ptr_nonnull(strstr(e.msg, outside[i]));
		err_clear(&e);
		ck_assert_int_eq(store_stat(s, outside[i], &st, &e), -1);
		ck_assert_str_eq(err_name(e.code), "forbidden_path");
		err_clear(&e);
		ck_assert_int_eq(store_read(s, outside[i], 0, &len, 1, &e), -1);
		ck_assert_str_eq(err_name(e.code), "forbidden_path");
	}
	store_entries_free(entries, n);
	store_free(s);
	free(src);
}
END_TEST

/* Without confinement (the CLI), links are followed wherever they lead. */
START_TEST(test_unconfined_links_followed)
{
	char *src, *text;
	struct store_entry *entries;
	struct store *s;
	struct err e = {0};
	size_t n, len;

	src = make_linked_source();
	store_local_confine(NULL, NULL);
	ck_assert_int_eq(store_open(src, &s, &e), 0);
	ck_assert_int_eq(store_list(s, &entries, &n, &e), 0);
	ck_assert_int_eq(entry_named(entries, n, "out-absolute")->kind, STORE_FILE);
	ck_assert_int_eq(store_read_file(s, "out-relative", 100, &text, &len, &e), 0);
	ck_assert_str_eq(text, "secret");
	free(text);
	store_entries_free(entries, n);
	store_free(s);
	free(src);
}
END_TEST

START_TEST(test_confined_locations)
{
	char *link = test_path(root_dir, "away"), *below = test_path(link, "new/out");
	char *in_link = test_path(root_dir, "alias"), *in_out = test_path(in_link, "out");
	struct store_output_options o = {.bytes_needed = 1};
	struct store *s;
	struct err e = {0};
	struct stat st;

	store_local_force_walk = _i == 1;
	/* outside every root, by name */
	ck_assert_int_eq(store_open(outside_dir, &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	err_clear(&e);
	ck_assert_int_eq(store_open("relative/dir", &s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	err_clear(&e);
	/* a destination below a link that leaves the root: nothing created */
	ck_assert_int_eq(symlink(outside_dir, link), 0);
	ck_assert_int_eq(store_open(below, &s, &e), 0);
	ck_assert_int_eq(output_prepare(s, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	ck_assert_ptr_nonnull(strstr(e.msg, link));
	store_free(s);
	ck_assert_uint_eq(test_count_entries(outside_dir), 0);
	err_clear(&e);
	/* the same through store_ensure (partitions) */
	ck_assert_int_eq(store_open(below, &s, &e), 0);
	ck_assert_int_eq(store_ensure(s, NULL, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	store_free(s);
	ck_assert_uint_eq(test_count_entries(outside_dir), 0);
	err_clear(&e);
	/* below a link that stays inside: created where it leads */
	ck_assert_int_eq(symlink("shared-dir", in_link), 0);
	make_dir(root_dir, "shared-dir");
	ck_assert_int_eq(store_open(in_out, &s, &e), 0);
	ck_assert_msg(output_prepare(s, &o, &e) == 0, "%s", e.msg);
	ck_assert_int_eq(store_put(s, "x.json", "x", 1, &e), 0);
	store_free(s);
	ck_assert_int_eq(stat(in_out, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert(exists(in_out, "x.json"));
	free(link);
	free(below);
	free(in_link);
	free(in_out);
}
END_TEST

/* A destination that is itself a link to outside the root, as when a
 * directory was swapped before the job ran: refused, nothing written. */
START_TEST(test_confined_destination_link_refused)
{
	char *out = test_path(root_dir, "out");
	struct store_output_options o = {.overwrite = true, .bytes_needed = 1};
	struct store *s;
	struct err e = {0};

	store_local_force_walk = _i == 1;
	write_text_in(outside_dir, "model.safetensors", "theirs");
	ck_assert_int_eq(symlink(outside_dir, out), 0);
	ck_assert_int_eq(store_open(out, &s, &e), 0);
	ck_assert_int_eq(output_prepare(s, &o, &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	err_clear(&e);
	ck_assert_int_eq(store_remove(s, "model.safetensors", &e), -1);
	ck_assert_str_eq(err_name(e.code), "forbidden_path");
	store_free(s);
	ck_assert(exists(outside_dir, "model.safetensors"));
	ck_assert_uint_eq(test_count_entries(outside_dir), 1);
	free(out);
}
END_TEST

/* ---- source identities ---- */

#define ASSERT_OK(rc, e) ck_assert_msg((rc) == 0, "%s: %s", err_name((e).code), (e).msg)

static struct store_identity file_id(void)
{
	struct store_identity id = {.kind = STORE_ID_FILE,
				    .dev = 2049,
				    .ino = 131073,
				    .size = 4096,
				    .mtime_ns = 1700000000123456789,
				    .ctime_ns = 1700000000123456789};
	return id;
}

START_TEST(test_identity_differs)
{
	struct store_identity a = file_id(), b, o1 = {.kind = STORE_ID_OBJECT}, o2;
	struct store_identity none = {0};
	char what[256];

	b = a;
	ck_assert(!store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert(!store_identity_differs(&a, &b, true, what, sizeof(what)));
	b.mtime_ns++;
	ck_assert(store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert_str_eq(what, "mtime 1700000000.123456789 -> 1700000000.123456790");
	ck_assert(store_identity_differs(&a, &b, true, what, sizeof(what)));
	b = a;
	b.ctime_ns += 1000000000;
	ck_assert(store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert_str_eq(what, "ctime 1700000000.123456789 -> 1700000001.123456789");
	/* ctime is this host's: a copy on another node with its mtime kept
	 * has its own. */
	ck_assert(!store_identity_differs(&a, &b, true, what, sizeof(what)));
	b = a;
	b.size = 4095;
	ck_assert(store_identity_differs(&a, &b, true, what, sizeof(what)));
	ck_assert_str_eq(what, "size 4096 -> 4095");
	/* Another inode or device: another file here, but on another host
	 * (a pod on another node) the same file may have other numbers. */
	b = a;
	b.ino = 7;
	ck_assert(store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert_str_eq(what, "st_ino 131073 -> 7");
	ck_assert(!store_identity_differs(&a, &b, true, what, sizeof(what)));
	b = a;
	b.dev = 64769;
	ck_assert(store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert_str_eq(what, "st_dev 2049 -> 64769");
	ck_assert(!store_identity_differs(&a, &b, true, what, sizeof(what)));
	/* Times before the epoch print as seconds and nanoseconds too. */
	b = a;
	a.mtime_ns = -1;
	b.mtime_ns = 0;
	ck_assert(store_identity_differs(&a, &b, false, what, sizeof(what)));
	ck_assert_str_eq(what, "mtime -1.999999999 -> 0.000000000");

	/* Objects: the ETag, and the VersionId where both have one. */
	strcpy(o1.etag, "\"9b2cf535f27731c974343645a3985328\"");
	o2 = o1;
	ck_assert(!store_identity_differs(&o1, &o2, true, what, sizeof(what)));
	strcpy(o2.etag, "\"9b2cf535f27731c974343645a3985328-2\"");
	ck_assert(store_identity_differs(&o1, &o2, true, what, sizeof(what)));
	ck_assert_ptr_nonnull(strstr(what, "ETag "));
	o2 = o1;
	strcpy(o2.version_id, "3sL4kqtJlcpXroDTDmJ");
	ck_assert(!store_identity_differs(&o1, &o2, true, what, sizeof(what)));
	strcpy(o1.version_id, "L4kqtJlcpXroDTDmpUMLUo");
	ck_assert(store_identity_differs(&o1, &o2, true, what, sizeof(what)));
	ck_assert_str_eq(what, "VersionId L4kqtJlcpXroDTDmpUMLUo -> 3sL4kqtJlcpXroDTDmJ");

	/* Another kind, or nothing recorded, is never the same. */
	ck_assert(store_identity_differs(&a, &o1, true, what, sizeof(what)));
	ck_assert(store_identity_differs(&none, &none, true, what, sizeof(what)));
}
END_TEST

static void rewrite_in_place(const char *dir, const char *name, const char *bytes, size_t len)
{
	char *p = test_path(dir, name);
	int fd = open(p, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, bytes, len, 0), (ssize_t)len);
	close(fd);
	free(p);
}

START_TEST(test_source_identity_local)
{
	struct store_identity id, stale;
	struct store_source *ids;
	struct store_view v;
	struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000, .tv_nsec = 5}};
	struct store *s;
	char buf[8], *p = test_path(tmpdir, "a.safetensors");
	struct err e;
	size_t n;

	err_clear(&e);
	test_write_file(p, "AAAAAAAAAAAAAAAA", 16);
	ASSERT_OK(store_open(tmpdir, &s, &e), e);
	ASSERT_OK(store_read(s, "a.safetensors", 0, buf, 8, &e), e);
	ASSERT_OK(store_identity(s, "a.safetensors", &id, &e), e);
	ck_assert_int_eq(id.kind, STORE_ID_FILE);
	ck_assert_uint_eq(id.size, 16);
	ASSERT_OK(store_check_sources(s, &e), e);
	n = store_identities(s, &ids);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(ids[0].name, "a.safetensors");
	ck_assert(!store_identity_differs(&ids[0].id, &id, false, buf, 1));
	store_sources_free(ids, n);

	/* Same size, other bytes, written in place: mtime and ctime move. */
	usleep(20000);
	rewrite_in_place(tmpdir, "a.safetensors", "BBBB", 4);
	ck_assert_int_eq(store_check_sources(s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	ck_assert_ptr_nonnull(strstr(e.msg, "a.safetensors"));
	err_clear(&e);
	ck_assert_int_eq(store_view(s, "a.safetensors", 0, 8, &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	store_free(s);

	/* A touch that only sets mtime (ctime follows, too). */
	err_clear(&e);
	ASSERT_OK(store_open(tmpdir, &s, &e), e);
	ASSERT_OK(store_identity(s, "a.safetensors", &id, &e), e);
	ck_assert_int_eq(utimensat(AT_FDCWD, p, times, 0), 0);
	ck_assert_int_eq(store_check_sources(s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	ck_assert_msg(strstr(e.msg, "mtime ") != NULL, "%s", e.msg);
	store_free(s);

	/* An identity recorded by another process: held to it, the file
	 * that is there now is refused. */
	stale = id;
	err_clear(&e);
	ASSERT_OK(store_open(tmpdir, &s, &e), e);
	ck_assert_int_eq(store_pin(s, "a.safetensors", &stale, true, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_changed");
	err_clear(&e);
	ASSERT_OK(store_identity(s, "a.safetensors", &id, &e), e);
	ASSERT_OK(store_pin(s, "a.safetensors", &id, true, &e), e);

	/* Shrunk: still source_truncated. */
	ck_assert_int_eq(truncate(p, 4), 0);
	ck_assert_int_eq(store_check_sources(s, &e), -1);
	ck_assert_str_eq(err_name(e.code), "source_truncated");
	store_free(s);
	free(p);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *read = tcase_create("read");
	TCase *write = tcase_create("write");
	TCase *prepare = tcase_create("prepare_output");
	TCase *names = tcase_create("temporary_names");
	TCase *swap = tcase_create("swapped_directories");
	TCase *confined = tcase_create("confined");

	tcase_add_checked_fixture(read, setup, teardown);
	tcase_add_checked_fixture(write, setup, teardown);
	tcase_add_checked_fixture(prepare, setup, teardown);
	tcase_add_test(read, test_location_normalised);
	tcase_add_test(read, test_list_sorted_with_kinds);
	tcase_add_test(read, test_list_missing);
	tcase_add_test(read, test_read_exact_and_truncated);
	tcase_add_test(read, test_view_unaligned_window);
	tcase_add_test(read, test_read_holes);
	tcase_add_test(read, test_read_file);
	tcase_add_test(read, test_identity_differs);
	tcase_add_test(read, test_source_identity_local);
	tcase_add_test(write, test_writer_invisible_until_commit);
	tcase_add_test(write, test_abort_leaves_nothing);
	tcase_add_test(write, test_put_and_remove);
	tcase_add_test(write, test_large_write_whole);
	tcase_add_test(write, test_concurrent_views_and_writes);
	tcase_add_test(write, test_writeback_error_fails_the_write);
	tcase_add_test(write, test_writeback_unsupported_is_no_error);
	tcase_add_test(prepare, test_prepare_creates_directories);
	tcase_add_test(prepare, test_not_empty_refused);
	tcase_add_test(prepare, test_overwrite_removes_old_checkpoint);
	tcase_add_test(prepare, test_overwrite_space_checked_before_removal);
	tcase_add_test(prepare, test_insufficient_space);
	tcase_add_test(prepare, test_statvfs_space);
	tcase_add_test(prepare, test_not_writable_under_file);
	tcase_add_test(prepare, test_not_writable_is_file);
	tcase_add_test(prepare, test_leftover_temp_files_removed);
	tcase_add_test(names, test_temporary_names);
	tcase_add_checked_fixture(swap, setup, teardown);
	tcase_add_test(swap, test_swapped_destination_unconfined);
	/* loops: 0 resolves with openat2, 1 with the O_NOFOLLOW walk */
	tcase_add_checked_fixture(confined, roots_setup, roots_teardown);
	tcase_add_loop_test(confined, test_swapped_destination_confined, 0, 2);
	tcase_add_loop_test(confined, test_swapped_source_confined, 0, 2);
	tcase_add_loop_test(confined, test_confined_links, 0, 2);
	tcase_add_loop_test(confined, test_confined_locations, 0, 2);
	tcase_add_loop_test(confined, test_confined_destination_link_refused, 0, 2);
	tcase_add_test(confined, test_unconfined_links_followed);
	suite_add_tcase(s, read);
	suite_add_tcase(s, write);
	suite_add_tcase(s, prepare);
	suite_add_tcase(s, names);
	suite_add_tcase(s, swap);
	suite_add_tcase(s, confined);
	return s;
}

int main(void)
{
	return test_run_suite(store_suite());
}
