/* SPDX-License-Identifier: MIT */
/*
 * paths: resolution of job paths and the allow-root check.  A path is
 * resolved by realpath() of its deepest existing ancestor, so symbolic
 * links and `..` are followed exactly as the kernel will follow them; the
 * components that do not exist yet are applied lexically (they will be
 * created as plain directories).  A component that exists but cannot be
 * resolved (dangling symlink, loop, no permission) is refused, because
 * where it leads cannot be proven.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/err.h"
#include "ckptconv/paths.h"
#include "ckptconv/util.h"

/* Appends the lexical components of `tail` to the resolved `base`
 * (PATH_MAX bytes). */
static int append_tail(char *base, const char *tail, const char *path, struct err *e)
{
	const char *p = tail;

	while (*p) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		size_t used = strlen(base);

		if (len == 0 || (len == 1 && p[0] == '.')) {
			/* empty or "." component */
		} else if (len == 2 && p[0] == '.' && p[1] == '.') {
			char *slash = strrchr(base, '/');

			if (slash == base)
				base[1] = '\0';
			else if (slash)
				*slash = '\0';
		} else {
			if (used + 1 + len + 1 > PATH_MAX)
				return err_set(e, ERR_INVALID_FIELD, "%s: path is too long", path);
			if (used > 1)
				base[used++] = '/';
			memcpy(base + used, p, len);
			base[used + len] = '\0';
		}
		p += len;
		if (*p == '/')
			p++;
	}
	return 0;
}

/* Whether the resolution failure of an existing entry means it cannot be
 * followed (as opposed to not existing). */
static bool entry_exists(const char *prefix)
{
	struct stat st;

	return lstat(prefix, &st) == 0;
}

int paths_resolve(const char *path, char **out, struct err *e)
{
	char prefix[PATH_MAX], resolved[PATH_MAX];
	size_t len;
	int rc = -1;

	*out = NULL;
	if (!path || !*path)
		return err_set(e, ERR_INVALID_FIELD, "the path is empty");
	len = strlen(path);
	if (len >= PATH_MAX)
		return err_set(e, ERR_INVALID_FIELD, "path is longer than %d bytes", PATH_MAX - 1);
	if (path[0] != '/')
		return err_set(e, ERR_INVALID_FIELD, "%s: path is not absolute", path);
	memcpy(prefix, path, len + 1);
	for (;;) {
		char *slash;

		if (realpath(prefix, resolved))
			break;
		if (errno != ENOENT && errno != ENOTDIR) {
			err_set_errno(e, ERR_FORBIDDEN_PATH, errno, "%s: cannot resolve %s", path,
				      prefix);
			goto out;
		}
		if (entry_exists(prefix)) {
			err_set(e, ERR_FORBIDDEN_PATH, "%s: %s is a dangling symbolic link", path,
				prefix);
			goto out;
		}
		slash = strrchr(prefix, '/');
		if (slash == prefix) {
			prefix[1] = '\0';
		} else {
			*slash = '\0';
		}
	}
	if (append_tail(resolved, path + strlen(prefix), path, e) < 0)
		goto out;
	*out = xstrdup(resolved);
	rc = 0;
out:
	return rc;
}

int paths_root(const char *dir, char **out, struct err *e)
{
	char resolved[PATH_MAX];
	struct stat st;

	*out = NULL;
	if (!dir || dir[0] != '/')
		return err_set(e, ERR_USAGE_ERROR, "allowed root '%s' is not an absolute path",
			       dir ? dir : "");
	if (!realpath(dir, resolved))
		return err_set_errno(e, ERR_USAGE_ERROR, errno, "allowed root %s", dir);
	if (stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode))
		return err_set(e, ERR_USAGE_ERROR, "allowed root %s is not a directory", dir);
	*out = xstrdup(resolved);
	return 0;
}

bool paths_inside(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return path[0] == '/';
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool paths_overlap(const char *a, const char *b)
{
	return paths_inside(a, b) || paths_inside(b, a);
}

int paths_check(const struct strvec *roots, const char *path, char **resolved, struct err *e)
{
	char *r = NULL;
	size_t i;

	*resolved = NULL;
	if (paths_resolve(path, &r, e) < 0)
		return -1;
	for (i = 0; roots && i < roots->len; i++) {
		if (paths_inside(r, roots->items[i])) {
			*resolved = r;
			return 0;
		}
	}
	if (!roots || roots->len == 0)
		err_set(e, ERR_FORBIDDEN_PATH,
			"%s: local paths are not allowed (no --allow-root given)", path);
	else if (strcmp(r, path) != 0)
		err_set(e, ERR_FORBIDDEN_PATH, "%s resolves to %s, outside the allowed roots", path,
			r);
	else
		err_set(e, ERR_FORBIDDEN_PATH, "%s is outside the allowed roots", path);
	free(r);
	return -1;
}
