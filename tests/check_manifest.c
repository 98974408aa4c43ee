/* SPDX-License-Identifier: MIT */
/*
 * check_manifest: the checksum record's JSON read back as written (in name
 * order, a name noted twice keeping its last values), records ckptconv did
 * not write refused with manifest_mismatch, the record names, and
 * manifest_verify on a local destination: a byte changed, a file
 * shortened or removed is checksum_mismatch naming it; no record is
 * manifest_mismatch.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/partition.h"
#include "ckptconv/store.h"
#include "testutil.h"

#define DIGEST "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

START_TEST(test_record_round_trip)
{
	struct manifest_sums *s = manifest_sums_new(DIGEST, NULL, NULL), *back = NULL;
	struct store_identity file_id = {.kind = STORE_ID_FILE, .dev = 2049, .ino = UINT64_MAX,
					 .size = 11, .mtime_ns = 1700000000000000001,
					 .ctime_ns = 1700000000000000007};
	struct store_identity object_id = {.kind = STORE_ID_OBJECT, .etag = "\"9b2cf535f27731c9\"",
					   .version_id = "v1"};
	const struct manifest_sum *f;
	struct err e = {0};
	char what[256];
	char *text;

	ck_assert_int_eq(manifest_sums_note(s, "b.safetensors", 10, 0xdeadbeef, NULL, &e), 0);
	ck_assert_int_eq(manifest_sums_note(s, "a.json", 3, 1, NULL, &e), 0);
	ck_assert_int_eq(manifest_sums_note(s, "b.safetensors", 11, 0xE3069283u, &file_id, &e), 0);
	ck_assert_int_eq(manifest_sums_note(s, "c.safetensors", 4, 2, &object_id, &e), 0);
	text = manifest_sums_build(s);
	ck_assert_ptr_nonnull(strstr(text, "\"ino\": \"18446744073709551615\""));
	ck_assert_ptr_nonnull(strstr(text, "\"ctime_ns\": 1700000000000000007"));
	ck_assert_ptr_nonnull(strstr(text, "\"crc32c\": \"e3069283\""));
	ck_assert_ptr_nonnull(strstr(text, "a.json"));
	ck_assert(strstr(text, "a.json") < strstr(text, "b.safetensors"));
	ck_assert_int_eq(manifest_sums_parse(text, "x", &back, &e), 0);
	ck_assert_str_eq(back->plan_digest, DIGEST);
	ck_assert_uint_eq(back->n, 3);
	f = manifest_sums_find(back, "b.safetensors");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(f->size, 11);
	ck_assert_uint_eq(f->crc32c, 0xE3069283u);
	/* The identity as published comes back whole. */
	ck_assert(!store_identity_differs(&file_id, &f->id, false, what, sizeof(what)));
	ck_assert(!store_identity_differs(&object_id, &manifest_sums_find(back, "c.safetensors")->id,
					  false, what, sizeof(what)));
	ck_assert_str_eq(manifest_sums_find(back, "c.safetensors")->id.version_id, "v1");
	ck_assert_int_eq(manifest_sums_find(back, "a.json")->id.kind, STORE_ID_NONE);
	ck_assert_ptr_null(manifest_sums_find(back, "c"));
	free(text);
	manifest_sums_free(back);
	manifest_sums_free(s);
}
END_TEST

/* A local file published without fsync is noted with this boot's id, one
 * fsynced or on S3 with none; the id survives the text and a merge. */
