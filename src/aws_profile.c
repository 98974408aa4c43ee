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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
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
	size_t len, cap; /* of value: continuation lines append in amortised time */
};

struct profile {
	char *name;
	struct property *props;
	size_t nprops, props_cap;
};

/* An entry of the index: a profile (profile == NO_PROFILE, index its
 * place) or a property (of profiles[profile], index its place). */
#define NO_PROFILE SIZE_MAX
struct slot {
	size_t profile, index;
	uint64_t hash;
	bool used;
};

struct aws_profiles {
	struct profile *profiles;
	size_t nprofiles, profiles_cap;
	/* Open addressing over profile names and (profile, property name):
	 * each line finds its profile or property in constant time, so a file
	 * of any shape is read in time linear in its size. */
	struct slot *slots;
	size_t nslots, used; /* nslots a power of two, used < nslots / 2 */
	uint64_t seed;
};

static void profile_fini(struct profile *p)
{
	size_t i;

	for (i = 0; i < p->nprops; i++) {
		free(p->props[i].name);
		if (p->props[i].value) {
			explicit_bzero(p->props[i].value, p->props[i].cap);
			free(p->props[i].value);
		}
	}
	free(p->props);
	free(p->name);
}

struct aws_profiles *aws_profiles_new(void)
{
	struct aws_profiles *ps = xcalloc(1, sizeof(struct aws_profiles));
	struct timespec ts;

	if (getrandom(&ps->seed, sizeof(ps->seed), GRND_NONBLOCK) != (ssize_t)sizeof(ps->seed)) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ps->seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)ps;
	}
	return ps;
}

void aws_profiles_free(struct aws_profiles *ps)
{
	size_t i;

	if (!ps)
		return;
	for (i = 0; i < ps->nprofiles; i++)
		profile_fini(&ps->profiles[i]);
	free(ps->profiles);
	free(ps->slots);
	free(ps);
}

/* FNV-1a of the profile's place and the name (folded to lower case for a
 * property: property names are case-insensitive), mixed with the set's
 * random seed by the splitmix64 finaliser, so that a file cannot be made
 * of names that all fall in one run of the table. */
static uint64_t name_hash(const struct aws_profiles *ps, size_t profile, const char *name,
			  size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)profile;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		h ^= profile == NO_PROFILE ? c : (unsigned char)tolower(c);
		h *= 0x100000001b3ULL;
	}
	h ^= ps->seed;
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
	return h ^ (h >> 31);
}

static bool slot_matches(const struct aws_profiles *ps, const struct slot *sl, size_t profile,
			 uint64_t hash, const char *name, size_t len)
{
	const char *have;

	if (sl->profile != profile || sl->hash != hash)
		return false;
	if (profile == NO_PROFILE) {
		have = ps->profiles[sl->index].name;
		return strncmp(have, name, len) == 0 && have[len] == '\0';
	}
	have = ps->profiles[profile].props[sl->index].name;
	return strncasecmp(have, name, len) == 0 && have[len] == '\0';
}

/* The slot holding (profile, name), or the free slot where it would go. */
static struct slot *find_slot(const struct aws_profiles *ps, size_t profile, const char *name,
			      size_t len, uint64_t hash)
{
	size_t mask = ps->nslots - 1, i = (size_t)hash & mask;

	while (ps->slots[i].used && !slot_matches(ps, &ps->slots[i], profile, hash, name, len))
		i = (i + 1) & mask;
	return &ps->slots[i];
}

/* Puts an entry known to be new in the table, which has room for it. */
static void index_insert(struct aws_profiles *ps, size_t profile, const char *name, size_t index)
{
	size_t len = strlen(name);
	uint64_t hash = name_hash(ps, profile, name, len);
	struct slot *sl = find_slot(ps, profile, name, len, hash);

	sl->profile = profile;
	sl->index = index;
	sl->hash = hash;
	sl->used = true;
	ps->used++;
}

/* Every profile and property indexed again, in a table with room for
 * `extra` more entries. */
static void reindex(struct aws_profiles *ps, size_t extra)
{
	size_t n = extra, nslots = 64, i, j;

	for (i = 0; i < ps->nprofiles; i++)
		n += 1 + ps->profiles[i].nprops;
	while (nslots < 2 * n + 2)
		nslots *= 2;
	free(ps->slots);
	ps->slots = xcalloc(nslots, sizeof(*ps->slots));
	ps->nslots = nslots;
	ps->used = 0;
	for (i = 0; i < ps->nprofiles; i++) {
		index_insert(ps, NO_PROFILE, ps->profiles[i].name, i);
		for (j = 0; j < ps->profiles[i].nprops; j++)
			index_insert(ps, i, ps->profiles[i].props[j].name, j);
	}
}

/* Indexes a new entry, doubling the table when it is half full. */
static void index_add(struct aws_profiles *ps, size_t profile, const char *name, size_t index)
{
	if (2 * (ps->used + 1) > ps->nslots)
		reindex(ps, ps->used + 1);
	index_insert(ps, profile, name, index);
}

static struct profile *find_profile(const struct aws_profiles *ps, const char *name)
{
	const struct slot *sl;

	if (!ps->nslots)
		return NULL;
	sl = find_slot(ps, NO_PROFILE, name, strlen(name),
		       name_hash(ps, NO_PROFILE, name, strlen(name)));
	return sl->used ? &ps->profiles[sl->index] : NULL;
}

