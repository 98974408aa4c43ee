/* SPDX-License-Identifier: MIT */
/*
 * check_safetensors: the strict header reader refuses every malformed file
 * of SPEC.md's "safetensors rules" with the exact error code and a message
 * naming the file (and the tensor), accepts valid files, and the header
 * writer produces padded headers that the reader parses back unchanged.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "testutil.h"

static char *tmpdir;
static char *st_path;

static void setup(void)
{
	tmpdir = test_mkdtemp();
	st_path = test_path(tmpdir, "model.safetensors");
}

static void teardown(void)
{
	test_rmtree(tmpdir);
	free(st_path);
	free(tmpdir);
}

static void put_le64(unsigned char *b, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
}

/* Writes prefix(header_len) + json + data_len zero bytes to st_path. */
static void write_st_raw(uint64_t header_len, const char *json, size_t data_len)
{
	size_t jlen = strlen(json), total = 8 + jlen + data_len;
	unsigned char *buf = calloc(1, total);

	ck_assert_ptr_nonnull(buf);
	put_le64(buf, header_len);
	memcpy(buf + 8, json, jlen);
	test_write_file(st_path, buf, total);
	free(buf);
}

static void write_st(const char *json, size_t data_len)
{
	write_st_raw(strlen(json), json, data_len);
}

