/* SPDX-License-Identifier: MIT */
/*
 * check_crc32c: CRC-32C against the published check value and the
 * RFC 3720 (iSCSI) test vectors, both implementations (the SSE4.2
 * instruction where the CPU has it, the tables) agreeing at every length
 * and alignment, combination of adjacent ranges, ranges written out of
 * order, and the hex and base64 spellings.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/crc32c.h"
#include "testutil.h"

static uint32_t both(const void *buf, size_t len)
{
	uint32_t fast, portable;

	crc32c_force_portable = false;
	fast = crc32c(0, buf, len);
	crc32c_force_portable = true;
	portable = crc32c(0, buf, len);
	crc32c_force_portable = false;
	ck_assert_msg(fast == portable, "len %zu: %08x != %08x", len, fast, portable);
	return fast;
}

START_TEST(test_vectors)
{
	unsigned char buf[48];
	size_t i;

	ck_assert_uint_eq(both("123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(both("", 0), 0);
	memset(buf, 0, 32);
	ck_assert_uint_eq(both(buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, 32);
	ck_assert_uint_eq(both(buf, 32), 0x62A8AB43u);
	for (i = 0; i < 32; i++)
		buf[i] = (unsigned char)i;
	ck_assert_uint_eq(both(buf, 32), 0x46DD794Eu);
	for (i = 0; i < 32; i++)
		buf[i] = (unsigned char)(31 - i);
	ck_assert_uint_eq(both(buf, 32), 0x113FDB5Cu);
}
END_TEST

START_TEST(test_lengths_and_alignments)
{
	unsigned char *buf = malloc(4096 + 16);
	size_t off, len;

	for (len = 0; len < 4096 + 16; len++)
		buf[len] = (unsigned char)(len * 131 + 7);
	for (off = 0; off < 9; off++)
		for (len = 0; len < 300; len++)
			both(buf + off, len);
	both(buf, 4096);
	{
		/* Lengths around the three interleaved streams (8 KiB each)
		 * of the instruction path: one round, one byte either side,
		 * several rounds and a tail, at an odd address. */
		static const size_t longs[] = {24575, 24576, 24577, 49152 + 8191, 3 * 24576 + 5,
					       1 << 20};
		unsigned char *big = malloc((1 << 20) + 1);
		size_t k;

		for (k = 0; k < (1 << 20) + 1; k++)
			big[k] = (unsigned char)(k * 2654435761u >> 13);
		for (k = 0; k < sizeof(longs) / sizeof(longs[0]); k++) {
			both(big, longs[k]);
			both(big + 1, longs[k]);
		}
		free(big);
	}
	/* Continuing a CRC equals computing it at once. */
	ck_assert_uint_eq(crc32c(crc32c(0, buf, 1000), buf + 1000, 3096), crc32c(0, buf, 4096));
	free(buf);
}
END_TEST

START_TEST(test_combine)
{
	unsigned char *buf = malloc(1 << 20);
	size_t i, cut;
	uint32_t whole;

	for (i = 0; i < (1u << 20); i++)
		buf[i] = (unsigned char)(i ^ (i >> 9));
	whole = crc32c(0, buf, 1 << 20);
	for (cut = 0; cut <= (1u << 20); cut += 77777) {
		uint32_t a = crc32c(0, buf, cut), b = crc32c(0, buf + cut, (1u << 20) - cut);

		ck_assert_uint_eq(crc32c_combine(a, b, (1u << 20) - cut), whole);
	}
	ck_assert_uint_eq(crc32c_combine(whole, 0, 0), whole);
	free(buf);
}
END_TEST

START_TEST(test_ranges_out_of_order)
{
	enum { SIZE = 100000, STEP = 999 };
	unsigned char *buf = malloc(SIZE);
	struct crc32c_ranges r = {0};
	uint32_t total = 0;
	size_t i, k;

	for (i = 0; i < SIZE; i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	/* Ranges of STEP bytes (the last one shorter), the odd ones from the
	 * last to the first, then the even ones. */
	for (k = 0; k < 2; k++)
		for (i = SIZE / STEP + 1; i-- > 0;) {
			size_t off = i * STEP, len = off + STEP > SIZE ? SIZE - off : STEP;

			if (i % 2 != 1 - k)
				continue;
			crc32c_ranges_add(&r, off, len, crc32c(0, buf + off, len));
		}
	ck_assert_int_eq(crc32c_ranges_total(&r, SIZE, &total), 0);
	ck_assert_uint_eq(total, crc32c(0, buf, SIZE));
	/* A size the ranges do not cover, and a range written twice. */
	ck_assert_int_eq(crc32c_ranges_total(&r, SIZE + 1, &total), -1);
	crc32c_ranges_add(&r, 10, 10, crc32c(0, buf + 10, 10));
	ck_assert_int_eq(crc32c_ranges_total(&r, SIZE, &total), -1);
	crc32c_ranges_fini(&r);
	/* A gap. */
	crc32c_ranges_add(&r, 0, 10, crc32c(0, buf, 10));
	crc32c_ranges_add(&r, 11, 9, crc32c(0, buf + 11, 9));
	ck_assert_int_eq(crc32c_ranges_total(&r, 20, &total), -1);
	crc32c_ranges_fini(&r);
	ck_assert_int_eq(crc32c_ranges_total(&r, 0, &total), 0);
	ck_assert_uint_eq(total, 0);
	free(buf);
}
END_TEST

START_TEST(test_spellings)
{
	char text[9];
	uint32_t v = 0;

	crc32c_hex(0xE3069283u, text);
	ck_assert_str_eq(text, "e3069283");
	ck_assert_int_eq(crc32c_parse_hex("e3069283", &v), 0);
	ck_assert_uint_eq(v, 0xE3069283u);
	ck_assert_int_eq(crc32c_parse_hex("E3069283", &v), -1);
	ck_assert_int_eq(crc32c_parse_hex("e306928", &v), -1);
	ck_assert_int_eq(crc32c_parse_hex("e30692830", &v), -1);
	ck_assert_int_eq(crc32c_parse_hex(NULL, &v), -1);
	/* S3 spells it as the base64 of the big-endian bytes. */
	crc32c_base64(0xE3069283u, text);
	ck_assert_str_eq(text, "4waSgw==");
	crc32c_base64(0, text);
	ck_assert_str_eq(text, "AAAAAA==");
}
END_TEST

static Suite *crc32c_suite(void)
{
	Suite *s = suite_create("crc32c");
	TCase *tc = tcase_create("crc32c");

	tcase_add_test(tc, test_vectors);
	tcase_add_test(tc, test_lengths_and_alignments);
	tcase_add_test(tc, test_combine);
	tcase_add_test(tc, test_ranges_out_of_order);
	tcase_add_test(tc, test_spellings);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return test_run_suite(crc32c_suite());
}
