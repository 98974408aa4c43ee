/* SPDX-License-Identifier: MIT */
/*
 * exclude: the exclude pattern of a conversion (`--exclude`,
 * options.exclude): a POSIX extended regular expression searched,
 * unanchored, in every output tensor name (SPEC.md), compiled by the C
 * library's regcomp.
 *
 * What a pattern may cost is bounded before it is compiled, because
 * glibc's regcomp expands a bounded repetition r{m,n} into n copies of r
 * (nested ones multiply) and builds tables quadratic in the expanded size,
 * and its regexec backtracks on back-references.  A pattern is refused
 * (code invalid_exclude, the message naming the bound) when it
 *   - is longer than EXCLUDE_LENGTH_MAX bytes,
 *   - uses a back-reference (\1 to \9, a glibc extension to POSIX ERE),
 *   - nests groups deeper than EXCLUDE_DEPTH_MAX, or
 *   - expands to more than EXCLUDE_EXPANDED_MAX nodes of glibc's parse
 *     tree (an upper bound, counted the way glibc's parse_dup_op copies
 *     repeated subexpressions).
 * Within these bounds regcomp takes at most a few tens of MiB and
 * milliseconds, and regexec stays polynomial in the name's length.
 *
 * Threads: any.  exclude_check is a linear scan that allocates nothing, so
 * the HTTP threads may call it; exclude_compile belongs on the threads that
 * plan conversions.
 */
#ifndef CKPTCONV_EXCLUDE_H
#define CKPTCONV_EXCLUDE_H

#include <regex.h>
#include <stdint.h>

struct err;

#define EXCLUDE_LENGTH_MAX 1024
#define EXCLUDE_DEPTH_MAX 32
#define EXCLUDE_EXPANDED_MAX 4000

/* Checks pattern against the bounds above without compiling it; also
 * refuses a repetition count or bracket expression that regcomp would
 * refuse.  *expanded (may be NULL) receives the pattern's expanded size
 * (saturated at EXCLUDE_EXPANDED_MAX + 1).  Code: invalid_exclude. */
int exclude_check(const char *pattern, uint64_t *expanded, struct err *e);

/* exclude_check, then regcomp(REG_EXTENDED | REG_NOSUB) into *re, which
 * the caller frees with regfree on success.  Code: invalid_exclude (with
 * regerror's text for a pattern regcomp refuses). */
int exclude_compile(const char *pattern, regex_t *re, struct err *e);

#endif
