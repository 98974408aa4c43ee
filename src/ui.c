/* SPDX-License-Identifier: MIT */
/*
 * ui: finds the embedded asset a URL names and answers it with the
 * caching and security headers every page response carries.
 */
#include <microhttpd.h>
#include <stdbool.h>
#include <string.h>

#include "ckptconv/ui.h"

#define UI_PAGE "/ui/index.html"

const struct ui_asset *ui_asset_find(const char *url)
{
	size_t i;

	if (strcmp(url, "/") == 0 || strcmp(url, "/ui") == 0 || strcmp(url, "/ui/") == 0)
		url = UI_PAGE;
	for (i = 0; i < ui_nassets; i++)
		if (strcmp(ui_assets[i].path, url) == 0)
			return &ui_assets[i];
	return NULL;
}

/* Whether an If-None-Match list ("*", or entity tags separated by commas,
 * weak ones W/-prefixed) names etag, compared weakly. */
static bool etag_listed(const char *list, const char *etag)
{
	size_t n = strlen(etag);
	const char *p = list;

	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (p[0] == 'W' && p[1] == '/')
			p += 2;
		if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
			return true;
		while (*p && *p != ',')
			p++;
	}
	return false;
}

struct MHD_Response *ui_response(const char *url, const char *if_none_match, unsigned *status)
{
	const struct ui_asset *asset = ui_asset_find(url);
	struct MHD_Response *resp;
	bool fresh;

	*status = 0;
	if (!asset)
		return NULL;
	fresh = if_none_match && etag_listed(if_none_match, asset->etag);
	resp = MHD_create_response_from_buffer(
		fresh ? 0 : asset->len, fresh ? NULL : (void *)asset->data, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return NULL;
	if (!fresh)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, asset->content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, asset->etag);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	MHD_add_response_header(resp, "Content-Security-Policy", UI_CONTENT_SECURITY_POLICY);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	*status = fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK;
	return resp;
}
