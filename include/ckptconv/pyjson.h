/* SPDX-License-Identifier: MIT */
/*
 * pyjson: JSON spelled byte for byte as Python's json module writes it with
 * its default ensure_ascii=True: strings with \uXXXX escapes in lower-case
 * hex (surrogate pairs beyond the BMP), floats as Python's repr (shortest
 * round trip: 1e-06, 0.0001, 1e+16, 1000000000000000.0), NaN, Infinity,
 * and either the default separators ", " and ": " on one line or indent=2
 * (members on their own lines, empty containers inline, no final newline).
 * NeMo Automodel writes its consolidated index and headers this way
 * (docs/consolidation.md §5.12); reproducing them needs the same spelling.
 *
 * Pure functions writing to a stdio stream (open_memstream for a string);
 * any thread.
 */
#ifndef CKPTCONV_PYJSON_H
#define CKPTCONV_PYJSON_H

#include <jansson.h>
#include <stdio.h>

/* `s` (valid UTF-8, NUL-terminated) as a quoted JSON string, every
 * character outside 0x20-0x7E escaped. */
void pyjson_string(FILE *out, const char *s);

/* A double as Python's json.dumps spells it (float.__repr__, with NaN,
 * Infinity and -Infinity for the non-finite values). */
void pyjson_real(FILE *out, double v);

/* `v` as json.dumps(v) (indent < 0: one line, separators ", " and ": ") or
 * json.dumps(v, indent=indent); object members in jansson's order (the
 * order they were parsed or set in). */
void pyjson_dump(FILE *out, const json_t *v, int indent);

#endif
