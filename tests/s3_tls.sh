#!/bin/bash
# SPDX-License-Identifier: MIT
#
# s3_tls.sh: an https endpoint with a private CA (AWS_CA_BUNDLE).  The test
# makes a CA and a certificate for 127.0.0.1 with the openssl command, runs
# the test store (s3rver on 127.0.0.1) with it, and converts the golden
# checkpoint S3 -> S3 over TLS (payloads not hashed, as the AWS CLI does
# over TLS): the output equals the golden reference.  Without the CA bundle
# the certificate is refused with a clear configuration error.

. "$(dirname "$0")/lib.sh"

PKI=$TEST_TMP/pki
mkdir -p "$PKI"
if ! {
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.pem" \
		-days 2 -subj "/CN=ckptconv test CA" &&
		openssl req -newkey rsa:2048 -nodes -keyout "$PKI/server.key" \
			-out "$PKI/server.csr" -subj "/CN=127.0.0.1" &&
		printf 'subjectAltName=IP:127.0.0.1\n' >"$PKI/san.ext" &&
		openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
			-CAcreateserial -out "$PKI/server.pem" -days 2 -extfile "$PKI/san.ext"
} >"$TEST_TMP/openssl.log" 2>&1; then
	fail "make a test CA and certificate" "$(tail -3 "$TEST_TMP/openssl.log")"
	finish
fi
S3_TLS_KEY=$PKI/server.key
S3_TLS_CERT=$PKI/server.pem

. "$(dirname "$0")/s3_lib.sh"

need_binary
start_s3rver src-bkt dst-bkt
export AWS_CA_BUNDLE=$PKI/ca.pem
G=$GOLDEN_DIR/tiny

assert_eq "the store's endpoint is https" "https://127.0.0.1:$S3_PORT" "$AWS_ENDPOINT_URL_S3"
s3_upload "$G/hf" s3://src-bkt/tiny/hf/ || fail "upload over https"

expect_ok "s3->s3 over https with AWS_CA_BUNDLE" "$CKPTCONV" convert --to native \
	s3://src-bkt/tiny/hf/ s3://dst-bkt/tls/
if s3_download s3://dst-bkt/tls/ "$TEST_TMP/down"; then
	expect_ok "the output equals golden native" "$CKPTCONV" verify "$G/native" "$TEST_TMP/down"
else
	fail "download over https"
fi

expect_fail "without the CA bundle the certificate is refused" s3_config "AWS_CA_BUNDLE" \
	env -u AWS_CA_BUNDLE "$CKPTCONV" convert --to native s3://src-bkt/tiny/hf/ "$TEST_TMP/x"
expect_empty "nothing written without the CA" "$TEST_TMP/x"

finish
