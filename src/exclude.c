/* SPDX-License-Identifier: MIT */
/*
 * exclude: bounds what an exclude pattern may cost before regcomp sees it.
 * A recursive descent over the pattern that follows the tokens and the
 * grammar of glibc's regcomp for REG_EXTENDED (RE_SYNTAX_POSIX_EXTENDED:
 * peek_token, parse_reg_exp, parse_branch, parse_expression, parse_dup_op
 * and parse_bracket_exp in posix/regcomp.c) closely enough to count an
 * upper bound of the parse-tree nodes regcomp will build, repetitions
 * expanded.  Anything the scan cannot account for is refused, never
 * passed on uncounted.
 */
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/exclude.h"

/* glibc's RE_DUP_MAX and BRACKET_NAME_BUF_SIZE. */
#define DUP_COUNT_MAX 0x7fff
#define BRACKET_NAME_MAX 32
/* What the scan charges once the budget is spent: keeps sums finite. */
#define OVER_BUDGET ((uint64_t)EXCLUDE_EXPANDED_MAX + 1)
/* Nodes of a GNU operator (\w, \b, ...): glibc builds a small subtree. */
#define GNU_OP_NODES 3

struct scan {
	const char *p;
	size_t pos, len;
	int depth;
	const char *pattern;
	struct err *e;
};

static uint64_t add(uint64_t a, uint64_t b)
{
	return a + b > OVER_BUDGET ? OVER_BUDGET : a + b;
}

static uint64_t mul(uint64_t a, uint64_t b)
{
	if (a && b > OVER_BUDGET / a)
		return OVER_BUDGET;
	return a * b > OVER_BUDGET ? OVER_BUDGET : a * b;
}

