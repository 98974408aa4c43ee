/* SPDX-License-Identifier: MIT */
/*
 * fuzz_s3_xml: the parsers of S3's XML answers.  The input is an answer's
 * body; it goes to each of them, as any of them may receive any body:
 * the error answer, a ListObjectsV2 page (appended to a listing that
 * already holds a page, as the second page of a listing is), the answers
 * of CreateMultipartUpload and CompleteMultipartUpload, and a
 * ListMultipartUploads page.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/xml.dict
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/s3.h"
#include "fuzz.h"

#define WHERE "s3://bucket/prefix/"

static const char first_page[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>bucket</Name><Prefix>prefix/</Prefix><KeyCount>1</KeyCount>"
	"<MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated>"
	"<NextContinuationToken>token1</NextContinuationToken>"
	"<Contents><Key>prefix/config.json</Key><Size>1017</Size></Contents>"
	"</ListBucketResult>";

static void list(const char *body, size_t len)
{
	struct s3_listing l = {0};
	struct err e = {0};
	char *token = NULL;
	bool truncated;
	size_t i;
	int rc;

	rc = s3_list_answer_parse(first_page, strlen(first_page), WHERE, &l, &truncated, &token,
				  &e);
	if (rc || !truncated || !token || l.nobjects != 1)
		fuzz_fail("the first listing page does not parse: %s", e.msg);
	free(token);
	token = NULL;
	rc = s3_list_answer_parse(body, len, WHERE, &l, &truncated, &token, &e);
	fuzz_check_err("s3_list_answer_parse", rc, &e);
	if (rc == 0 && truncated && !token)
		fuzz_fail("a truncated listing was accepted without a continuation token");
	if (rc && token)
		fuzz_fail("s3_list_answer_parse failed but returned a continuation token");
	if (l.nobjects < 1 || strcmp(l.objects[0].key, "prefix/config.json") != 0)
		fuzz_fail("the second page changed the first page's objects");
	for (i = 0; i < l.nobjects; i++)
		if (!l.objects[i].key)
			fuzz_fail("object %zu has no key", i);
	for (i = 0; i < l.nprefixes; i++)
		if (!l.prefixes[i])
			fuzz_fail("common prefix %zu is NULL", i);
	free(token);
	s3_listing_fini(&l);
}

static void create_multipart(const char *body, size_t len)
{
	struct err e = {0};
	char *upload_id = NULL;
	int rc;

	rc = s3_create_multipart_answer_parse(body, len, WHERE, &upload_id, &e);
	fuzz_check_err("s3_create_multipart_answer_parse", rc, &e);
	if (rc == 0 && (!upload_id || !*upload_id))
		fuzz_fail("CreateMultipartUpload's answer was accepted without an UploadId");
	if (rc && upload_id)
		fuzz_fail("s3_create_multipart_answer_parse failed but returned an UploadId");
	free(upload_id);
}

static void list_uploads(const char *body, size_t len)
{
	char *next_key = NULL, *next_upload = NULL;
	struct s3_uploads u = {0};
	struct err e = {0};
	bool truncated;
	size_t i;
	int rc;

	rc = s3_uploads_answer_parse(body, len, WHERE, &u, &truncated, &next_key, &next_upload,
				     &e);
	fuzz_check_err("s3_uploads_answer_parse", rc, &e);
	if (rc == 0 && truncated && !next_key)
		fuzz_fail("a truncated upload listing was accepted without NextKeyMarker");
	if (rc && (next_key || next_upload))
		fuzz_fail("s3_uploads_answer_parse failed but returned markers");
	for (i = 0; i < u.n; i++)
		if (!u.uploads[i].key || !u.uploads[i].upload_id)
			fuzz_fail("upload %zu lacks its key or upload id", i);
	free(next_key);
	free(next_upload);
	s3_uploads_fini(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct s3_error_answer answer;
	struct err e = {0};
	const char *body = (const char *)data;
	int rc;

	s3_error_answer_parse(body, size, &answer);
	if (!memchr(answer.code, '\0', sizeof(answer.code)) ||
	    !memchr(answer.message, '\0', sizeof(answer.message)))
		fuzz_fail("an error answer's code or message is not terminated");
	list(body, size);
	create_multipart(body, size);
	list_uploads(body, size);
	rc = s3_complete_multipart_answer_parse(body, size, WHERE, NULL, &e);
	fuzz_check_err("s3_complete_multipart_answer_parse", rc, &e);
	return 0;
}