START_TEST(test_record_boot_id)
{
	struct manifest_sums *s = manifest_sums_new(DIGEST, NULL, NULL), *back = NULL,
			     *merged = manifest_sums_new(DIGEST, NULL, NULL);
	struct store_identity file_id = {.kind = STORE_ID_FILE, .ino = 7, .size = 1};
	struct store_identity object_id = {.kind = STORE_ID_OBJECT, .etag = "\"e\""};
	char boot[BOOT_ID_MAX], *text;
	struct err e = {0};

	boot_id_read(boot);
	ck_assert_uint_eq(strlen(boot), 36); /* a UUID, as Linux writes it */
	ck_assert_int_eq(manifest_sums_note_published(s, "a", 1, 1, &file_id, false, &e), 0);
	ck_assert_int_eq(manifest_sums_note_published(s, "b", 1, 1, &file_id, true, &e), 0);
	ck_assert_int_eq(manifest_sums_note_published(s, "c", 1, 1, &object_id, false, &e), 0);
	text = manifest_sums_build(s);
	ck_assert_int_eq(manifest_sums_parse(text, "x", &back, &e), 0);
	ck_assert_str_eq(manifest_sums_find(back, "a")->boot_id, boot);
	ck_assert_str_eq(manifest_sums_find(back, "b")->boot_id, "");
	ck_assert_str_eq(manifest_sums_find(back, "c")->boot_id, "");
	ck_assert_int_eq(manifest_sums_note_entry(merged, manifest_sums_find(back, "a"), &e), 0);
	ck_assert_str_eq(manifest_sums_find(merged, "a")->boot_id, boot);
	manifest_sums_forget(merged, "a");
	ck_assert_ptr_null(manifest_sums_find(merged, "a"));
	free(text);
	manifest_sums_free(merged);
	manifest_sums_free(back);
	manifest_sums_free(s);
}
END_TEST

static void expect_refused(const char *json)
{
	struct manifest_sums *s = NULL;
	struct err e = {0};

	ck_assert_msg(manifest_sums_parse(json, "dst/ckptconv-sums.json", &s, &e) == -1, "%s",
		      json);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(e.code, ERR_MANIFEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(e.msg, "dst/ckptconv-sums.json"));
}

START_TEST(test_record_refused)
{
	expect_refused("");
	expect_refused("[]");
	expect_refused("{\"format\": \"ckptconv-plan\", \"version\": 1}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 2, \"plan_digest\": \"" DIGEST
		       "\", \"files\": []}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"ab\","
		       " \"files\": []}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": {}}");
	expect_refused(
		"{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		"\", \"files\": [{\"name\": \"../x\", \"size\": 1, \"crc32c\": \"00000000\"}]}");
	expect_refused(
		"{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		"\", \"files\": [{\"name\": \"x\", \"size\": -1, \"crc32c\": \"00000000\"}]}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"0000000\"}]}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"format\": \"ckptconv-sums\"}");
	/* an identity without all its members, or malformed */
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\","
		       " \"ino\": \"5\", \"mtime_ns\": 1, \"ctime_ns\": 1}]}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\","
		       " \"dev\": \"1\", \"ino\": 5, \"mtime_ns\": 1, \"ctime_ns\": 1}]}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\","
		       " \"etag\": \"\"}]}");
	/* a boot id that is not a short string */
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\","
		       " \"boot_id\": 5}]}");
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\","
		       " \"boot_id\": \"0123456789012345678901234567890123456789\"}]}");
	/* a name twice, however far apart */
	expect_refused("{\"format\": \"ckptconv-sums\", \"version\": 1, \"plan_digest\": \"" DIGEST
		       "\", \"files\": [{\"name\": \"x\", \"size\": 1, \"crc32c\": \"00000000\"},"
		       " {\"name\": \"w\", \"size\": 1, \"crc32c\": \"00000000\"},"
		       " {\"name\": \"x\", \"size\": 2, \"crc32c\": \"00000001\"}]}");
}
END_TEST

/* A record of many entries in any order: each found (the record is read
 * sorted, not by a scan per entry). */
START_TEST(test_record_many)
{
	struct manifest_sums *s = manifest_sums_new(DIGEST, NULL, NULL), *back = NULL;
	struct err e = {0};
	char name[32], *text;
	size_t i, n = 20000;

	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "f%07zu", (i * 7919) % n);
		ck_assert_int_eq(manifest_sums_note(s, name, i, (uint32_t)i, NULL, &e), 0);
	}
	text = manifest_sums_build(s);
	ck_assert_int_eq(manifest_sums_parse(text, "x", &back, &e), 0);
	ck_assert_uint_eq(back->n, n);
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "f%07zu", i);
		ck_assert_ptr_nonnull(manifest_sums_find(back, name));
	}
	ck_assert_ptr_null(manifest_sums_find(back, "f9999999"));
	free(text);
	manifest_sums_free(back);
	manifest_sums_free(s);
}
END_TEST