/* Reads st_path from disk and validates it as the checkpoint reader does. */
static int parse_file(struct st_header *h, struct err *e)
{
	unsigned char *buf;
	uint64_t header_len;
	struct stat st;
	FILE *f;
	int rc;

	ck_assert_int_eq(stat(st_path, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	f = fopen(st_path, "rb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	fclose(f);
	memset(h, 0, sizeof(*h));
	rc = st_prefix_parse(st_path, buf, (uint64_t)st.st_size, &header_len, e);
	if (rc == 0)
		rc = st_header_parse(st_path, (const char *)buf + 8, (size_t)header_len, header_len,
				     (uint64_t)st.st_size, h, e);
	free(buf);
	return rc;
}

/* The file must be refused with `code`, naming the file (and `names`). */
static void expect_refused(const char *code, const char *name1, const char *name2)
{
	struct st_header h;
	struct err e = {0};

	ck_assert_int_eq(parse_file(&h, &e), -1);
	ck_assert_str_eq(e.code ? err_name(e.code) : "(none)", code);
	ck_assert_msg(strncmp(e.msg, st_path, strlen(st_path)) == 0,
		      "message does not start with the path: %s", e.msg);
	if (name1)
		ck_assert_msg(strstr(e.msg, name1), "message lacks '%s': %s", name1, e.msg);
	if (name2)
		ck_assert_msg(strstr(e.msg, name2), "message lacks '%s': %s", name2, e.msg);
	ck_assert_uint_eq(h.ntensors, 0);
	ck_assert_ptr_null(h.tensors);
}

START_TEST(test_valid_file)
{
	struct st_header h;
	struct err e = {0};

	write_st("{\"__metadata__\":{\"format\":\"pt\"},"
		 "\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
		 "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
		 "\"z\":{\"dtype\":\"I8\",\"shape\":[0,5],\"data_offsets\":[32,32]}}   ",
		 32);
	ck_assert_int_eq(parse_file(&h, &e), 0);
	ck_assert_int_eq(e.code, ERR_NONE);
	ck_assert_uint_eq(h.ntensors, 3);
	/* data order */
	ck_assert_str_eq(h.tensors[0].name, "a");
	ck_assert_int_eq(h.tensors[0].dtype, DTYPE_BF16);
	ck_assert_int_eq(h.tensors[0].ndim, 1);
	ck_assert_uint_eq(h.tensors[0].shape[0], 4);
	ck_assert_str_eq(h.tensors[1].name, "b");
	ck_assert_uint_eq(h.tensors[1].begin, 8);
	ck_assert_uint_eq(h.tensors[1].end, 32);
	ck_assert_uint_eq(st_tensor_nbytes(&h.tensors[1]), 24);
	ck_assert_str_eq(h.tensors[2].name, "z");
	ck_assert_uint_eq(st_tensor_nbytes(&h.tensors[2]), 0);
	ck_assert_uint_eq(h.data_start, 8 + h.header_len);
	ck_assert_uint_eq(h.file_size, h.data_start + 32);
	st_header_fini(&h);
}
END_TEST

START_TEST(test_empty_header_and_data)
{
	struct st_header h;
	struct err e = {0};

	write_st("{}", 0);
	ck_assert_int_eq(parse_file(&h, &e), 0);
	ck_assert_uint_eq(h.ntensors, 0);
	st_header_fini(&h);
}
END_TEST

START_TEST(test_truncated_file)
{
	test_write_file(st_path, "\x10\x00\x00", 3);
	expect_refused("file_truncated", NULL, NULL);
}
END_TEST

START_TEST(test_header_larger_than_file)
{
	write_st_raw(200, "{}", 0);
	expect_refused("header_out_of_bounds", "200", NULL);
}
END_TEST

START_TEST(test_header_too_large)
{
	write_st_raw(100000001ULL, "{}", 0);
	expect_refused("header_too_large", "100000001", NULL);
}
END_TEST

START_TEST(test_header_not_object)
{
	write_st("[1,2]", 0);
	expect_refused("header_not_object", NULL, NULL);
}
END_TEST

START_TEST(test_header_string_not_object)
{
	write_st("\"abc\"", 0);
	expect_refused("header_not_object", NULL, NULL);
}
END_TEST

START_TEST(test_header_invalid_json)
{
	write_st("{\"a\":{\"dtype\":\"F32\",", 0);
	expect_refused("header_invalid_json", NULL, NULL);
}
END_TEST

/* The header is read one member at a time: every way the members could
 * be split wrongly is still invalid JSON, and names holding the
 * characters that separate members are read whole. */
START_TEST(test_header_members)
{
	static const char *const invalid[] = {
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}",
		"{,\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},,"
		"\"v\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]]}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x",
		"{\"w\" {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]} \"v\":1}",
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}}",
		"{\"w\\\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
	};
	struct st_header h;
	struct err e = {0};
	size_t i;

	for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		write_st(invalid[i], 2);
		expect_refused("header_invalid_json", NULL, NULL);
	}
	/* A key twice inside one tensor's entry. */
	write_st("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
	expect_refused("duplicate_tensor", "dtype", NULL);
	/* __metadata__ twice. */
	write_st("{\"__metadata__\":{},\"__metadata__\":{},"
		 "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		 1);
	expect_refused("duplicate_tensor", "__metadata__", NULL);
	/* Separators and escapes inside names, whitespace around members. */
	write_st(" {\n \"a,}{]\\\"\" : {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]} ,\t"
		 "\"__metadata__\":{\"k\":\"},\"}, \"b\\u0041\":{\"dtype\":\"U8\",\"shape\":[1],"
		 "\"data_offsets\":[1,2]}\r\n}  ",
		 2);
	ck_assert_int_eq(parse_file(&h, &e), -1); /* must start with '{' */
	ck_assert_str_eq(err_name(e.code), "header_not_object");
	write_st("{\n \"a,}{]\\\"\" : {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]} ,\t"
		 "\"__metadata__\":{\"k\":\"},\"}, \"b\\u0041\":{\"dtype\":\"U8\",\"shape\":[1],"
		 "\"data_offsets\":[1,2]}\r\n}  ",
		 2);
	ck_assert_int_eq(parse_file(&h, &e), 0);
	ck_assert_uint_eq(h.ntensors, 2);
	ck_assert_str_eq(h.tensors[0].name, "a,}{]\"");
	ck_assert_str_eq(h.tensors[1].name, "bA");
	st_header_fini(&h);
	/* No member at all. */
	write_st("{ }", 0);
	ck_assert_int_eq(parse_file(&h, &e), 0);
	ck_assert_uint_eq(h.ntensors, 0);
	st_header_fini(&h);
}
END_TEST

START_TEST(test_duplicate_names)
{
	write_st("{\"layers.0.w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		 "\"layers.0.w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
		 2);
	expect_refused("duplicate_tensor", "tensor 'layers.0.w' appears twice", NULL);
}
END_TEST

START_TEST(test_unknown_dtype)
{
	write_st("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16);
	expect_refused("unknown_dtype", "'w'", "F128");
}
END_TEST

START_TEST(test_negative_shape)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0);
	expect_refused("invalid_shape", "'w'", NULL);
}
END_TEST