static size_t profile_index(struct aws_profiles *ps, const char *name)
{
	struct profile *p = find_profile(ps, name);

	if (p)
		return (size_t)(p - ps->profiles);
	if (ps->nprofiles == ps->profiles_cap) {
		ps->profiles_cap = ps->profiles_cap ? 2 * ps->profiles_cap : 8;
		ps->profiles = xrealloc(ps->profiles, ps->profiles_cap * sizeof(*ps->profiles));
	}
	p = &ps->profiles[ps->nprofiles];
	memset(p, 0, sizeof(*p));
	p->name = xstrdup(name);
	index_add(ps, NO_PROFILE, p->name, ps->nprofiles);
	return ps->nprofiles++;
}

static struct property *find_property(const struct aws_profiles *ps, size_t profile,
				      const char *name, size_t len)
{
	const struct slot *sl;

	if (!ps->nslots)
		return NULL;
	sl = find_slot(ps, profile, name, len, name_hash(ps, profile, name, len));
	return sl->used ? &ps->profiles[profile].props[sl->index] : NULL;
}

/* Replaces a property's value with `len` bytes of text. */
static void set_value(struct property *prop, const char *value, size_t len)
{
	if (prop->value) {
		explicit_bzero(prop->value, prop->cap);
		free(prop->value);
	}
	prop->cap = len + 1;
	prop->value = xmalloc(prop->cap);
	memcpy(prop->value, value, len);
	prop->value[len] = '\0';
	prop->len = len;
}

/* Sets (replacing) a property of profiles[profile]; returns it. */
static struct property *set_property(struct aws_profiles *ps, size_t profile, const char *name,
				     size_t name_len, const char *value, size_t value_len)
{
	struct profile *p = &ps->profiles[profile];
	struct property *prop = find_property(ps, profile, name, name_len);
	size_t i;

	if (!prop) {
		if (p->nprops == p->props_cap) {
			p->props_cap = p->props_cap ? 2 * p->props_cap : 4;
			p->props = xrealloc(p->props, p->props_cap * sizeof(*p->props));
		}
		prop = &p->props[p->nprops];
		memset(prop, 0, sizeof(*prop));
		prop->name = xmalloc(name_len + 1);
		for (i = 0; i < name_len; i++)
			prop->name[i] = (char)tolower((unsigned char)name[i]);
		prop->name[name_len] = '\0';
		index_add(ps, profile, prop->name, p->nprops);
		p->nprops++;
	}
	set_value(prop, value, value_len);
	return prop;
}

/* Appends "\n" and `len` bytes to a property's value: the buffer grows
 * by doubling (the old one wiped), so a value of many lines costs time
 * linear in its length. */
static void extend_property(struct property *prop, const char *text, size_t len)
{
	size_t need = prop->len + len + 2;

	if (need > prop->cap) {
		size_t cap = prop->cap * 2 > need ? prop->cap * 2 : need;
		char *v = xmalloc(cap);

		memcpy(v, prop->value, prop->len + 1);
		explicit_bzero(prop->value, prop->cap);
		free(prop->value);
		prop->value = v;
		prop->cap = cap;
	}
	prop->value[prop->len] = '\n';
	memcpy(prop->value + prop->len + 1, text, len);
	prop->len += len + 1;
	prop->value[prop->len] = '\0';
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
	bool in_section;     /* a section line was seen */
	ssize_t profile;     /* index of the current profile, -1: a skipped section */
	bool have_property;  /* the last definition was a property */
	bool sub_properties; /* ... with an empty value: indented lines are sub-properties */
	ssize_t prop;	     /* ... its index in the profile (-1: not kept, in a
			      * skipped section or name) */
};

static int bad_line(struct reader *r, struct err *e, const char *what)
{
	return err_set(e, ERR_S3_CREDENTIALS, "%s line %u: %s", r->where, r->line, what);
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
	r->prop = -1;
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
	r->prop = -1;
	if (r->profile >= 0 && valid_name(name, name_len))
		r->prop =
			set_property(r->ps, (size_t)r->profile, name, name_len, value, value_len) -
			r->ps->profiles[r->profile].props;
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
	if (r->prop >= 0)
		extend_property(&r->ps->profiles[r->profile].props[r->prop], s, len);
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
		reindex(ps, 0);
		return;
	}
	free(bare->name);
	bare->name = xstrdup("default");
	reindex(ps, 0);
}

int aws_profiles_parse(struct aws_profiles *ps, enum aws_profile_file kind, const char *text,
		       size_t len, const char *where, struct err *e)
{
	struct reader r = {.ps = ps, .kind = kind, .where = where, .profile = -1, .prop = -1};
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
		return err_set_errno(e, ERR_S3_CREDENTIALS, errno, "shared files: cannot open %s",
				     path);
	if (fstat(fd, &st) < 0) {
		err_set_errno(e, ERR_S3_CREDENTIALS, errno, "shared files: cannot read %s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err_set(e, ERR_S3_CREDENTIALS, "shared files: %s is not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > AWS_PROFILE_FILE_MAX) {
		err_set(e, ERR_S3_CREDENTIALS, "shared files: %s is larger than %zu bytes", path,
			AWS_PROFILE_FILE_MAX);
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
		err_set(e, ERR_S3_CREDENTIALS, "shared files: %s changed or failed while it was read",
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
	const struct property *prop = p && property ? find_property(ps, (size_t)(p - ps->profiles),
								    property, strlen(property)) :
						      NULL;

	return prop ? prop->value : NULL;
}
