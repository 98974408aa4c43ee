/* SPDX-License-Identifier: MIT */
/*
 * ui: the jobs page the daemon serves at / and /ui/: one HTML page, its
 * style sheet, script and icon (src/ui/), compiled into the binary at build
 * time (scripts/embed-assets.sh), so the page works offline and loads
 * nothing from elsewhere.  Every answer carries a strong ETag (the first 16
 * hex digits of the asset's SHA-256), "Cache-Control: no-cache" (revalidate,
 * then 304) and a Content-Security-Policy that allows the daemon's own
 * origin only, with no inline script or style (W3C CSP Level 3).
 *
 * Threads: any; the assets are immutable.
 */
#ifndef CKPTCONV_UI_H
#define CKPTCONV_UI_H

#include <stddef.h>

struct MHD_Response;

struct ui_asset {
	const char *path;	   /* "/ui/app.js"; the page is "/ui/index.html" */
	const unsigned char *data; /* static, never freed */
	size_t len;		   /* bytes */
	const char *content_type;  /* with charset for text */
	const char *etag;	   /* quoted, e.g. "\"0123456789abcdef\"" */
};

/* The embedded assets (generated ui_assets.c). */
extern const struct ui_asset ui_assets[];
extern const size_t ui_nassets;

#define UI_CONTENT_SECURITY_POLICY                                                     \
	"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "    \
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; " \
	"frame-ancestors 'none'"

/* The asset served at `url` ("/", "/ui" and "/ui/" are the page), or NULL. */
const struct ui_asset *ui_asset_find(const char *url);

/* The response for `url`: 200 with the asset, or 304 without a body when
 * `if_none_match` (the request's If-None-Match, may be NULL) names its
 * ETag (RFC 9110 section 13.1.2).  *status receives the status.  NULL when
 * no asset is served there, or on out-of-memory (then *status is 0). */
struct MHD_Response *ui_response(const char *url, const char *if_none_match, unsigned *status);

#endif