START_TEST(test_float_shape)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2);
	expect_refused("invalid_shape", "'w'", NULL);
}
END_TEST

START_TEST(test_string_shape)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", 2);
	expect_refused("invalid_shape", "'w'", NULL);
}
END_TEST

START_TEST(test_too_many_dims)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
	expect_refused("invalid_shape", "'w'", NULL);
}
END_TEST

START_TEST(test_invalid_offsets)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4);
	expect_refused("invalid_offsets", "'w'", NULL);
}
END_TEST

START_TEST(test_offsets_not_pair)
{
	write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0]}}", 4);
	expect_refused("invalid_offsets", "'w'", NULL);
}
END_TEST

START_TEST(test_offsets_mismatch)
{
	write_st("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
	/* both numbers: the span (4) and shape x size (8) */
	expect_refused("offsets_mismatch", "'w'", "span 4 bytes but shape x F32 size is 8 bytes");
}
END_TEST

START_TEST(test_shape_overflow)
{
	write_st("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
		 "\"data_offsets\":[0,0]}}",
		 0);
	expect_refused("offsets_mismatch", "'w'", "overflow");
}
END_TEST

START_TEST(test_overlap)
{
	write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
		 "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
		 12);
	expect_refused("overlapping_tensors", "'a'", "'b'");
}
END_TEST

START_TEST(test_hole)
{
	write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
		 12);
	expect_refused("data_hole", "[4, 8)", "'b'");
}
END_TEST

START_TEST(test_offsets_past_end)
{
	write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 4);
	expect_refused("offsets_out_of_bounds", "'a'", NULL);
}
END_TEST

START_TEST(test_trailing_bytes)
{
	write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8);
	expect_refused("trailing_bytes", "4 bytes", NULL);
}
END_TEST

START_TEST(test_metadata_not_strings)
{
	write_st("{\"__metadata__\":{\"format\":1}}", 0);
	expect_refused("invalid_metadata", "format", NULL);
}
END_TEST

START_TEST(test_metadata_not_object)
{
	write_st("{\"__metadata__\":[\"pt\"]}", 0);
	expect_refused("invalid_metadata", NULL, NULL);
}
END_TEST

START_TEST(test_golden_headers_parse)
{
	static const char *const files[] = {"hf/model-00001-of-00005.safetensors",
					    "native/model.safetensors"};
	size_t i;

	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *golden, *dst;
		FILE *f;
		long len;
		char *buf;

		if (asprintf(&golden, "%s/tiny/%s", test_golden_dir(), files[i]) < 0)
			abort();
		f = fopen(golden, "rb");
		ck_assert_msg(f != NULL, "cannot open %s", golden);
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		rewind(f);
		buf = malloc((size_t)len);
		ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
		fclose(f);
		dst = st_path;
		test_write_file(dst, buf, (size_t)len);
		free(buf);
		free(golden);
		{
			struct st_header h;
			struct err e = {0};

			ck_assert_msg(parse_file(&h, &e) == 0, "%s", e.msg);
			ck_assert_uint_gt(h.ntensors, 0);
			st_header_fini(&h);
		}
	}
}
END_TEST

static void parse_built(const char *buf, size_t len, struct st_header *h)
{
	uint64_t header_len;
	struct err e = {0};

	ck_assert_int_eq(st_prefix_parse("built", (const unsigned char *)buf, len, &header_len, &e), 0);
	ck_assert_int_eq(st_header_parse("built", buf + 8, (size_t)header_len, header_len, len, h, &e),
			 0);
}

