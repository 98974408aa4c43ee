/* SPDX-License-Identifier: MIT */
/*
 * paths: where the daemon may read and write.  A local path named by a job
 * is resolved the way the kernel will follow it (symbolic links and `..`
 * of its deepest existing ancestor, the rest lexically) and must then lie
 * inside one of the allowed roots.  Roots are resolved once at start.
 *
 * Pure functions over the filesystem's current state; any thread.  A path
 * can change between the check and its use (someone with write access under
 * a root replaces a directory by a symlink); these checks refuse requests
 * early with a clear answer, and the local store, confined to the same
 * roots (store_local_confine), is what holds at the moment each file is
 * opened.
 */
#ifndef CKPTCONV_PATHS_H
#define CKPTCONV_PATHS_H

#include <stdbool.h>

struct err;
struct strvec;

/* The absolute, resolved form of `path` in *out (malloc'd).  `path` must be
 * absolute.  Codes: invalid_field (not absolute, empty, too long),
 * forbidden_path (a component cannot be resolved: permission denied, a
 * symlink loop or a dangling symlink). */
int paths_resolve(const char *path, char **out, struct err *e);

/* Resolves an existing directory for use as a root (code usage_error). */
int paths_root(const char *dir, char **out, struct err *e);

/* Whether resolved path `path` is `dir` or lies below it. */
bool paths_inside(const char *path, const char *dir);
/* Whether one of two resolved paths contains the other. */
bool paths_overlap(const char *a, const char *b);

/* Resolves `path` and checks it against the resolved `roots`; *resolved
 * receives the resolved path.  Code forbidden_path when it lies outside
 * every root (or no root is configured), plus paths_resolve's. */
int paths_check(const struct strvec *roots, const char *path, char **resolved, struct err *e);

#endif
