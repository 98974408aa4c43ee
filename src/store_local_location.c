/* SPDX-License-Identifier: MIT */
/*
 * store_local_location: what a local location names before a store is
 * opened on it (a file, a directory), its canonical spelling and whether
 * two locations name one directory: path functions of the local backend
 * (store_local.c) that need no open store.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "store_local_internal.h"

int store_local_location_kind(const char *location, enum store_entry_kind *out, struct err *e)
{
	struct stat st;

	if (stat(location, &st) != 0)
		return err_set_errno(e,
				     errno == ENOENT ? ERR_SOURCE_NOT_FOUND : ERR_SOURCE_UNREADABLE,
				     errno, "%s", location);
	*out = S_ISREG(st.st_mode) ? STORE_FILE : S_ISDIR(st.st_mode) ? STORE_DIR : STORE_OTHER;
	return 0;
}

char *store_local_canonical(const char *location)
{
	char *path = realpath(location, NULL);

	return path ? path : xstrdup(location);
}

/* The resolved directory a location stands for (a file stands for the
 * directory holding it); NULL if it cannot be resolved. */
static char *resolved_dir(const char *location)
{
	char *path = realpath(location, NULL);
	struct stat st;
	char *slash;

	if (!path)
		return NULL;
	if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		slash = strrchr(path, '/');
		if (slash && slash != path)
			*slash = '\0';
		else if (slash)
			slash[1] = '\0';
	}
	return path;
}

bool store_local_same_location(const char *a, const char *b)
{
	char *ra = resolved_dir(a), *rb = resolved_dir(b);
	bool same = ra && rb && strcmp(ra, rb) == 0;

	free(ra);
	free(rb);
	return same;
}
