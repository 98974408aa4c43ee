/* SPDX-License-Identifier: MIT */
/*
 * aws_profile: a reader of the shared AWS config and credentials files.
 * Each file is read line by line into a small table of profiles and their
 * properties; the rules (which sections are profiles, comments,
 * continuations, which file wins) are those the AWS SDKs share, listed in
 * the header.  Debian's libinih was considered and left aside: its build
 * cuts lines at 200 bytes (session tokens are longer) and fixes its comment
 * rules at compile time, differently from the SDKs' (`a # b` keeps `# b`).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "ckptconv/aws_profile.h"
#include "ckptconv/err.h"
#include "ckptconv/util.h"

/* The config file's `[default]`, kept apart until the end of that file
 * tells whether a `[profile default]` overrides it; '\1' is in no valid
 * profile name. */
#define BARE_DEFAULT "\1default"

struct property {
	char *name; /* lower case */
	char *value;
};

struct profile {
	char *name;
	struct property *props;
	size_t nprops;
};

struct aws_profiles {
	struct profile *profiles;
	size_t nprofiles;
};

static void profile_fini(struct profile *p)
{
	size_t i;

	for (i = 0; i < p->nprops; i++) {
		free(p->props[i].name);
		secret_free(p->props[i].value);
	}
	free(p->props);
	free(p->name);
}

struct aws_profiles *aws_profiles_new(void)
{
	return xcalloc(1, sizeof(struct aws_profiles));
}

void aws_profiles_free(struct aws_profiles *ps)
{
	size_t i;

	if (!ps)
		return;
	for (i = 0; i < ps->nprofiles; i++)
		profile_fini(&ps->profiles[i]);
	free(ps->profiles);
	free(ps);
}

static struct profile *find_profile(const struct aws_profiles *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->nprofiles; i++)
		if (strcmp(ps->profiles[i].name, name) == 0)
			return &ps->profiles[i];
	return NULL;
}

static size_t profile_index(struct aws_profiles *ps, const char *name)
{
	struct profile *p = find_profile(ps, name);

	if (p)
		return (size_t)(p - ps->profiles);
	ps->profiles = xrealloc(ps->profiles, (ps->nprofiles + 1) * sizeof(*ps->profiles));
	p = &ps->profiles[ps->nprofiles];
	memset(p, 0, sizeof(*p));
	p->name = xstrdup(name);
	return ps->nprofiles++;
}

static struct property *find_property(const struct profile *p, const char *name)
{
	size_t i;

	for (i = 0; i < p->nprops; i++)
		if (strcasecmp(p->props[i].name, name) == 0)
			return &p->props[i];
	return NULL;
}

/* Sets (replacing) a property; returns it. */
static struct property *set_property(struct profile *p, const char *name, size_t name_len,
				     const char *value, size_t value_len)
{
	struct property *prop;
	char *lower = xmalloc(name_len + 1);
	size_t i;

	for (i = 0; i < name_len; i++)
		lower[i] = (char)tolower((unsigned char)name[i]);
	lower[name_len] = '\0';
	prop = find_property(p, lower);
	if (prop) {
		free(lower);
		secret_free(prop->value);
	} else {
		p->props = xrealloc(p->props, (p->nprops + 1) * sizeof(*p->props));
		prop = &p->props[p->nprops++];
		prop->name = lower;
	}
	prop->value = xmalloc(value_len + 1);
	memcpy(prop->value, value, value_len);
	prop->value[value_len] = '\0';
	return prop;
}

