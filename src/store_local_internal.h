/* SPDX-License-Identifier: MIT */
/*
 * store_local_internal: what the files of the local store backend share
 * and nothing outside them sees.  store_local.c holds the store (reading,
 * writing, identities, confinement); store_local_location.c the path
 * functions the backend table uses before a store is opened.
 */
#ifndef CKPTCONV_STORE_LOCAL_INTERNAL_H
#define CKPTCONV_STORE_LOCAL_INTERNAL_H

#include <stdbool.h>

#include "ckptconv/store.h"

/* store_backend.location_kind: stat(2) of `location`, symbolic links
 * followed.  Codes: source_not_found, source_unreadable. */
int store_local_location_kind(const char *location, enum store_entry_kind *out, struct err *e);
/* store_backend.canonical: realpath(3), else the location as given;
 * malloc'd. */
char *store_local_canonical(const char *location);
/* store_backend.same_location: both resolve to one directory (a file
 * stands for the directory holding it). */
bool store_local_same_location(const char *a, const char *b);

#endif