START_TEST(test_record_names)
{
	char *name = manifest_sums_name(0, 0);

	ck_assert_str_eq(name, MANIFEST_SUMS_NAME);
	free(name);
	name = manifest_sums_name(3, 8);
	ck_assert_str_eq(name, "ckptconv-sums.3.json");
	ck_assert(manifest_is_record(name));
	free(name);
	ck_assert(manifest_is_record(PARTITION_MANIFEST));
	ck_assert(manifest_is_record("ckptconv-sums.json"));
	ck_assert(!manifest_is_record("ckptconv-sums.x.json"));
	ck_assert(!manifest_is_record("ckptconv-sums..json"));
	ck_assert(!manifest_is_record("config.json"));
	ck_assert(!manifest_is_record("ckptconv-sums.1.json.tmp"));
}
END_TEST

/* A plan manifest planning `files` (JSON array text) and the index. */
static void put_plan(struct store *s, const char *files, bool index, uint32_t partitions)
{
	char text[2048];
	struct err e = {0};

	snprintf(text, sizeof(text),
		 "{\"format\": \"ckptconv-plan\", \"version\": 1, \"source\": \"/src\", "
		 "\"partitions\": %u, \"options\": {\"to\": \"native\", \"dtype\": \"auto\", "
		 "\"max_shard_size\": 5000000000, \"exclude\": null, \"expert_parallel\": null}, "
		 "\"plan_digest\": \"%s\", \"index\": %s, \"files\": %s}",
		 (unsigned)partitions, DIGEST, index ? "true" : "false", files);
	ck_assert_int_eq(store_put(s, PARTITION_MANIFEST, text, strlen(text), &e), 0);
}

#define PLAN_AB "[{\"name\": \"a.bin\", \"size\": 5, \"header_sha256\": \"" DIGEST "\"}, " \
		"{\"name\": \"b.bin\", \"size\": 9, \"header_sha256\": \"" DIGEST "\"}]"

/* A destination with two files, their plan manifest and their record. */
static struct store *make_destination(char *dir)
{
	struct store *s = NULL;
	struct manifest_sums *sums;
	struct err e = {0};
	char *path;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(store_open(dir, &s, &e), 0);
	ck_assert_int_eq(store_put(s, "a.bin", "hello", 5, &e), 0);
	ck_assert_int_eq(store_put(s, "b.bin", "123456789", 9, &e), 0);
	put_plan(s, PLAN_AB, false, 0);
	sums = manifest_sums_new(DIGEST, s, MANIFEST_SUMS_NAME);
	ck_assert_int_eq(manifest_sums_note(sums, "a.bin", 5, crc32c(0, "hello", 5), NULL, &e), 0);
	ck_assert_int_eq(manifest_sums_note(sums, "b.bin", 9, 0xE3069283u, NULL, &e), 0);
	manifest_sums_free(sums);
	path = malloc(strlen(dir) + 32);
	sprintf(path, "%s/%s", dir, MANIFEST_SUMS_NAME);
	ck_assert_int_eq(access(path, F_OK), 0);
	free(path);
	return s;
}

/* Verified by a store opened afresh, as `verify --checksums` does (a
 * store keeps the descriptors of the files it read). */
static void expect_bad(const char *dir, enum err_code code, const char *fragment)
{
	uint64_t files, bytes;
	struct store *s = NULL;
	struct err e = {0};

	ck_assert_int_eq(store_open(dir, &s, &e), 0);
	ck_assert_int_eq(manifest_verify(s, &files, &bytes, &e), -1);
	ck_assert_int_eq(e.code, code);
	ck_assert_msg(strstr(e.msg, fragment), "%s", e.msg);
	store_free(s);
}

/* Recorded files that all check are not enough: every planned file must
 * be there and recorded. */