/* Appends "\n" and `len` bytes to a property's value. */
static void extend_property(struct property *prop, const char *text, size_t len)
{
	size_t old = strlen(prop->value);
	char *v = xmalloc(old + len + 2);

	memcpy(v, prop->value, old);
	v[old] = '\n';
	memcpy(v + old + 1, text, len);
	v[old + len + 1] = '\0';
	secret_free(prop->value);
	prop->value = v;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* [*s, *s + *len) without leading and trailing blanks. */
static void trim(const char **s, size_t *len)
{
	while (*len && blank(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len && blank((*s)[*len - 1]))
		(*len)--;
}

static bool name_char(unsigned char c)
{
	return isalnum(c) || strchr("-_/.%@:+", c);
}

static bool valid_name(const char *s, size_t len)
{
	size_t i;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++)
		if (!name_char((unsigned char)s[i]))
			return false;
	return true;
}

/* Parsing state within one file. */
struct reader {
	struct aws_profiles *ps;
	enum aws_profile_file kind;
	const char *where;
	unsigned line;
	bool in_section;       /* a section line was seen */
	ssize_t profile;       /* index of the current profile, -1: a skipped section */
	bool have_property;    /* the last definition was a property */
	bool sub_properties;   /* ... with an empty value: indented lines are sub-properties */
	struct property *prop; /* ... kept (NULL: in a skipped section or name) */
};

static int bad_line(struct reader *r, struct err *e, const char *what)
{
	return err_set(e, "s3_credentials", "%s line %u: %s", r->where, r->line, what);
}

/* "[...]": the section that following properties belong to. */
static int section_line(struct reader *r, const char *s, size_t len, struct err *e)
{
	const char *close = memchr(s, ']', len), *name, *rest;
	size_t name_len, rest_len;

	if (!close)
		return bad_line(r, e, "a profile definition does not end with ']'");
	rest = close + 1;
	rest_len = len - (size_t)(rest - s);
	trim(&rest, &rest_len);
	if (rest_len && rest[0] != '#' && rest[0] != ';')
		return bad_line(r, e, "text follows the profile definition's ']'");
	name = s + 1;
	name_len = (size_t)(close - name);
	trim(&name, &name_len);
	r->in_section = true;
	r->have_property = r->sub_properties = false;
	r->prop = NULL;
	r->profile = -1;
	if (r->kind == AWS_PROFILE_CONFIG) {
		if (name_len == 7 && memcmp(name, "default", 7) == 0) {
			r->profile = (ssize_t)profile_index(r->ps, BARE_DEFAULT);
			return 0;
		}
		if (name_len < 8 || memcmp(name, "profile", 7) != 0 || !blank(name[7]))
			return 0; /* sso-session, services, or not a profile */
		name += 8;
		name_len -= 8;
		trim(&name, &name_len);
	}
	if (valid_name(name, name_len)) {
		char *copy = xmalloc(name_len + 1);

		memcpy(copy, name, name_len);
		copy[name_len] = '\0';
		r->profile = (ssize_t)profile_index(r->ps, copy);
		free(copy);
	}
	return 0;
}

/* "name = value" of the current section. */
static int property_line(struct reader *r, const char *s, size_t len, struct err *e)
{
	const char *eq = memchr(s, '=', len), *name = s, *value, *p;
	size_t name_len, value_len;

	if (!r->in_section)
		return bad_line(r, e, "a property comes before any profile definition");
	if (!eq)
		return bad_line(r, e, "a property has no '='");
	name_len = (size_t)(eq - s);
	trim(&name, &name_len);
	if (name_len == 0)
		return bad_line(r, e, "a property has no name");
	value = eq + 1;
	value_len = len - (size_t)(value - s);
	for (p = value; p < value + value_len; p++)
		if ((*p == '#' || *p == ';') && p > value && blank(p[-1])) {
			value_len = (size_t)(p - value);
			break;
		}
	trim(&value, &value_len);
	r->have_property = true;
	r->sub_properties = value_len == 0;
	r->prop = NULL;
	if (r->profile >= 0 && valid_name(name, name_len))
		r->prop = set_property(&r->ps->profiles[r->profile], name, name_len, value,
				       value_len);
	return 0;
}

/* An indented line: the next line of the property before it, or one of
 * its sub-properties. */
static int continuation_line(struct reader *r, const char *s, size_t len, struct err *e)
{
	const char *eq;
	size_t name_len;

	if (!r->in_section)
		return bad_line(r, e, "a continuation line comes before any profile definition");
	if (!r->have_property)
		return bad_line(r, e, "a continuation line follows no property");
	if (r->sub_properties) {
		eq = memchr(s, '=', len);
		if (!eq)
			return bad_line(r, e, "a sub-property has no '='");
		name_len = (size_t)(eq - s);
		trim(&s, &name_len);
		if (name_len == 0)
			return bad_line(r, e, "a sub-property has no name");
	}
	if (r->prop)
		extend_property(r->prop, s, len);
	return 0;
}

static int parse_line(struct reader *r, const char *s, size_t len, struct err *e)
{
	const char *t = s;
	size_t tlen = len;
	bool indented;

	if (len && s[len - 1] == '\r')
		len--, tlen--;
	indented = len && blank(s[0]);
	trim(&t, &tlen);
	if (tlen == 0 || t[0] == '#' || t[0] == ';')
		return 0;
	if (t[0] == '[')
		return section_line(r, t, tlen, e);
	if (indented)
		return continuation_line(r, t, tlen, e);
	return property_line(r, t, tlen, e);
}

/* The end of a config file: `[profile default]` overrides `[default]`. */
static void settle_default(struct aws_profiles *ps)
{
	struct profile *bare = find_profile(ps, BARE_DEFAULT);
	size_t i;

	if (!bare)
		return;
	if (find_profile(ps, "default")) {
		i = (size_t)(bare - ps->profiles);
		profile_fini(bare);
		memmove(bare, bare + 1, (ps->nprofiles - i - 1) * sizeof(*bare));
		ps->nprofiles--;
		return;
	}
	free(bare->name);
	bare->name = xstrdup("default");
}

int aws_profiles_parse(struct aws_profiles *ps, enum aws_profile_file kind, const char *text,
		       size_t len, const char *where, struct err *e)
{
	struct reader r = {.ps = ps, .kind = kind, .where = where, .profile = -1};
	const char *p = text, *end = text + len, *nl, *nul;
	int rc = 0;

	nul = memchr(text, '\0', len);
	if (nul) {
		for (r.line = 1; p < nul; p++)
			r.line += *p == '\n';
		rc = bad_line(&r, e, "a NUL byte (not a text file)");
		goto out;
	}
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		r.line++;
		if (parse_line(&r, p, nl ? (size_t)(nl - p) : (size_t)(end - p), e) < 0) {
			rc = -1;
			break;
		}
		p = nl ? nl + 1 : end;
	}
out:
	if (kind == AWS_PROFILE_CONFIG)
		settle_default(ps);
	return rc;
}