START_TEST(test_build_round_trip)
{
	struct st_tensor t[3] = {
		{.name = "model.layers.10.w", .dtype = DTYPE_BF16, .ndim = 2, .shape = {3, 5}},
		{.name = "q\"uote\\back/slash\xc3\xa9", .dtype = DTYPE_F32, .ndim = 1, .shape = {7}},
		{.name = "scalar", .dtype = DTYPE_I64, .ndim = 0},
	};
	struct st_header h;
	struct err e = {0};
	size_t len, total, i;
	char *hdr, *file;

	ck_assert_int_eq(st_header_build(t, 3, &hdr, &len, &e), 0);
	ck_assert_uint_eq(len % 8, 0);
	ck_assert_mem_eq(hdr + 8, "{\"__metadata__\":{\"format\":\"pt\"},\"model.layers.10.w\":",
			 strlen("{\"__metadata__\":{\"format\":\"pt\"},\"model.layers.10.w\":"));
	ck_assert_ptr_null(memchr(hdr + 8, '\n', len - 8));
	/* compact until the closing brace, then only padding spaces */
	{
		const char *end = memrchr(hdr + 8, '}', len - 8);

		ck_assert_ptr_nonnull(end);
		for (i = (size_t)(end - hdr) + 1; i < len; i++)
			ck_assert_int_eq(hdr[i], ' ');
		ck_assert_ptr_null(memmem(hdr + 8, (size_t)(end - hdr) - 8, ", ", 2));
	}
	total = len + 30 + 28 + 8;
	file = calloc(1, total);
	memcpy(file, hdr, len);
	parse_built(file, total, &h);
	ck_assert_uint_eq(h.ntensors, 3);
	/* data order equals the order given, contiguous */
	ck_assert_str_eq(h.tensors[0].name, t[0].name);
	ck_assert_uint_eq(h.tensors[0].begin, 0);
	ck_assert_uint_eq(h.tensors[0].end, 30);
	ck_assert_str_eq(h.tensors[1].name, t[1].name);
	ck_assert_uint_eq(h.tensors[1].begin, 30);
	ck_assert_uint_eq(h.tensors[1].end, 58);
	ck_assert_str_eq(h.tensors[2].name, "scalar");
	ck_assert_int_eq(h.tensors[2].ndim, 0);
	ck_assert_uint_eq(h.tensors[2].end, 66);
	ck_assert_int_eq(h.tensors[1].dtype, DTYPE_F32);
	ck_assert_uint_eq(h.tensors[0].shape[1], 5);
	st_header_fini(&h);
	free(file);
	free(hdr);
}
END_TEST

START_TEST(test_build_padding)
{
	struct st_tensor t = {.name = NULL, .dtype = DTYPE_U8, .ndim = 1, .shape = {1}};
	char name[40];
	size_t n, len, pad;
	char *hdr;
	struct err e = {0};

	/* names of every length mod 8 give every amount of padding */
	for (n = 1; n <= 16; n++) {
		memset(name, 'x', n);
		name[n] = '\0';
		t.name = name;
		ck_assert_int_eq(st_header_build(&t, 1, &hdr, &len, &e), 0);
		ck_assert_uint_eq(len % 8, 0);
		pad = 0;
		while (hdr[len - 1 - pad] == ' ')
			pad++;
		ck_assert_uint_lt(pad, 8);
		ck_assert_int_eq(hdr[len - 1 - pad], '}');
		{
			uint64_t n_le = 0;
			int i;

			for (i = 7; i >= 0; i--)
				n_le = (n_le << 8) | (unsigned char)hdr[i];
			ck_assert_uint_eq(n_le, len - 8);
		}
		free(hdr);
	}
}
END_TEST

START_TEST(test_build_duplicate)
{
	struct st_tensor t[2] = {
		{.name = "w", .dtype = DTYPE_U8, .ndim = 1, .shape = {1}},
		{.name = "w", .dtype = DTYPE_U8, .ndim = 1, .shape = {1}},
	};
	struct err e = {0};
	size_t len;
	char *hdr = NULL;

	ck_assert_int_eq(st_header_build(t, 2, &hdr, &len, &e), -1);
	ck_assert_str_eq(err_name(e.code), "duplicate_tensor");
	ck_assert_str_eq(e.tensor, "w");
	ck_assert_ptr_null(hdr);
}
END_TEST

/* The format's dtypes (huggingface/safetensors, Dtype::bitsize): every
 * name, its bits, and its bytes per element where it has whole ones. */
