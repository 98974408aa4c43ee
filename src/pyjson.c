/* SPDX-License-Identifier: MIT */
/*
 * pyjson: JSON spelled as Python's json.dumps spells it (ensure_ascii,
 * float repr, its two separator styles), for the files NeMo Automodel's
 * consolidation writes and ckptconv reproduces byte for byte.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/pyjson.h"

/* Decodes one UTF-8 sequence at *p (jansson strings are valid UTF-8);
 * a byte that starts no valid sequence is taken as itself. */
static uint32_t next_code_point(const unsigned char **p)
{
	const unsigned char *s = *p;
	uint32_t c = s[0];
	int extra = 0, i;

	if (c >= 0xF0 && c < 0xF8) {
		c &= 0x07;
		extra = 3;
	} else if (c >= 0xE0) {
		c &= 0x0F;
		extra = 2;
	} else if (c >= 0xC0) {
		c &= 0x1F;
		extra = 1;
	}
	for (i = 1; i <= extra; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*p = s + 1;
			return s[0];
		}
		c = (c << 6) | (s[i] & 0x3F);
	}
	*p = s + 1 + extra;
	return c;
}

void pyjson_string(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', out);
	while (*p) {
		uint32_t c = next_code_point(&p);

		switch (c) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\b':
			fputs("\\b", out);
			break;
		case '\f':
			fputs("\\f", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (c >= 0x20 && c < 0x7F)
				fputc((int)c, out);
			else if (c < 0x10000)
				fprintf(out, "\\u%04x", (unsigned)c);
			else
				fprintf(out, "\\u%04x\\u%04x",
					(unsigned)(0xD800 + ((c - 0x10000) >> 10)),
					(unsigned)(0xDC00 + ((c - 0x10000) & 0x3FF)));
		}
	}
	fputc('"', out);
}

/* The shortest decimal digits that read back as v (v finite, > 0), and
 * the exponent of the first digit: v = 0.d1d2... * 10^(exp + 1). */
static void shortest_digits(double v, char digits[32], int *exp)
{
	char buf[64], *e;
	int prec, n = 0;
	size_t i;

	for (prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*e", prec - 1, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	e = strchr(buf, 'e');
	*exp = atoi(e + 1);
	for (i = 0; buf + i < e; i++)
		if (buf[i] >= '0' && buf[i] <= '9')
			digits[n++] = buf[i];
	while (n > 1 && digits[n - 1] == '0')
		n--;
	digits[n] = '\0';
}

void pyjson_real(FILE *out, double v)
{
	char digits[32];
	int exp, n, i;

	if (isnan(v)) {
		fputs("NaN", out);
		return;
	}
	if (isinf(v)) {
		fputs(v < 0 ? "-Infinity" : "Infinity", out);
		return;
	}
	if (signbit(v))
		fputc('-', out);
	v = fabs(v);
	if (v == 0) {
		fputs("0.0", out);
		return;
	}
	shortest_digits(v, digits, &exp);
	n = (int)strlen(digits);
	if (exp < -4 || exp >= 16) {
		fputc(digits[0], out);
		if (n > 1)
			fprintf(out, ".%s", digits + 1);
		fprintf(out, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
	} else if (exp < 0) {
		fputs("0.", out);
		for (i = 0; i < -exp - 1; i++)
			fputc('0', out);
		fputs(digits, out);
	} else {
		for (i = 0; i <= exp; i++)
			fputc(i < n ? digits[i] : '0', out);
		fputc('.', out);
		fputs(n > exp + 1 ? digits + exp + 1 : "0", out);
	}
}

static void newline(FILE *out, int indent, int depth)
{
	fputc('\n', out);
	fprintf(out, "%*s", indent * depth, "");
}

static void dump(FILE *out, const json_t *v, int indent, int depth)
{
	const char *key;
	json_t *item;
	size_t i, n;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		n = 0;
		fputc('{', out);
		json_object_foreach((json_t *)v, key, item) {
			if (n++)
				fputs(indent < 0 ? ", " : ",", out);
			if (indent >= 0)
				newline(out, indent, depth + 1);
			pyjson_string(out, key);
			fputs(": ", out);
			dump(out, item, indent, depth + 1);
		}
		if (n && indent >= 0)
			newline(out, indent, depth);
		fputc('}', out);
		break;
	case JSON_ARRAY:
		n = json_array_size(v);
		fputc('[', out);
		for (i = 0; i < n; i++) {
			if (i)
				fputs(indent < 0 ? ", " : ",", out);
			if (indent >= 0)
				newline(out, indent, depth + 1);
			dump(out, json_array_get(v, i), indent, depth + 1);
		}
		if (n && indent >= 0)
			newline(out, indent, depth);
		fputc(']', out);
		break;
	case JSON_STRING:
		pyjson_string(out, json_string_value(v));
		break;
	case JSON_INTEGER:
		fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		pyjson_real(out, json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("true", out);
		break;
	case JSON_FALSE:
		fputs("false", out);
		break;
	case JSON_NULL:
		fputs("null", out);
		break;
	}
}

void pyjson_dump(FILE *out, const json_t *v, int indent)
{
	dump(out, v, indent, 0);
}
