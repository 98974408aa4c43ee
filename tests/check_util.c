/* SPDX-License-Identifier: MIT */
/*
 * check_util: the size syntax, natural ordering, overflow-checked
 * arithmetic, string vectors, the growable buffer, hex and SHA-256 (FIPS
 * 180-2 test vectors), the error record, and that the error catalogue and
 * docs/errors.md list the same codes.
 */
#include <check.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/util.h"
#include "testutil.h"

static void expect_size(const char *text, uint64_t expect)
{
	struct err e = {0};
	uint64_t v = 0;

	ck_assert_msg(size_parse(text, &v, &e) == 0, "'%s': %s", text, e.msg);
	ck_assert_msg(v == expect, "'%s' gave %llu, not %llu", text, (unsigned long long)v,
		      (unsigned long long)expect);
}

static void expect_bad_size(const char *text)
{
	struct err e = {0};
	uint64_t v = 0;

	ck_assert_int_eq(size_parse(text, &v, &e), -1);
	ck_assert_str_eq(err_name(e.code), "invalid_size");
	ck_assert_msg(strstr(e.msg, text), "message does not quote '%s': %s", text, e.msg);
}

START_TEST(test_size_units)
{
	expect_size("123", 123);
	expect_size("0", 0);
	expect_size("5GB", 5000000000ULL);
	expect_size("5gb", 5000000000ULL);
	expect_size("500MiB", 500ULL << 20);
	expect_size("40kb", 40000);
	expect_size("40KiB", 40960);
	expect_size("2TB", 2000000000000ULL);
	expect_size("1tib", 1ULL << 40);
	expect_size("3MB", 3000000);
	expect_size("1GiB", 1ULL << 30);
	expect_size("18446744073709551615", UINT64_MAX);
}
END_TEST

START_TEST(test_size_bad)
{
	expect_bad_size("5XB");
	expect_bad_size("GB");
	expect_bad_size("-5GB");
	expect_bad_size("5 GB");
	expect_bad_size("1.5GB");
	expect_bad_size("");
}
END_TEST

START_TEST(test_size_overflow)
{
	expect_bad_size("18446744073709551616");
	expect_bad_size("20000000TB");
	expect_bad_size("99999999999999999999999");
}
END_TEST

START_TEST(test_size_format)
{
	char buf[32];

	size_format(1769472000, buf, sizeof(buf));
	ck_assert_str_eq(buf, "1.77 GB");
	size_format(999, buf, sizeof(buf));
	ck_assert_str_eq(buf, "999 B");
}
END_TEST

START_TEST(test_natural_compare)
{
	ck_assert_int_lt(natural_compare("layers.2.w", "layers.10.w"), 0);
	ck_assert_int_gt(natural_compare("layers.10.w", "layers.2.w"), 0);
	ck_assert_int_eq(natural_compare("layers.10.w", "layers.10.w"), 0);
	ck_assert_int_lt(natural_compare("a", "b"), 0);
	ck_assert_int_lt(natural_compare("a", "a.b"), 0);
	ck_assert_int_gt(natural_compare("a.b", "a"), 0);
	ck_assert_int_lt(natural_compare("experts.9.down", "experts.10.down"), 0);
	ck_assert_int_lt(natural_compare("x99", "x100"), 0);
	/* digits against letters: plain byte order */
	ck_assert_int_lt(natural_compare("a1", "ab"), 0);
	ck_assert_int_lt(natural_compare("", "a"), 0);
	ck_assert_int_eq(natural_compare("", ""), 0);
	/* numbers far past 64 bits still compare by value */
	ck_assert_int_lt(natural_compare("n.99999999999999999999999", "n.100000000000000000000000"), 0);
}
END_TEST