START_TEST(test_verify_complete)
{
	char dir[] = "/tmp/check_manifest.XXXXXX";
	struct store *s = make_destination(dir);
	struct manifest_sums *sums;
	uint64_t files = 0, bytes = 0;
	struct err e = {0};

	/* The index planned, not published: b.bin and a.bin check, exit 1. */
	put_plan(s, PLAN_AB, true, 0);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   "/" CKPT_INDEX_NAME ": planned but missing (2 of 3 planned files present)");
	/* Two files planned, b.bin recorded and published, a.bin neither. */
	put_plan(s, PLAN_AB, false, 0);
	ck_assert_int_eq(store_remove(s, "a.bin", &e), 0);
	sums = manifest_sums_new(DIGEST, s, MANIFEST_SUMS_NAME);
	ck_assert_int_eq(manifest_sums_note(sums, "b.bin", 9, 0xE3069283u, NULL, &e), 0);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   "/a.bin: planned but missing (1 of 2 planned files present)");
	/* a.bin published but not recorded. */
	ck_assert_int_eq(store_put(s, "a.bin", "hello", 5, &e), 0);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   "/a.bin: planned and present but not in the checksum record ckptconv-sums.json");
	ck_assert_int_eq(manifest_sums_note(sums, "a.bin", 5, crc32c(0, "hello", 5), NULL, &e), 0);
	ck_assert_int_eq(manifest_verify(s, &files, &bytes, &e), 0);
	ck_assert_uint_eq(files, 2);
	/* A partitioned manifest: not finalized. */
	put_plan(s, PLAN_AB, false, 3);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   ": a conversion in 3 partitions, not finalized (ckptconv finalize)");
	manifest_sums_free(sums);
	store_remove(s, PARTITION_MANIFEST, NULL);
	store_remove(s, MANIFEST_SUMS_NAME, NULL);
	store_remove(s, "a.bin", NULL);
	store_remove(s, "b.bin", NULL);
	store_free(s);
	rmdir(dir);
}
END_TEST

START_TEST(test_verify)
{
	char dir[] = "/tmp/check_manifest.XXXXXX";
	struct store *s = make_destination(dir);
	uint64_t files = 0, bytes = 0;
	struct err e = {0};

	ck_assert_int_eq(manifest_verify(s, &files, &bytes, &e), 0);
	ck_assert_uint_eq(files, 2);
	ck_assert_uint_eq(bytes, 14);
	/* One byte changed, same size. */
	ck_assert_int_eq(store_put(s, "b.bin", "123456780", 9, &e), 0);
	expect_bad(dir, ERR_CHECKSUM_MISMATCH, "b.bin: CRC-32C 9bb4494f, recorded e3069283");
	ck_assert_int_eq(store_put(s, "b.bin", "12345678", 8, &e), 0);
	expect_bad(dir, ERR_CHECKSUM_MISMATCH, "b.bin: 8 bytes, recorded 9");
	ck_assert_int_eq(store_remove(s, "b.bin", &e), 0);
	expect_bad(dir, ERR_CHECKSUM_MISMATCH, "b.bin: recorded but missing");
	ck_assert_int_eq(store_remove(s, MANIFEST_SUMS_NAME, &e), 0);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   ": holds a plan manifest (ckptconv-plan.json) but no checksum record "
		   "(ckptconv-sums.json)");
	ck_assert_int_eq(store_remove(s, PARTITION_MANIFEST, &e), 0);
	expect_bad(dir, ERR_DESTINATION_INCOMPLETE,
		   ": holds neither a plan manifest (ckptconv-plan.json) nor a checksum record "
		   "(ckptconv-sums.json)");
	store_remove(s, "a.bin", NULL);
	store_free(s);
	rmdir(dir);
}
END_TEST

static Suite *manifest_suite(void)
{
	Suite *s = suite_create("manifest");
	TCase *tc = tcase_create("manifest");

	tcase_add_test(tc, test_record_round_trip);
	tcase_add_test(tc, test_record_boot_id);
	tcase_add_test(tc, test_record_refused);
	tcase_add_test(tc, test_record_many);
	tcase_add_test(tc, test_record_names);
	tcase_add_test(tc, test_verify);
	tcase_add_test(tc, test_verify_complete);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(manifest_suite());
}