START_TEST(test_dtype_table)
{
	static const struct {
		const char *name;
		unsigned bits;
	} want[] = {
		{"BOOL", 8}, {"F4", 4},	     {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
		{"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
		{"U16", 16}, {"F16", 16},    {"BF16", 16},   {"I32", 32},    {"U32", 32},
		{"F32", 32}, {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64},
	};
	size_t i;
	uint64_t bytes;

	/* every dtype of the format, and nothing else */
	ck_assert_int_eq(DTYPE_COUNT - 1, (int)(sizeof(want) / sizeof(want[0])));
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		enum dtype t = dtype_from_name(want[i].name);

		ck_assert_msg(t != DTYPE_INVALID, "%s unknown", want[i].name);
		ck_assert_str_eq(dtype_name(t), want[i].name);
		ck_assert_uint_eq(dtype_bits(t), want[i].bits);
		ck_assert_uint_eq(dtype_size(t), want[i].bits % 8 ? 0 : want[i].bits / 8);
		ck_assert_int_eq(dtype_copy_only(t),
				 want[i].bits % 8 != 0 || strcmp(want[i].name, "C64") == 0);
		ck_assert_int_eq(dtype_element(t), want[i].bits % 8 ? DTYPE_U8 : t);
	}
	ck_assert_int_eq(dtype_from_name("F8_E4M3FNUZ"), DTYPE_INVALID);
	ck_assert_int_eq(dtype_from_name("f4"), DTYPE_INVALID);
	ck_assert_uint_eq(dtype_bits(DTYPE_INVALID), 0);
	/* whole bytes only */
	ck_assert(dtype_bytes(DTYPE_F4, 6, &bytes));
	ck_assert_uint_eq(bytes, 3);
	ck_assert(!dtype_bytes(DTYPE_F4, 5, &bytes));
	ck_assert(dtype_bytes(DTYPE_F6_E2M3, 4, &bytes));
	ck_assert_uint_eq(bytes, 3);
	ck_assert(dtype_bytes(DTYPE_F6_E3M2, 8, &bytes));
	ck_assert_uint_eq(bytes, 6);
	ck_assert(!dtype_bytes(DTYPE_F6_E3M2, 2, &bytes));
	ck_assert(dtype_bytes(DTYPE_C64, 3, &bytes));
	ck_assert_uint_eq(bytes, 24);
	ck_assert(dtype_bytes(DTYPE_F4, 0, &bytes));
	ck_assert_uint_eq(bytes, 0);
	ck_assert(!dtype_bytes(DTYPE_F32, UINT64_MAX / 2, &bytes));
	ck_assert(!dtype_bytes(DTYPE_F4, UINT64_MAX / 2, &bytes));
	ck_assert(!dtype_bytes(DTYPE_INVALID, 1, &bytes));
}
END_TEST

/* Tensors of the dtypes narrower than a byte, and C64, parse with their
 * sizes in bits. */
START_TEST(test_subbyte_and_complex)
{
	struct st_header h;
	struct err e = {0};

	write_st("{\"f4\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[0,3]},"
		 "\"e2m3\":{\"dtype\":\"F6_E2M3\",\"shape\":[8],\"data_offsets\":[3,9]},"
		 "\"e3m2\":{\"dtype\":\"F6_E3M2\",\"shape\":[2,2],\"data_offsets\":[9,12]},"
		 "\"c\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[12,20]}}",
		 20);
	ck_assert_int_eq(parse_file(&h, &e), 0);
	ck_assert_uint_eq(h.ntensors, 4);
	ck_assert_int_eq(h.tensors[0].dtype, DTYPE_F4);
	ck_assert_uint_eq(st_tensor_nbytes(&h.tensors[0]), 3);
	ck_assert_int_eq(h.tensors[1].dtype, DTYPE_F6_E2M3);
	ck_assert_uint_eq(st_tensor_nbytes(&h.tensors[1]), 6);
	ck_assert_int_eq(h.tensors[2].dtype, DTYPE_F6_E3M2);
	ck_assert_int_eq(h.tensors[3].dtype, DTYPE_C64);
	ck_assert_uint_eq(st_tensor_nbytes(&h.tensors[3]), 8);
	st_header_fini(&h);
}
END_TEST

START_TEST(test_subbyte_not_whole_bytes)
{
	/* 3 x 4 bits: 1.5 bytes */
	write_st("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2);
	expect_refused("invalid_tensor", "'w' holds 3 elements of F4 (4 bits each), 12 bits",
		       "not a whole number of bytes");
}
END_TEST

START_TEST(test_subbyte6_not_whole_bytes)
{
	write_st("{\"w\":{\"dtype\":\"F6_E3M2\",\"shape\":[1,2],\"data_offsets\":[0,2]}}", 2);
	expect_refused("invalid_tensor", "'w' holds 2 elements of F6_E3M2 (6 bits each)", NULL);
}
END_TEST

START_TEST(test_subbyte_offsets_mismatch)
{
	/* 4 elements of F4 are 2 bytes, not 4 */
	write_st("{\"w\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
	expect_refused("offsets_mismatch", "'w'", "span 4 bytes but shape x F4 size is 2 bytes");
}
END_TEST

/* Built headers give sub-byte tensors their whole bytes, and refuse a
 * tensor that has none. */
START_TEST(test_build_subbyte)
{
	struct st_tensor t[2] = {
		{.name = "f4", .dtype = DTYPE_F4, .ndim = 2, .shape = {3, 2}},
		{.name = "c", .dtype = DTYPE_C64, .ndim = 1, .shape = {2}},
	};
	struct st_tensor odd = {.name = "odd", .dtype = DTYPE_F4, .ndim = 1, .shape = {3}};
	struct st_header h;
	struct err e = {0};
	size_t len;
	char *hdr, *file;

	ck_assert_int_eq(st_header_build(t, 2, &hdr, &len, &e), 0);
	file = calloc(1, len + 3 + 16);
	memcpy(file, hdr, len);
	parse_built(file, len + 3 + 16, &h);
	ck_assert_uint_eq(h.tensors[0].end, 3);
	ck_assert_uint_eq(h.tensors[1].begin, 3);
	ck_assert_uint_eq(h.tensors[1].end, 19);
	st_header_fini(&h);
	free(file);
	free(hdr);
	hdr = NULL;
	ck_assert_int_eq(st_header_build(&odd, 1, &hdr, &len, &e), -1);
	ck_assert_str_eq(err_name(e.code), "plan_invalid");
	ck_assert_ptr_null(hdr);
}
END_TEST

static Suite *safetensors_suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *bad = tcase_create("bad_input");
	TCase *good = tcase_create("valid");

	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_add_checked_fixture(good, setup, teardown);
	tcase_add_test(good, test_valid_file);
	tcase_add_test(good, test_empty_header_and_data);
	tcase_add_test(good, test_golden_headers_parse);
	tcase_add_test(good, test_build_round_trip);
	tcase_add_test(good, test_build_padding);
	tcase_add_test(good, test_build_duplicate);
	tcase_add_test(good, test_dtype_table);
	tcase_add_test(good, test_subbyte_and_complex);
	tcase_add_test(good, test_build_subbyte);
	tcase_add_test(bad, test_subbyte_not_whole_bytes);
	tcase_add_test(bad, test_subbyte6_not_whole_bytes);
	tcase_add_test(bad, test_subbyte_offsets_mismatch);
	tcase_add_test(bad, test_truncated_file);
	tcase_add_test(bad, test_header_larger_than_file);
	tcase_add_test(bad, test_header_too_large);
	tcase_add_test(bad, test_header_not_object);
	tcase_add_test(bad, test_header_string_not_object);
	tcase_add_test(bad, test_header_invalid_json);
	tcase_add_test(bad, test_duplicate_names);
	tcase_add_test(bad, test_unknown_dtype);
	tcase_add_test(bad, test_negative_shape);
	tcase_add_test(bad, test_float_shape);
	tcase_add_test(bad, test_string_shape);
	tcase_add_test(bad, test_too_many_dims);
	tcase_add_test(bad, test_invalid_offsets);
	tcase_add_test(bad, test_offsets_not_pair);
	tcase_add_test(bad, test_offsets_mismatch);
	tcase_add_test(bad, test_shape_overflow);
	tcase_add_test(bad, test_overlap);
	tcase_add_test(bad, test_hole);
	tcase_add_test(bad, test_offsets_past_end);
	tcase_add_test(bad, test_trailing_bytes);
	tcase_add_test(bad, test_metadata_not_strings);
	tcase_add_test(bad, test_metadata_not_object);
	tcase_add_test(bad, test_header_members);
	suite_add_tcase(s, good);
	suite_add_tcase(s, bad);
	return s;
}

int main(void)
{
	return test_run_suite(safetensors_suite());
}