START_TEST(test_natural_sort_sequence)
{
	const char *sorted[] = {"model.embed", "model.layers.0.a", "model.layers.1.a",
				"model.layers.1.b", "model.layers.2.a", "model.layers.10.a",
				"model.layers.10.experts.2.w", "model.layers.10.experts.11.w",
				"model.layers.100.a", "model.norm"};
	size_t i, j, n = sizeof(sorted) / sizeof(sorted[0]);

	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++) {
			int c = natural_compare(sorted[i], sorted[j]);

			ck_assert_msg((i < j && c < 0) || (i == j && c == 0) || (i > j && c > 0),
				      "%s vs %s gave %d", sorted[i], sorted[j], c);
		}
}
END_TEST

START_TEST(test_u64_arith)
{
	uint64_t v;

	ck_assert(u64_mul(1ULL << 32, 1ULL << 31, &v));
	ck_assert_uint_eq(v, 1ULL << 63);
	ck_assert(!u64_mul(1ULL << 32, 1ULL << 32, &v));
	ck_assert(u64_add(UINT64_MAX - 1, 1, &v));
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert(!u64_add(UINT64_MAX, 1, &v));
}
END_TEST

START_TEST(test_strvec)
{
	struct strvec v = {0};
	int i;

	for (i = 0; i < 20; i++)
		ck_assert_int_eq(strvec_pushf(&v, "item %d", i), 0);
	ck_assert_uint_eq(v.len, 20);
	ck_assert_str_eq(v.items[0], "item 0");
	ck_assert_str_eq(v.items[19], "item 19");
	strvec_fini(&v);
	ck_assert_uint_eq(v.len, 0);
	ck_assert_ptr_null(v.items);
}
END_TEST

START_TEST(test_err_first_wins)
{
	struct err e = {0};

	ck_assert_int_eq(err_set(&e, ERR_IO_ERROR, "%s: first", "f"), -1);
	ck_assert_int_eq(err_set(&e, ERR_CANCELLED, "second"), -1);
	ck_assert_str_eq(err_name(e.code), "io_error");
	ck_assert_str_eq(e.msg, "f: first");
	err_set_tensor(&e, "t1");
	err_set_tensor(&e, "t2");
	ck_assert_str_eq(e.tensor, "t1");
	err_clear(&e);
	ck_assert(!err_is_set(&e));
	ck_assert_int_eq(err_set_errno(&e, ERR_IO_ERROR, 2, "x"), -1);
	ck_assert_int_eq(e.errnum, 2);
	ck_assert_ptr_nonnull(strstr(e.msg, "x: "));
	ck_assert_int_eq(err_set(NULL, ERR_IO_ERROR, "ignored"), -1);
	ck_assert_int_eq(err_http_status(ERR_INSUFFICIENT_SPACE), 507);
	ck_assert_int_eq(err_http_status(err_code_parse("no_such_code")), 500);
}
END_TEST

