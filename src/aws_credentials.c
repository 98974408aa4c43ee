/* SPDX-License-Identifier: MIT */
/*
 * aws_credentials: the provider.  Its configuration is copied from the
 * environment when it is made; the chain is walked on the first request
 * for credentials, and the source that answered is kept for every
 * refresh.  The current credentials are an immutable, reference-counted
 * snapshot: a request signs with the snapshot it took, whatever replaces
 * it meanwhile.  One fetch runs at a time, on the thread of the request
 * that found it due; while the current credentials are usable the other
 * threads go on with them, and only once they are not do threads wait
 * for the fetch under way (or start one).
 */
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ckptconv/aws_credentials.h"
#include "ckptconv/aws_fetch.h"
#include "ckptconv/aws_profile.h"
#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/util.h"

#define IMDS_ENDPOINT "http://169.254.169.254"
#define IMDS_ENDPOINT_IPV6 "http://[fd00:ec2::254]"
#define RETRY_MIN 1.0 /* seconds between refresh attempts after a failure */
#define RETRY_MAX 60.0

static double realtime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double (*aws_credentials_clock)(void) = realtime;

enum source_kind {
	SOURCE_NONE = -1,
	SOURCE_ENVIRONMENT,
	SOURCE_WEB_IDENTITY,
	SOURCE_SHARED_FILES,
	SOURCE_CONTAINER,
	SOURCE_INSTANCE_METADATA,
	SOURCE_CUSTOM,
};

static const char *const source_names[] = {
	AWS_SOURCE_ENVIRONMENT, AWS_SOURCE_WEB_IDENTITY,      AWS_SOURCE_SHARED_FILES,
	AWS_SOURCE_CONTAINER,	AWS_SOURCE_INSTANCE_METADATA,
};

/* The chain's settings, copied from the environment. */
struct chain {
	char *access_key_id, *secret_access_key, *session_token;
	char *role_arn, *token_file, *session_name, *sts_endpoint, *region;
	char *profile, *config_file, *credentials_file;
	bool profile_named; /* by AWS_PROFILE */
	char *container_relative, *container_full, *container_token, *container_token_file;
	bool imds_disabled;
	char *imds_endpoint;
	long imds_timeout_ms;
	unsigned imds_attempts;
	char *ca_bundle;
};

struct snapshot {
	struct aws_credentials_snapshot pub; /* first: a snapshot is its pub */
	atomic_int refs;
	struct aws_credentials_answer answer;
};

struct aws_credentials {
	atomic_int refs;
	struct chain chain;
	aws_credentials_fetch_fn custom;
	void *custom_arg;
	const char *custom_source;

	pthread_mutex_t lock;  /* protects everything below */
	pthread_cond_t done;   /* a fetch finished */
	enum source_kind kind; /* the source that answered; written by the fetching thread */
	const char *source;
	struct snapshot *current; /* NULL until the first credentials */
	double refresh_at, usable_until, retry_at;
	bool expired; /* aws_credentials_expire said so */
	bool fetching;
	unsigned long fetches, failed_fetch; /* fetches finished; the last that failed */
	struct err fetch_error;		     /* why that one failed */
	unsigned long refreshes;
};

/* ---- configuration ---- */

static char *env_copy(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? xstrdup(v) : NULL;
}

static char *home_path(const char *rest)
{
	const char *home = getenv("HOME");
	struct passwd pw, *found = NULL;
	char buf[4096], *path;

	if (!home || !*home) {
		if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &found) != 0 || !found)
			return NULL;
		home = found->pw_dir;
	}
	if (asprintf(&path, "%s/%s", home, rest) < 0)
		abort();
	return path;
}

/* A file setting: the variable (a leading "~/" is the home directory) or
 * the default under the home directory. */
static char *file_setting(const char *variable, const char *default_rest)
{
	const char *v = getenv(variable);

	if (v && strncmp(v, "~/", 2) == 0)
		return home_path(v + 2);
	if (v && *v)
		return xstrdup(v);
	return home_path(default_rest);
}