static int refuse(const struct scan *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int refuse(const struct scan *s, const char *fmt, ...)
{
	char why[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return err_set(s->e, ERR_INVALID_EXCLUDE, "exclude pattern '%.64s%s': %s", s->pattern,
		       strlen(s->pattern) > 64 ? "..." : "", why);
}

static bool at_end(const struct scan *s)
{
	return s->pos >= s->len;
}

/* A bracket expression, s->pos just past its '['. */
static int scan_bracket(struct scan *s)
{
	bool first = true;

	if (!at_end(s) && s->p[s->pos] == '^')
		s->pos++;
	for (;;) {
		char c;

		if (at_end(s))
			return refuse(s, "the bracket expression has no closing ]");
		c = s->p[s->pos];
		if (c == ']' && !first) {
			s->pos++;
			return 0;
		}
		if (c == '[' && s->pos + 1 < s->len &&
		    (s->p[s->pos + 1] == '.' || s->p[s->pos + 1] == '=' ||
		     s->p[s->pos + 1] == ':')) {
			char delim = s->p[s->pos + 1];
			size_t i, start = s->pos + 2;
			bool closed = false;

			for (i = 0; i < BRACKET_NAME_MAX && start + i + 1 < s->len; i++) {
				if (s->p[start + i] == delim && s->p[start + i + 1] == ']') {
					closed = true;
					break;
				}
			}
			if (!closed)
				return refuse(s, "[%c at offset %zu has no closing %c]", delim,
					      s->pos, delim);
			s->pos = start + i + 2;
		} else {
			s->pos++;
		}
		first = false;
	}
}

/* The counts of an interval {m}, {m,}, {,n} or {m,n}, s->pos just past its
 * '{'; *max is -1 when unbounded. */
static int scan_interval(struct scan *s, long *min, long *max)
{
	size_t open = s->pos - 1;
	long value[2] = {-1, -1};
	int part = 0;

	for (;;) {
		char c;

		if (at_end(s))
			return refuse(s, "the repetition at offset %zu has no closing }", open);
		c = s->p[s->pos++];
		if (c == '}')
			break;
		if (c == ',' && part == 0) {
			part = 1;
			continue;
		}
		if (c < '0' || c > '9')
			return refuse(
				s, "the repetition at offset %zu is not {m}, {m,}, {,n} or {m,n}",
				open);
		value[part] = value[part] < 0 ? c - '0' : value[part] * 10 + (c - '0');
		if (value[part] > DUP_COUNT_MAX)
			return refuse(s, "the repetition count at offset %zu is over %d", open,
				      DUP_COUNT_MAX);
	}
	if (part == 0 && value[0] < 0)
		return refuse(s, "the repetition at offset %zu is empty", open);
	*min = value[0] < 0 ? 0 : value[0];
	*max = part == 0 ? *min : value[1];
	if (*max >= 0 && *min > *max)
		return refuse(s, "the repetition at offset %zu has its minimum above its maximum",
			      open);
	return 0;
}

static int scan_alternation(struct scan *s, uint64_t *cost);

/* One atom (a group counts as one), its cost in *cost. */
static int scan_atom(struct scan *s, uint64_t *cost)
{
	char c = s->p[s->pos++];

	*cost = 1;
	switch (c) {
	case '(':
		if (s->depth >= EXCLUDE_DEPTH_MAX)
			return refuse(s, "groups are nested more than %d deep (the limit)",
				      EXCLUDE_DEPTH_MAX);
		s->depth++;
		if (scan_alternation(s, cost) < 0)
			return -1;
		s->depth--;
		if (at_end(s))
			return refuse(s, "a ( has no closing )");
		s->pos++; /* ')' */
		*cost = add(*cost, 1);
		return 0;
	case '[':
		return scan_bracket(s);
	case '\\':
		if (at_end(s))
			return refuse(s, "it ends with a lone backslash");
		c = s->p[s->pos++];
		if (c >= '1' && c <= '9')
			return refuse(s,
				      "back-references such as \\%c (offset %zu) are not allowed",
				      c, s->pos - 2);
		if (strchr("wWsSbB<>`'", c))
			*cost = GNU_OP_NODES;
		return 0;
	default:
		return 0;
	}
}

/* An atom and the repetition operators after it. */
static int scan_expression(struct scan *s, uint64_t *cost)
{
	uint64_t c;

	if (scan_atom(s, &c) < 0)
		return -1;
	while (!at_end(s)) {
		char op = s->p[s->pos];
		long min = 0, max = 0;
		uint64_t copies;

		if (op == '*' || op == '?') {
			min = 0;
			max = op == '?' ? 1 : -1;
			s->pos++;
		} else if (op == '+') {
			min = 1;
			max = -1;
			s->pos++;
		} else if (op == '{') {
			s->pos++;
			if (scan_interval(s, &min, &max) < 0)
				return -1;
		} else {
			break;
		}
		/* parse_dup_op: r{m,n} is m copies of r and n - m optional
		 * ones, r{m,} m copies and a starred one; each copy brings
		 * up to two operator nodes.  r{0} is built, then dropped. */
		copies = max < 0 ? (uint64_t)min + 1 : (uint64_t)(max > 0 ? max : 1);
		c = mul(copies, add(c, 2));
	}
	*cost = c;
	return 0;
}

/* Expressions up to '|', a closing ')' of a group, or the end. */
static int scan_branch(struct scan *s, uint64_t *cost)
{
	uint64_t total = 0, c;

	while (!at_end(s) && s->p[s->pos] != '|' && !(s->depth > 0 && s->p[s->pos] == ')')) {
		if (scan_expression(s, &c) < 0)
			return -1;
		total = add(total, add(c, 1)); /* and its CONCAT node */
	}
	*cost = total;
	return 0;
}

static int scan_alternation(struct scan *s, uint64_t *cost)
{
	uint64_t total, c;

	if (scan_branch(s, &total) < 0)
		return -1;
	while (!at_end(s) && s->p[s->pos] == '|') {
		s->pos++;
		if (scan_branch(s, &c) < 0)
			return -1;
		total = add(total, add(c, 1)); /* and its ALT node */
	}
	*cost = total;
	return 0;
}

int exclude_check(const char *pattern, uint64_t *expanded, struct err *e)
{
	struct scan s = {.p = pattern, .len = strlen(pattern), .pattern = pattern, .e = e};
	uint64_t cost = 0;

	if (expanded)
		*expanded = 0;
	if (s.len > EXCLUDE_LENGTH_MAX)
		return refuse(&s, "it is %zu bytes long, over the limit of %d", s.len,
			      EXCLUDE_LENGTH_MAX);
	/* At the top level a ')' is an ordinary character: the scan ends
	 * only at the end of the pattern. */
	if (scan_alternation(&s, &cost) < 0)
		return -1;
	if (expanded)
		*expanded = cost;
	if (cost > EXCLUDE_EXPANDED_MAX)
		return refuse(&s,
			      "it expands to more than %d regular-expression nodes, the limit "
			      "(a repetition r{m,n} copies r n times, and nested repetitions "
			      "multiply)",
			      EXCLUDE_EXPANDED_MAX);
	return 0;
}

int exclude_compile(const char *pattern, regex_t *re, struct err *e)
{
	char why[256];
	int rc;

	if (exclude_check(pattern, NULL, e) < 0)
		return -1;
	rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		regerror(rc, re, why, sizeof(why));
		return err_set(e, ERR_INVALID_EXCLUDE, "exclude pattern '%.64s%s': %s", pattern,
			       strlen(pattern) > 64 ? "..." : "", why);
	}
	return 0;
}
