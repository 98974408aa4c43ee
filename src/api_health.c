/* SPDX-License-Identifier: MIT */
/*
 * api_health: the routes that say how the service is: /healthz (alive),
 * /readyz (accepting jobs), /metrics (Prometheus text), /v1/version, and
 * the jobs page (ui.h).
 */
#include <microhttpd.h>

#include "ckptconv/metrics.h"
#include "ckptconv/registry.h"
#include "ckptconv/ui.h"
#include "api_internal.h"

enum MHD_Result api_handle_healthz(struct api *a, struct MHD_Connection *c, struct request *req)
{
	(void)a;
	return api_respond_json(c, req, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL);
}

enum MHD_Result api_handle_readyz(struct api *a, struct MHD_Connection *c, struct request *req)
{
	const char *why = NULL;

	if (!registry_ready(a->reg, &why))
		return api_respond_errorf(c, req, "", ERR_NOT_READY, "not ready: %s",
					  why ? why : "starting");
	return api_respond_json(c, req, MHD_HTTP_OK, json_pack("{s:s}", "status", "ready"), NULL);
}

enum MHD_Result api_handle_metrics(struct api *a, struct MHD_Connection *c, struct request *req)
{
	size_t len;
	char *text = metrics_render(a->reg, a->pool, &len);

	return api_respond_data(c, req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
				text, len, NULL, NULL);
}

enum MHD_Result api_handle_version(struct api *a, struct MHD_Connection *c, struct request *req)
{
	(void)a;
	return api_respond_json(c, req, MHD_HTTP_OK,
				json_pack("{s:s, s:s, s:s}", "name", PACKAGE_NAME, "version",
					  PACKAGE_VERSION, "api", "v1"),
				NULL);
}

/* The jobs page (ui.h); it needs no token, the API calls it makes do. */
enum MHD_Result api_handle_ui(struct api *a, struct MHD_Connection *c, struct request *req,
			      const char *url)
{
	unsigned status;
	struct MHD_Response *resp = ui_response(
		url, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH),
		&status);

	(void)a;
	if (!resp)
		return api_respond_errorf(c, req, "", ERR_NOT_FOUND, "no route %.200s", url);
	return api_queue(c, req, status, resp);
}
