/* SPDX-License-Identifier: MIT */
/*
 * crc32c: CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected,
 * initial and final value 0xFFFFFFFF), the checksum the destination
 * manifest records for every published file and S3's
 * x-amz-checksum-crc32c.  Chosen because it is computed while the bytes
 * are written, piece by piece in any order: the CRCs of two adjacent
 * ranges combine into the CRC of both (crc32c_combine) knowing only the
 * second range's length, so worker threads writing pieces of one file in
 * parallel need no ordering, and on x86-64 with SSE4.2 the CRC32
 * instruction computes it several times faster than a disk or network
 * moves the bytes.  SHA-256 (OpenSSL) would need the bytes in order and
 * costs several CPU seconds per GB.  None of the allowed libraries
 * (OpenSSL, jansson, libcurl, expat, libmicrohttpd) provides CRC-32C, so
 * it is implemented here: the SSE4.2 instruction when the CPU has it, a
 * slicing-by-8 table otherwise, and the combination by multiplication
 * modulo the polynomial (as zlib's crc32_combine does for CRC-32).
 *
 * Threads: any; pure functions (the tables are built once, thread-safely).
 */
#ifndef CKPTCONV_CRC32C_H
#define CKPTCONV_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of `crc`'s bytes followed by buf[0..len): start with 0 for
 * a first range.  crc32c(0, "123456789", 9) is 0xE3069283. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The CRC-32C of range A followed by range B, from crc_a (A's), crc_b
 * (B's) and len_b (B's length in bytes).  O(log len_b). */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* The 8 lower-case hex digits of `crc` ("e3069283"), NUL-terminated. */
void crc32c_hex(uint32_t crc, char out[9]);
/* Parses 8 hex digits; -1 when `text` is not exactly that. */
int crc32c_parse_hex(const char *text, uint32_t *out);
/* The base64 of the 4 big-endian bytes of `crc`, as S3's
 * x-amz-checksum-crc32c header and its answers spell it ("4waSgw=="). */
void crc32c_base64(uint32_t crc, char out[9]);

/* ---- a file written in pieces ----
 *
 * The CRCs of the ranges written into one file, in any order, combined
 * once all of it is written.  Ranges must not overlap.  Not thread-safe:
 * the store's writer adds under a lock of its own. */
struct crc32c_ranges {
	struct crc32c_range {
		uint64_t off, len;
		uint32_t crc;
	} * ranges;
	size_t n, cap;
};

void crc32c_ranges_add(struct crc32c_ranges *r, uint64_t off, uint64_t len, uint32_t crc);
/* The CRC of bytes [0, size): 0 with *out set when the ranges cover them
 * exactly, -1 when a byte is missing or written twice. */
int crc32c_ranges_total(struct crc32c_ranges *r, uint64_t size, uint32_t *out);
void crc32c_ranges_fini(struct crc32c_ranges *r);

/* Test seam: when true, crc32c uses the tables even where the CPU has the
 * SSE4.2 instruction. */
extern bool crc32c_force_portable;

#endif