static char *read_errors_doc(void)
{
	const char *path = TOP_SRCDIR "/docs/errors.md";
	FILE *f = fopen(path, "rb");
	char *text;
	long len;

	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	ck_assert_uint_eq(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	return text;
}

static bool is_code_char(char c)
{
	return islower((unsigned char)c) || isdigit((unsigned char)c) || c == '_';
}

/* `word` occurs in text as a whole snake_case word. */
static bool contains_word(const char *text, const char *word)
{
	size_t len = strlen(word);
	const char *p;

	for (p = strstr(text, word); p; p = strstr(p + 1, word))
		if ((p == text || !is_code_char(p[-1])) && !is_code_char(p[len]))
			return true;
	return false;
}

START_TEST(test_catalogue_documented)
{
	const struct err_entry *codes;
	char *doc = read_errors_doc();
	size_t n, i;

	codes = err_catalogue(&n);
	ck_assert_uint_gt(n, 0);
	for (i = 0; i < n; i++) {
		ck_assert_msg(contains_word(doc, codes[i].code), "docs/errors.md lacks '%s'",
			      codes[i].code);
		ck_assert_int_ge(codes[i].http_status, 400);
		ck_assert_int_le(codes[i].http_status, 599);
		ck_assert_str_ne(codes[i].description, "");
	}
	free(doc);
}
END_TEST

/* Every table row of docs/errors.md that starts with a `code` names a code
 * of the catalogue. */
START_TEST(test_documented_codes_exist)
{
	char *doc = read_errors_doc(), *line, *save = NULL, word[128];

	for (line = strtok_r(doc, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *p = line;
		size_t len = 0;

		if (*p != '|')
			continue;
		p++;
		while (*p == ' ')
			p++;
		if (*p != '`')
			continue;
		p++;
		while (is_code_char(p[len]) && len < sizeof(word) - 1)
			len++;
		if (p[len] != '`' || len == 0)
			continue;
		memcpy(word, p, len);
		word[len] = '\0';
		ck_assert_msg((err_code_parse(word) != ERR_NONE), "docs/errors.md lists '%s', not in the catalogue",
			      word);
	}
	free(doc);
}
END_TEST

/* Runs log calls with stderr sent to a file; returns what was written. */
static char *capture_log(int json)
{
	char *dir = test_mkdtemp(), *path = test_path(dir, "stderr"), *text;
	json_t *fields = json_pack("{s:s, s:i}", "job", "j-1", "msg", 5);
	int saved = dup(STDERR_FILENO), fd;
	FILE *f;
	long len;

	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	close(fd);
	log_init(LOG_INFO, json);
	log_msg(LOG_DEBUG, NULL, "hidden %d", 1);
	log_msg(LOG_WARN, fields, "disk %s", "slow");
	log_error("failed \"%s\"", "x");
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	json_decref(fields);
	f = fopen(path, "rb");
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	ck_assert_uint_eq(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	test_rmtree(dir);
	free(path);
	free(dir);
	return text;
}

START_TEST(test_log_json_lines)
{
	char *text = capture_log(1), *nl;
	json_t *line;
	const char *ts;

	ck_assert_ptr_null(strstr(text, "hidden"));
	nl = strchr(text, '\n');
	ck_assert_ptr_nonnull(nl);
	*nl = '\0';
	line = json_loads(text, 0, NULL);
	ck_assert_msg(line != NULL, "not JSON: %s", text);
	ck_assert_str_eq(json_string_value(json_object_get(line, "level")), "warn");
	ck_assert_str_eq(json_string_value(json_object_get(line, "msg")), "disk slow");
	ck_assert_str_eq(json_string_value(json_object_get(line, "job")), "j-1");
	ts = json_string_value(json_object_get(line, "ts"));
	ck_assert_ptr_nonnull(ts);
	/* 2024-05-01T12:00:00.123Z */
	ck_assert_uint_eq(strlen(ts), 24);
	ck_assert_int_eq(ts[10], 'T');
	ck_assert_int_eq(ts[19], '.');
	ck_assert_int_eq(ts[23], 'Z');
	json_decref(line);
	line = json_loads(nl + 1, 0, NULL);
	ck_assert_ptr_nonnull(line);
	ck_assert_str_eq(json_string_value(json_object_get(line, "level")), "error");
	ck_assert_str_eq(json_string_value(json_object_get(line, "msg")), "failed \"x\"");
	json_decref(line);
	free(text);
}
END_TEST

START_TEST(test_log_plain)
{
	char *text = capture_log(0);

	ck_assert_str_eq(text, "ckptconv: warn: disk slow job=\"j-1\" msg=5\n"
			       "ckptconv: error: failed \"x\"\n");
	free(text);
}
END_TEST

/* FIPS 180-2, appendix B: "abc", the 448-bit message, and the empty one. */
START_TEST(test_sha256_vectors)
{
	static const char two_blocks[] =
		"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char hex[SHA256_HEX_SIZE];
	struct sha256_ctx *c;
	unsigned char raw[SHA256_BYTES];

	sha256_hex("abc", 3, hex);
	ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	sha256_hex(two_blocks, strlen(two_blocks), hex);
	ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	sha256_hex("", 0, hex);
	ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	/* In pieces, split inside a block, gives the same digest. */
	c = sha256_begin();
	sha256_add(c, two_blocks, 5);
	sha256_add(c, two_blocks + 5, 0);
	sha256_add(c, two_blocks + 5, strlen(two_blocks) - 5);
	sha256_finish_hex(c, hex);
	ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	sha256("abc", 3, raw);
	ck_assert_uint_eq(raw[0], 0xba);
	ck_assert_uint_eq(raw[31], 0xad);
}
END_TEST

START_TEST(test_hex_encode)
{
	static const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
	char out[2 * sizeof(bytes) + 1];

	hex_encode(bytes, sizeof(bytes), out);
	ck_assert_str_eq(out, "000fa5ff");
	hex_encode(bytes, 0, out);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_buf)
{
	struct buf b = {0};
	size_t i;

	buf_clear(&b); /* empty and never written: still fine */
	ck_assert_ptr_null(b.data);
	buf_puts(&b, "ab");
	buf_append(&b, "c\0d", 3); /* bytes, a NUL among them */
	buf_printf(&b, "%d-%s", 42, "x");
	ck_assert_uint_eq(b.len, 9);
	ck_assert(memcmp(b.data, "abc\0d42-x", 10) == 0); /* kept NUL-terminated */
	buf_clear(&b);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_str_eq(b.data, "");
	for (i = 0; i < 10000; i++) /* grows past its first capacity many times */
		buf_append(&b, "0123456789", 10);
	ck_assert_uint_eq(b.len, 100000);
	ck_assert(memcmp(b.data + 99990, "0123456789", 11) == 0);
	buf_fini(&b);
	ck_assert_ptr_null(b.data);
	ck_assert_uint_eq(b.len, 0);
	buf_json_string(&b, "q\"\\\x1f");
	ck_assert_str_eq(b.data, "\"q\\\"\\\\\\u001f\"");
	buf_fini(&b);
}
END_TEST

/* s (n bytes) through buf_append_printable. */
static char *printable(const char *s, size_t n)
{
	struct buf b = {0};

	buf_append_printable(&b, s, n);
	return b.data ? b.data : xstrdup("");
}

#define ASSERT_PRINTABLE(in, want)                          \
	do {                                                \
		char *got_ = printable(in, sizeof(in) - 1); \
		ck_assert_str_eq(got_, want);               \
		free(got_);                                 \
	} while (0)

START_TEST(test_printable)
{
	/* printable ASCII and well-formed UTF-8 are kept */
	ASSERT_PRINTABLE("", "");
	ASSERT_PRINTABLE("/data/out-a team=nlp ~!", "/data/out-a team=nlp ~!");
	ASSERT_PRINTABLE("\xc2\xa0\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf",
			 "\xc2\xa0\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf");
	/* C0 controls, DEL and the backslash */
	ASSERT_PRINTABLE("a\x1b[31mRED\x07", "a\\x1b[31mRED\\x07");
	ASSERT_PRINTABLE("\x1b]52;c;cHduZWQ=\x07\r\x1b[K\n\t",
			 "\\x1b]52;c;cHduZWQ=\\x07\\x0d\\x1b[K\\x0a\\x09");
	ASSERT_PRINTABLE("\x00\x1f\x7f", "\\x00\\x1f\\x7f");
	ASSERT_PRINTABLE("C:\\x1b", "C:\\\\x1b");
	/* a backslash is doubled only where it could start an escape */
	ASSERT_PRINTABLE("(a)\\1 \\d+\\", "(a)\\1 \\d+\\");
	ASSERT_PRINTABLE("\\\\x41", "\\\\\\\\x41");
	ASSERT_PRINTABLE("\\\x1b", "\\\\\\x1b");
	ASSERT_PRINTABLE("\\\xc3\xa9", "\\\\\xc3\xa9");
	/* C1 controls U+0080-U+009F: CSI, OSC, ST */
	ASSERT_PRINTABLE("\xc2\x9b"
			 "2J\xc2\x9d"
			 "0;t\xc2\x9c\xc2\x80",
			 "\\xc2\\x9b2J\\xc2\\x9d0;t\\xc2\\x9c\\xc2\\x80");
	/* bytes outside well-formed UTF-8: each one on its own */
	ASSERT_PRINTABLE("\x9b"
			 "1m\xff\xfe",
			 "\\x9b1m\\xff\\xfe");
	ASSERT_PRINTABLE("\xc0\x9b\xc1\xbf", "\\xc0\\x9b\\xc1\\xbf"); /* overlong */
	ASSERT_PRINTABLE("\xe0\x80\x9b", "\\xe0\\x80\\x9b");	      /* overlong */
	ASSERT_PRINTABLE("\xf0\x80\x80\x9b", "\\xf0\\x80\\x80\\x9b"); /* overlong */
	ASSERT_PRINTABLE("\xed\xa0\x80", "\\xed\\xa0\\x80");	      /* a surrogate */
	ASSERT_PRINTABLE("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* above U+10FFFF */
	ASSERT_PRINTABLE("\xe4\xb8", "\\xe4\\xb8");		      /* cut short */
	ASSERT_PRINTABLE("\xe4\x1b[2J", "\\xe4\\x1b[2J");	      /* cut by ESC */
	ASSERT_PRINTABLE("\xc3", "\\xc3");
	/* bidirectional overrides and zero-width characters: every byte */
	ASSERT_PRINTABLE("out\xe2\x80\xae"
			 "fig.safetensors", "out\\xe2\\x80\\xaefig.safetensors");
	ASSERT_PRINTABLE("a\xe2\x80\x8b"
			 "b\xe2\x81\xa6"
			 "c\xe2\x81\xa9\xef\xbb\xbf",
			 "a\\xe2\\x80\\x8bb\\xe2\\x81\\xa6c\\xe2\\x81\\xa9\\xef\\xbb\\xbf");
	ASSERT_PRINTABLE("\xd8\x9c\xe2\x80\xa8", "\\xd8\\x9c\\xe2\\x80\\xa8");
	/* their neighbours are kept */
	ASSERT_PRINTABLE("\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xaf\xe2\x81\xa5\xef\xbb\xbe",
			 "\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xaf\xe2\x81\xa5\xef\xbb\xbe");
}
END_TEST

static Suite *util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *sizes = tcase_create("sizes");
	TCase *names = tcase_create("names");
	TCase *errors = tcase_create("errors");
	TCase *logs = tcase_create("log");

	tcase_add_test(sizes, test_size_units);
	tcase_add_test(sizes, test_size_bad);
	tcase_add_test(sizes, test_size_overflow);
	tcase_add_test(sizes, test_size_format);
	tcase_add_test(sizes, test_u64_arith);
	tcase_add_test(names, test_natural_compare);
	tcase_add_test(names, test_natural_sort_sequence);
	tcase_add_test(names, test_strvec);
	tcase_add_test(names, test_buf);
	tcase_add_test(names, test_printable);
	tcase_add_test(names, test_hex_encode);
	tcase_add_test(names, test_sha256_vectors);
	tcase_add_test(errors, test_err_first_wins);
	tcase_add_test(errors, test_catalogue_documented);
	tcase_add_test(errors, test_documented_codes_exist);
	suite_add_tcase(s, sizes);
	suite_add_tcase(s, names);
	suite_add_tcase(s, errors);
	tcase_add_test(logs, test_log_json_lines);
	tcase_add_test(logs, test_log_plain);
	suite_add_tcase(s, logs);
	return s;
}

int main(void)
{
	return test_run_suite(util_suite());
}
