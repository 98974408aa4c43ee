/* SPDX-License-Identifier: MIT */
/*
 * aws_profile: the shared AWS `config` and `credentials` files, read the way
 * the AWS SDKs read them (AWS SDKs and Tools Reference Guide, "Using shared
 * config and credentials files",
 * https://docs.aws.amazon.com/sdkref/latest/guide/file-format.html, and the
 * profile-file test suite the SDKs share):
 *
 *  - a profile is a section: `[profile NAME]` or `[default]` in the config
 *    file, `[NAME]` in the credentials file; other sections (`[sso-session
 *    x]`, `[services x]`, a config section without the `profile ` prefix, a
 *    credentials section with it) and profiles whose name has a character
 *    outside A-Z a-z 0-9 - _ / . % @ : + are skipped with their properties;
 *  - in the config file `[profile default]` wins over `[default]`: when
 *    both appear, the properties of `[default]` are dropped;
 *  - `name = value` properties, names case-insensitive (kept lower case),
 *    names and values trimmed; the last definition of a property wins, a
 *    profile defined twice merges, and the credentials file wins over the
 *    config file for a property both define;
 *  - lines whose first non-blank character is `#` or `;` are comments, and
 *    so is the rest of a section line after `]` or of a property value from
 *    a `#` or `;` preceded by white space (`a;b` keeps its `;`);
 *  - an indented line continues the property before it (joined with "\n");
 *    after a property with an empty value the indented lines are its
 *    sub-properties (`s3 =` / `  max_concurrent_requests = 4`), kept as
 *    the value's text.
 *
 * A line that is none of these (a property before any section, a section
 * without its `]`, a property without `=` or name, a continuation with no
 * property to continue) makes the file malformed: code s3_credentials,
 * naming the file and line.  Values are kept as read, secrets included:
 * callers never print them.
 *
 * Reading takes time linear in the text's size whatever its shape (many
 * profiles, many properties, values continued over many lines): profiles
 * and properties are found through a hash index, values grow by doubling.
 *
 * Pure functions of their input but for aws_profiles_load, which reads the
 * two files; a set is used by one thread at a time.
 */
#ifndef CKPTCONV_AWS_PROFILE_H
#define CKPTCONV_AWS_PROFILE_H

#include <stdbool.h>
#include <stddef.h>

struct err;
struct aws_profiles;

enum aws_profile_file { AWS_PROFILE_CONFIG, AWS_PROFILE_CREDENTIALS };

/* Largest file read (4 MiB): a larger one is refused as malformed. */
#define AWS_PROFILE_FILE_MAX ((size_t)4 << 20)

/* An empty set; aws_profiles_free releases it (NULL: no-op). */
struct aws_profiles *aws_profiles_new(void);
void aws_profiles_free(struct aws_profiles *ps);

/* Adds the profiles of one file's `len` bytes of text (need not be
 * NUL-terminated) to the set, as the file of kind `kind`; `where` names the
 * file in errors.  Parse the config file first, then the credentials file,
 * so the latter's values win.  On error the set holds what came before the
 * faulty line.  Code: s3_credentials ("WHERE line N: ..."). */
int aws_profiles_parse(struct aws_profiles *ps, enum aws_profile_file kind, const char *text,
		       size_t len, const char *where, struct err *e);

/* The set of both files; a path that is NULL or names no file adds
 * nothing.  *out is NULL on error.  Code: s3_credentials (a file that
 * cannot be read, is larger than AWS_PROFILE_FILE_MAX, or is malformed). */
int aws_profiles_load(const char *config_path, const char *credentials_path,
		      struct aws_profiles **out, struct err *e);

/* Whether a profile of that name was defined in either file. */
bool aws_profiles_has(const struct aws_profiles *ps, const char *profile);
/* A property's value (name case-insensitive), owned by the set; NULL when
 * the profile or the property is not defined. */
const char *aws_profiles_get(const struct aws_profiles *ps, const char *profile,
			     const char *property);

#endif