/* One file's text into the set; a missing file adds nothing.  Opened
 * without blocking, so that a FIFO or a device is refused by the check of
 * its type instead of holding the thread in open(2). */
static int load_file(struct aws_profiles *ps, enum aws_profile_file kind, const char *path,
		     struct err *e)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	ssize_t got;
	int fd, rc = -1;

	if (!path || !*path)
		return 0;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))
		return 0;
	if (fd < 0)
		return err_set_errno(e, "s3_credentials", errno, "shared files: cannot open %s",
				     path);
	if (fstat(fd, &st) < 0) {
		err_set_errno(e, "s3_credentials", errno, "shared files: cannot read %s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(e, "s3_credentials", "shared files: %s is not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > AWS_PROFILE_FILE_MAX) {
		err_set(e, "s3_credentials", "shared files: %s is larger than %zu bytes",
			path, AWS_PROFILE_FILE_MAX);
		goto out;
	}
	text = xmalloc((size_t)st.st_size + 1);
	for (;;) {
		got = read(fd, text + len, (size_t)st.st_size + 1 - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0 || (len += (size_t)got) > (size_t)st.st_size)
			break;
	}
	if (got < 0 || len > (size_t)st.st_size) {
		err_set(e, "s3_credentials", "shared files: %s changed or failed while it was read",
			path);
		goto out;
	}
	rc = aws_profiles_parse(ps, kind, text, len, path, e);
out:
	if (text) {
		explicit_bzero(text, (size_t)st.st_size + 1);
		free(text);
	}
	close(fd);
	return rc;
}

int aws_profiles_load(const char *config_path, const char *credentials_path,
		      struct aws_profiles **out, struct err *e)
{
	struct aws_profiles *ps = aws_profiles_new();

	*out = NULL;
	if (load_file(ps, AWS_PROFILE_CONFIG, config_path, e) < 0 ||
	    load_file(ps, AWS_PROFILE_CREDENTIALS, credentials_path, e) < 0) {
		aws_profiles_free(ps);
		return -1;
	}
	*out = ps;
	return 0;
}

bool aws_profiles_has(const struct aws_profiles *ps, const char *profile)
{
	return profile && find_profile(ps, profile) != NULL;
}

const char *aws_profiles_get(const struct aws_profiles *ps, const char *profile,
			     const char *property)
{
	const struct profile *p = profile ? find_profile(ps, profile) : NULL;
	const struct property *prop = p ? find_property(p, property) : NULL;

	return prop ? prop->value : NULL;
}
