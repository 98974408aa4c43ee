/* SPDX-License-Identifier: MIT */
/*
 * bench/write_size.c: the cost of buffered writes by the size of each
 * pwrite(2), the measurement behind store_local's LOCAL_WRITE_MAX.  Writes
 * GIB GiB to FILE (created, then removed), filling a PIECE_KIB buffer and
 * writing it in CHUNK_KIB calls, as a conversion assembles a piece and
 * writes it; prints the wall time (run it under /usr/bin/time for user
 * and system time).  Prints figures only.
 *
 * Build: make bench/write_size (in a build directory)
 * Usage: bench/write_size FILE GIB PIECE_KIB CHUNK_KIB
 *   e.g. for c in 1024 512 256 128 64; do sync; /usr/bin/time -f '%U %S' \
 *            bench/write_size /var/tmp/w 12 16384 $c; done
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t total, piece, chunk, off, k;
	double start;
	char *buf;
	int fd, v = 1;

	if (argc != 5) {
		fprintf(stderr, "usage: %s FILE GIB PIECE_KIB CHUNK_KIB\n", argv[0]);
		return 2;
	}
	total = (size_t)atol(argv[2]) << 30;
	piece = (size_t)atol(argv[3]) << 10;
	chunk = (size_t)atol(argv[4]) << 10;
	if (!piece || !chunk || piece % chunk) {
		fprintf(stderr, "%s: PIECE_KIB must be a multiple of CHUNK_KIB\n", argv[0]);
		return 2;
	}
	buf = aligned_alloc(4096, piece);
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!buf || fd < 0) {
		perror(argv[1]);
		return 1;
	}
	start = now();
	for (off = 0; off < total; off += piece) {
		memset(buf, v++, piece);
		for (k = 0; k < piece; k += chunk)
			if (pwrite(fd, buf + k, chunk, (off_t)(off + k)) != (ssize_t)chunk) {
				perror(argv[1]);
				return 1;
			}
	}
	printf("%zu GiB, pieces of %zu KiB written %zu KiB at a time: %.2f s\n", total >> 30,
	       piece >> 10, chunk >> 10, now() - start);
	close(fd);
	unlink(argv[1]);
	return 0;
}