static void strip_trailing_slash(char *url)
{
	size_t len = url ? strlen(url) : 0;

	while (len > 0 && url[len - 1] == '/')
		url[--len] = '\0';
}

static unsigned long env_number(const char *name, unsigned long fallback, unsigned long max)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return fallback;
	n = strtoul(v, &end, 10);
	if (*end || n < 1)
		return fallback;
	return n > max ? max : n;
}

static void chain_from_environment(struct chain *c)
{
	const char *mode = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	const char *disabled = getenv("AWS_EC2_METADATA_DISABLED");

	c->access_key_id = env_copy("AWS_ACCESS_KEY_ID");
	c->secret_access_key = env_copy("AWS_SECRET_ACCESS_KEY");
	c->session_token = env_copy("AWS_SESSION_TOKEN");
	c->role_arn = env_copy("AWS_ROLE_ARN");
	c->token_file = env_copy("AWS_WEB_IDENTITY_TOKEN_FILE");
	c->session_name = env_copy("AWS_ROLE_SESSION_NAME");
	c->sts_endpoint = env_copy("AWS_ENDPOINT_URL_STS");
	if (!c->sts_endpoint)
		c->sts_endpoint = env_copy("AWS_ENDPOINT_URL");
	strip_trailing_slash(c->sts_endpoint);
	c->region = env_copy("AWS_REGION");
	if (!c->region)
		c->region = env_copy("AWS_DEFAULT_REGION");
	c->profile = env_copy("AWS_PROFILE");
	c->profile_named = c->profile != NULL;
	if (!c->profile)
		c->profile = xstrdup("default");
	c->config_file = file_setting("AWS_CONFIG_FILE", ".aws/config");
	c->credentials_file = file_setting("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
	c->container_relative = env_copy("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	c->container_full = env_copy("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	c->container_token = env_copy("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	c->container_token_file = env_copy("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	c->imds_disabled = disabled && strcasecmp(disabled, "true") == 0;
	c->imds_endpoint = env_copy("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	if (!c->imds_endpoint)
		c->imds_endpoint = xstrdup(
			mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_ENDPOINT_IPV6 : IMDS_ENDPOINT);
	strip_trailing_slash(c->imds_endpoint);
	c->imds_timeout_ms = (long)env_number("AWS_METADATA_SERVICE_TIMEOUT", 1, 600) * 1000;
	c->imds_attempts = (unsigned)env_number("AWS_METADATA_SERVICE_NUM_ATTEMPTS", 1, 10);
	c->ca_bundle = env_copy("AWS_CA_BUNDLE");
}

static void chain_fini(struct chain *c)
{
	secret_free(c->access_key_id);
	secret_free(c->secret_access_key);
	secret_free(c->session_token);
	secret_free(c->container_token);
	free(c->role_arn);
	free(c->token_file);
	free(c->session_name);
	free(c->sts_endpoint);
	free(c->region);
	free(c->profile);
	free(c->config_file);
	free(c->credentials_file);
	free(c->container_relative);
	free(c->container_full);
	free(c->container_token_file);
	free(c->imds_endpoint);
	free(c->ca_bundle);
}

/* ---- the sources ---- */

static void static_answer(const char *key, const char *secret, const char *token,
			  struct aws_credentials_answer *out)
{
	out->access_key_id = xstrdup(key);
	out->secret_access_key = xstrdup(secret);
	out->session_token = token && *token ? xstrdup(token) : NULL;
	out->expiration = 0;
}

/* 1 when the environment holds keys (*out filled), 0 when it holds none. */
static int from_environment(const struct chain *c, struct aws_credentials_answer *out,
			    struct err *e)
{
	if (!c->access_key_id && !c->secret_access_key)
		return 0;
	if (!c->access_key_id || !c->secret_access_key)
		return err_set(e, ERR_S3_CREDENTIALS, "environment: %s is set but %s is not",
			       c->access_key_id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			       c->access_key_id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
	static_answer(c->access_key_id, c->secret_access_key, c->session_token, out);
	return 1;
}

static int from_web_identity(const struct chain *c, struct aws_credentials_answer *out,
			     struct err *e)
{
	char *endpoint = c->sts_endpoint ? xstrdup(c->sts_endpoint) :
					   aws_sts_regional_endpoint(c->region);
	char session[64];
	struct aws_sts_config sts = {
		.endpoint = endpoint,
		.role_arn = c->role_arn,
		.token_file = c->token_file,
		.session_name = c->session_name,
		.ca_bundle = c->ca_bundle,
	};
	int rc;

	if (!endpoint)
		return err_set(e, ERR_S3_CREDENTIALS,
			       "web identity: region '%.64s' (AWS_REGION) is not a region name",
			       c->region);
	if (!sts.session_name) {
		snprintf(session, sizeof(session), "ckptconv-%lld",
			 (long long)aws_credentials_clock());
		sts.session_name = session;
	}
	rc = aws_sts_fetch(&sts, out, e);
	free(endpoint);
	return rc;
}

/* The profile's credential settings other than keys, which ckptconv
 * does not follow. */
static const char *const other_ways[] = {"role_arn", "credential_process", "sso_session",
					 "sso_start_url", "web_identity_token_file"};

/* 1 with *out filled when the profile holds keys, 0 when the profile is
 * the default one and is not defined or holds no credential settings. */
static int from_shared_files(const struct chain *c, struct aws_credentials_answer *out,
			     struct err *e)
{
	struct aws_profiles *ps;
	const char *key, *secret;
	size_t i;
	int rc = -1;

	if (aws_profiles_load(c->config_file, c->credentials_file, &ps, e) < 0)
		return -1;
	if (!aws_profiles_has(ps, c->profile)) {
		if (!c->profile_named)
			rc = 0;
		else
			err_set(e, ERR_S3_CREDENTIALS,
				"shared files: profile '%.100s' (AWS_PROFILE) is in neither %s nor "
				"%s",
				c->profile, c->config_file ? c->config_file : "(no config file)",
				c->credentials_file ? c->credentials_file :
						      "(no credentials file)");
		goto out;
	}
	key = aws_profiles_get(ps, c->profile, "aws_access_key_id");
	secret = aws_profiles_get(ps, c->profile, "aws_secret_access_key");
	if (key && *key && secret && *secret) {
		static_answer(key, secret, aws_profiles_get(ps, c->profile, "aws_session_token"),
			      out);
		rc = 1;
		goto out;
	}
	if ((key && *key) || (secret && *secret)) {
		err_set(e, ERR_S3_CREDENTIALS, "shared files: profile '%.100s' has %s but not %s",
			c->profile, key && *key ? "aws_access_key_id" : "aws_secret_access_key",
			key && *key ? "aws_secret_access_key" : "aws_access_key_id");
		goto out;
	}
	for (i = 0; i < sizeof(other_ways) / sizeof(other_ways[0]); i++)
		if (aws_profiles_get(ps, c->profile, other_ways[i])) {
			err_set(e, ERR_S3_CREDENTIALS,
				"shared files: profile '%.100s' gets its credentials through %s, "
				"which ckptconv does not support (give it aws_access_key_id and "
				"aws_secret_access_key, or use web identity, container or instance "
				"credentials)",
				c->profile, other_ways[i]);
			goto out;
		}
	rc = 0;
out:
	aws_profiles_free(ps);
	return rc;
}

static int from_container(const struct chain *c, struct aws_credentials_answer *out, struct err *e)
{
	struct aws_container_config cc = {
		.token_file = c->container_token_file,
		.token = c->container_token,
		.ca_bundle = c->ca_bundle,
	};
	char *url = aws_container_url(c->container_relative, c->container_full, e);
	int rc;

	if (!url)
		return -1;
	cc.url = url;
	rc = aws_container_fetch(&cc, out, e);
	free(url);
	return rc;
}

static int from_instance_metadata(const struct chain *c, struct aws_credentials_answer *out,
				  struct err *e)
{
	struct aws_imds_config ic = {
		.endpoint = c->imds_endpoint,
		.timeout_ms = c->imds_timeout_ms,
		.attempts = c->imds_attempts,
	};

	if (strncasecmp(ic.endpoint, "http://", 7) != 0 &&
	    strncasecmp(ic.endpoint, "https://", 8) != 0)
		return err_set(
			e, ERR_S3_CREDENTIALS,
			"instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT '%.200s' is not "
			"an http:// or https:// URL",
			ic.endpoint);
	return aws_imds_fetch(&ic, out, e);
}

/* Credentials from the source of `kind` (a refresh). */
static int fetch_from(struct aws_credentials *p, enum source_kind kind,
		      struct aws_credentials_answer *out, struct err *e)
{
	const struct chain *c = &p->chain;

	switch (kind) {
	case SOURCE_ENVIRONMENT:
		return from_environment(c, out, e) == 1 ? 0 : -1;
	case SOURCE_WEB_IDENTITY:
		return from_web_identity(c, out, e);
	case SOURCE_SHARED_FILES:
		return from_shared_files(c, out, e) == 1 ? 0 : -1;
	case SOURCE_CONTAINER:
		return from_container(c, out, e);
	case SOURCE_INSTANCE_METADATA:
		return from_instance_metadata(c, out, e);
	case SOURCE_CUSTOM:
		return p->custom(p->custom_arg, out, e);
	case SOURCE_NONE:
		break;
	}
	return err_set(e, ERR_INTERNAL_ERROR, "credentials from no source");
}

/* Walks the chain: the first configured source answers or fails. */
static int resolve(struct aws_credentials *p, struct aws_credentials_answer *out,
		   enum source_kind *kind, struct err *e)
{
	const struct chain *c = &p->chain;
	struct err inner = {0};
	int found;

	if (p->custom) {
		*kind = SOURCE_CUSTOM;
		return p->custom(p->custom_arg, out, e);
	}
	*kind = SOURCE_ENVIRONMENT;
	found = from_environment(c, out, e);
	if (found != 0)
		return found < 0 ? -1 : 0;
	*kind = SOURCE_WEB_IDENTITY;
	if (c->role_arn && c->token_file)
		return from_web_identity(c, out, e);
	*kind = SOURCE_SHARED_FILES;
	found = from_shared_files(c, out, e);
	if (found != 0)
		return found < 0 ? -1 : 0;
	*kind = SOURCE_CONTAINER;
	if (c->container_relative || c->container_full)
		return from_container(c, out, e);
	*kind = SOURCE_INSTANCE_METADATA;
	if (c->imds_disabled)
		return err_set(
			e, ERR_S3_CREDENTIALS,
			"no credentials: none in the environment (AWS_ACCESS_KEY_ID), no web "
			"identity (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE), none in "
			"profile '%.100s' of the shared files, no container endpoint "
			"(AWS_CONTAINER_CREDENTIALS_*), and the instance metadata service is "
			"disabled (AWS_EC2_METADATA_DISABLED)",
			c->profile);
	if (from_instance_metadata(c, out, &inner) == 0)
		return 0;
	return err_set(e, inner.code,
		       "no credentials in the environment, a web identity, the shared files or a "
		       "container endpoint, and %s",
		       inner.msg);
}

/* ---- snapshots ---- */

void aws_credentials_answer_fini(struct aws_credentials_answer *a)
{
	secret_free(a->access_key_id);
	secret_free(a->secret_access_key);
	secret_free(a->session_token);
	memset(a, 0, sizeof(*a));
}

static struct snapshot *snapshot_new(struct aws_credentials_answer *a, const char *source)
{
	struct snapshot *s = xcalloc(1, sizeof(*s));

	s->answer = *a;
	memset(a, 0, sizeof(*a));
	atomic_init(&s->refs, 1);
	s->pub.access_key_id = s->answer.access_key_id;
	s->pub.secret_access_key = s->answer.secret_access_key;
	s->pub.session_token = s->answer.session_token;
	s->pub.expiration = s->answer.expiration;
	s->pub.source = source;
	return s;
}

static void snapshot_unref(struct snapshot *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
		aws_credentials_answer_fini(&s->answer);
		free(s);
	}
}

void aws_credentials_release(const struct aws_credentials_snapshot *s)
{
	snapshot_unref((struct snapshot *)(uintptr_t)s);
}

/* ---- the provider ---- */

static struct aws_credentials *provider_new(void)
{
	struct aws_credentials *p = xcalloc(1, sizeof(*p));

	atomic_init(&p->refs, 1);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->done, NULL);
	p->kind = SOURCE_NONE;
	return p;
}

struct aws_credentials *aws_credentials_new(void)
{
	struct aws_credentials *p = provider_new();

	chain_from_environment(&p->chain);
	return p;
}

struct aws_credentials *aws_credentials_new_custom(const char *source,
						   aws_credentials_fetch_fn fetch, void *arg)
{
	struct aws_credentials *p = provider_new();

	p->custom = fetch;
	p->custom_arg = arg;
	p->custom_source = source;
	return p;
}

struct aws_credentials *aws_credentials_ref(struct aws_credentials *p)
{
	atomic_fetch_add(&p->refs, 1);
	return p;
}

void aws_credentials_unref(struct aws_credentials *p)
{
	if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	snapshot_unref(p->current);
	chain_fini(&p->chain);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->done);
	free(p);
}

void aws_credentials_schedule(double obtained, double expiration, double *refresh_at,
			      double *usable_until)
{
	double lifetime = expiration > obtained ? expiration - obtained : 0;

	*refresh_at = expiration - fmin(AWS_CREDENTIALS_REFRESH_AHEAD, lifetime / 2);
	*usable_until = expiration - fmin(10, lifetime / 10);
}

static void format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Installs fetched credentials (lock held). */
static void install_locked(struct aws_credentials *p, struct aws_credentials_answer *a,
			   enum source_kind kind, double now)
{
	bool first = p->kind == SOURCE_NONE;
	char when[32] = "never";

	if (first) {
		p->kind = kind;
		p->source = kind == SOURCE_CUSTOM ? p->custom_source : source_names[kind];
	} else {
		p->refreshes++;
	}
	snapshot_unref(p->current);
	p->current = snapshot_new(a, p->source);
	if (p->current->pub.expiration) {
		aws_credentials_schedule(now, (double)p->current->pub.expiration, &p->refresh_at,
					 &p->usable_until);
		format_time(p->current->pub.expiration, when, sizeof(when));
	} else {
		p->refresh_at = p->usable_until = INFINITY;
	}
	p->retry_at = 0;
	p->expired = false;
	log_msg(LOG_DEBUG, NULL, "object storage credentials %s from %s; they expire: %s",
		first ? "obtained" : "refreshed", p->source, when);
}

/* Every source's answer: keys and token that can go into a request's
 * headers (no CR or LF to start a header of their own). */
static int answer_check(const char *source, const struct aws_credentials_answer *a, struct err *e)
{
	if (aws_credential_text_check(source, "access key id", a->access_key_id, e) < 0 ||
	    aws_credential_text_check(source, "secret access key", a->secret_access_key, e) < 0 ||
	    (a->session_token &&
	     aws_credential_text_check(source, "session token", a->session_token, e) < 0))
		return -1;
	return 0;
}

/* Fetches with the lock released; the caller set p->fetching.  Returns
 * 0 when new credentials are in place, else -1 with p->fetch_error set. */
static int fetch_locked(struct aws_credentials *p)
{
	struct aws_credentials_answer a = {0};
	enum source_kind kind = p->kind;
	struct err e = {0};
	double now;
	int rc;

	p->fetching = true;
	pthread_mutex_unlock(&p->lock);
	if (kind == SOURCE_NONE)
		rc = resolve(p, &a, &kind, &e);
	else
		rc = fetch_from(p, kind, &a, &e);
	now = aws_credentials_clock();
	if (rc == 0)
		rc = answer_check(kind == SOURCE_CUSTOM ? p->custom_source : source_names[kind], &a,
				  &e);
	if (rc == 0 && a.expiration && (double)a.expiration <= now) {
		char when[32];

		format_time(a.expiration, when, sizeof(when));
		rc = err_set(&e, ERR_S3_CREDENTIALS,
			     "%s: the credentials answered expired at %s, before they were used",
			     kind == SOURCE_CUSTOM ? p->custom_source : source_names[kind], when);
	}
	pthread_mutex_lock(&p->lock);
	p->fetching = false;
	p->fetches++;
	if (rc == 0) {
		install_locked(p, &a, kind, now);
	} else {
		if (!e.code)
			err_set(&e, ERR_INTERNAL_ERROR,
				"a credentials source failed without saying why");
		p->fetch_error = e;
		p->failed_fetch = p->fetches;
		if (p->current && now < p->usable_until) {
			double left = p->usable_until - now;

			p->retry_at = now + fmax(RETRY_MIN, fmin(RETRY_MAX, left / 4));
			log_warn("refreshing the object storage credentials from %s failed (the "
				 "current ones are usable for %.0f s more; next try in %.0f s): %s",
				 p->source, left, p->retry_at - now, e.msg);
		} else if (p->current) {
			log_warn("the object storage credentials from %s expired and refreshing "
				 "them failed: %s",
				 p->source, e.msg);
		}
	}
	aws_credentials_answer_fini(&a);
	pthread_cond_broadcast(&p->done);
	return rc;
}

int aws_credentials_get(struct aws_credentials *p, const struct aws_credentials_snapshot **out,
			struct err *e)
{
	unsigned long seen;
	double now;
	int rc = -1;

	*out = NULL;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		now = aws_credentials_clock();
		if (p->current && !p->expired && now < p->usable_until) {
			if (now >= p->refresh_at && now >= p->retry_at && !p->fetching) {
				fetch_locked(p);
				continue;
			}
			atomic_fetch_add(&p->current->refs, 1);
			*out = &p->current->pub;
			rc = 0;
			break;
		}
		if (p->fetching) {
			seen = p->fetches;
			while (p->fetching)
				pthread_cond_wait(&p->done, &p->lock);
			if (p->failed_fetch > seen &&
			    !(p->current && !p->expired &&
			      aws_credentials_clock() < p->usable_until)) {
				if (e && !err_is_set(e))
					*e = p->fetch_error;
				break;
			}
			continue;
		}
		if (fetch_locked(p) < 0) {
			if (e && !err_is_set(e))
				*e = p->fetch_error;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void aws_credentials_expire(struct aws_credentials *p, const struct aws_credentials_snapshot *used)
{
	pthread_mutex_lock(&p->lock);
	if (p->current && &p->current->pub == used && used->expiration)
		p->expired = true;
	pthread_mutex_unlock(&p->lock);
}

const char *aws_credentials_source(struct aws_credentials *p)
{
	const char *s;

	pthread_mutex_lock(&p->lock);
	s = p->source;
	pthread_mutex_unlock(&p->lock);
	return s;
}

unsigned long aws_credentials_refreshes(struct aws_credentials *p)
{
	unsigned long n;

	pthread_mutex_lock(&p->lock);
	n = p->refreshes;
	pthread_mutex_unlock(&p->lock);
	return n;
}
