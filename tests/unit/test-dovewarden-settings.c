/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-compat.h"
#include "dovewarden-config.h"
#include "dovewarden-settings-private.h"

#include <criterion/criterion.h>

static void suite_init(void)
{
	lib_init();
}

static void suite_fini(void)
{
	lib_deinit();
}

TestSuite(settings, .init = suite_init, .fini = suite_fini);

static bool check(const struct dovewarden_settings *set, const char **error_r)
{
	struct dovewarden_settings copy = *set;

	*error_r = NULL;
	return dovewarden_settings_check(&copy, NULL, error_r);
}

Test(settings, check_defaults)
{
	const char *error;

	cr_assert(check(&dovewarden_default_settings, &error), "%s", error);
}

Test(settings, check_max_syncs)
{
	struct dovewarden_settings set = dovewarden_default_settings;
	const char *error;

	set.dovewarden_max_syncs = 0;
	cr_assert_not(check(&set, &error));
	cr_assert_str_eq(error, "dovewarden_max_syncs must not be 0");
}

Test(settings, check_redis_backend)
{
	struct dovewarden_settings set = dovewarden_default_settings;
	const char *error;

	set.dovewarden_queue_backend = "redis";
#ifdef DOVEWARDEN_HAVE_REDIS
	cr_assert(check(&set, &error), "%s", error);
#else
	/* refused at startup, not ignored */
	cr_assert_not(check(&set, &error));
	cr_assert_not_null(strstr(error, "built without the Redis backend"),
			   "%s", error);
#endif
}

Test(settings, check_redis_ssl)
{
	struct dovewarden_settings set = dovewarden_default_settings;
	const char *error;

	set.dovewarden_queue_backend = "redis";
	set.dovewarden_redis_ssl = TRUE;
#if defined(DOVEWARDEN_HAVE_REDIS_TLS)
	cr_assert(check(&set, &error), "%s", error);
#elif defined(DOVEWARDEN_HAVE_REDIS)
	/* refused at startup: never Redis in clear instead */
	cr_assert_not(check(&set, &error));
	cr_assert_not_null(strstr(error, "without TLS to Redis"), "%s", error);
#endif
}

#if !DOVECOT_PREREQ(2, 4, 0)
/* 2.3: the per-user settings from plugin { } and userdb fields */
static const char *const *test_env;

static const char *test_getenv(const char *key, void *context ATTR_UNUSED)
{
	unsigned int i;

	for (i = 0; test_env[i] != NULL; i += 2) {
		if (strcmp(test_env[i], key) == 0)
			return test_env[i + 1];
	}
	return NULL;
}

static int from_env(const char *const *env,
		    const struct dovewarden_settings **set_r,
		    const char **error_r)
{
	test_env = env;
	*error_r = NULL;
	return dovewarden_settings_from_env(&dovewarden_default_settings,
					    test_getenv, NULL, set_r, error_r);
}

Test(settings, env_defaults)
{
	static const char *const env[] = { NULL };
	const struct dovewarden_settings *set;
	const char *error;

	cr_assert_eq(from_env(env, &set, &error), 0, "%s", error);
	cr_assert_str_eq(dovewarden_settings_get_replica(set), "");
	cr_assert_str_eq(set->dovewarden_notify_socket_path,
			 "dovewarden-notify");
	cr_assert_not(dovewarden_settings_is_noreplicate(set));
	cr_assert_eq(set->dovewarden_sync_wait, 0);
	dovewarden_settings_free(&set);
	cr_assert_null(set);
}

Test(settings, env_values)
{
	static const char *const env[] = {
		"mail_replica", "tcp:peer:12345",
		"dovewarden_sync_wait", "5s",
		"dovewarden_notify_socket_path", "/run/dw-notify",
		NULL
	};
	const struct dovewarden_settings *set;
	const char *error;

	cr_assert_eq(from_env(env, &set, &error), 0, "%s", error);
	cr_assert_str_eq(dovewarden_settings_get_replica(set),
			 "tcp:peer:12345");
	cr_assert_eq(set->dovewarden_sync_wait, 5000);
	cr_assert_str_eq(set->dovewarden_notify_socket_path,
			 "/run/dw-notify");
	/* the service's settings stay the defaults */
	cr_assert_eq(set->dovewarden_max_syncs,
		     dovewarden_default_settings.dovewarden_max_syncs);
	dovewarden_settings_free(&set);
}

Test(settings, env_noreplicate)
{
	/* as 2.3's mail_user_plugin_getenv_bool(): set is yes, also
	   empty, unless it starts with n, f or 0 */
	static const struct {
		const char *value;
		bool noreplicate;
	} tests[] = {
		{ "yes", TRUE }, { "", TRUE }, { "1", TRUE }, { "y", TRUE },
		{ "no", FALSE }, { "No", FALSE }, { "0", FALSE },
		{ "false", FALSE },
	};
	const struct dovewarden_settings *set;
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(tests); i++) {
		const char *const env[] = {
			"mail_replica", "tcp:peer",
			"noreplicate", tests[i].value, NULL
		};

		cr_assert_eq(from_env(env, &set, &error), 0, "%s", error);
		cr_assert_eq(dovewarden_settings_is_noreplicate(set),
			     tests[i].noreplicate, "'%s'", tests[i].value);
		dovewarden_settings_free(&set);
	}
}

Test(settings, env_invalid)
{
	static const char *const bad_wait[] = {
		"dovewarden_sync_wait", "soon", NULL
	};
	static const char *const bad_replica[] = {
		"dovewarden_replica", "peer:12345", NULL
	};
	const struct dovewarden_settings *set = NULL;
	const char *error;

	cr_assert_eq(from_env(bad_wait, &set, &error), -1);
	cr_assert(str_begins_with(error, "dovewarden_sync_wait: "), "%s",
		  error);
	cr_assert_null(set);
	cr_assert_eq(from_env(bad_replica, &set, &error), -1);
	cr_assert_not_null(strstr(error, "peer:12345"), "%s", error);
	cr_assert_null(set);
}
#endif

#if !DOVECOT_PREREQ(2, 4, 0)
/* 2.3's replication settings keep meaning the same */
Test(settings, replication_sync_timeout)
{
	static const char *const old_name[] = {
		"mail_replica", "tcp:peer",
		"replication_sync_timeout", "3", NULL
	};
	static const char *const with_unit[] = {
		"replication_sync_timeout", "2 mins", NULL
	};
	static const char *const both[] = {
		"mail_replica", "tcp:peer",
		"replication_sync_timeout", "3",
		"dovewarden_sync_wait", "500ms", NULL
	};
	static const char *const bad[] = {
		"replication_sync_timeout", "soon", NULL
	};
	static const char *const huge[] = {
		"replication_sync_timeout", "4294968", NULL
	};
	const struct dovewarden_settings *set = NULL;
	const char *error;

	/* seconds, as 2.3's replication plugin read it */
	cr_assert_eq(from_env(old_name, &set, &error), 0, "%s", error);
	cr_assert_eq(set->dovewarden_sync_wait, 3000);
	dovewarden_settings_free(&set);
	cr_assert_eq(from_env(with_unit, &set, &error), 0, "%s", error);
	cr_assert_eq(set->dovewarden_sync_wait, 2 * 60 * 1000);
	dovewarden_settings_free(&set);
	/* the dovewarden name wins */
	cr_assert_eq(from_env(both, &set, &error), 0, "%s", error);
	cr_assert_eq(set->dovewarden_sync_wait, 500);
	dovewarden_settings_free(&set);

	/* an invalid value is logged and means no wait, as 2.3's plugin
	   took it: it must not turn replication off */
	cr_assert_eq(from_env(bad, &set, &error), 0, "%s", error);
	cr_assert_eq(set->dovewarden_sync_wait, 0);
	dovewarden_settings_free(&set);
	cr_assert_eq(from_env(huge, &set, &error), 0, "%s", error);
	cr_assert_eq(set->dovewarden_sync_wait, 0);
	dovewarden_settings_free(&set);
}

Test(settings, replication_service_names)
{
#define DAY (24 * 60 * 60)
	/* the replication_* values, the dovewarden_* ones, and the
	   dovewarden_* ones after the mapping */
	static const struct {
		unsigned int repl_interval, repl_conns;
		unsigned int interval, max_syncs;
		unsigned int want_interval, want_max_syncs;
	} tests[] = {
		/* neither set: the defaults (the same for both names) */
		{ DAY, 10, DAY, 10, DAY, 10 },
		/* only the 2.3 names set */
		{ 7200, 5, DAY, 10, 7200, 5 },
		{ 0, 5, DAY, 10, 0, 5 },
		/* both set: the dovewarden names win */
		{ 7200, 5, 10800, 7, 10800, 7 },
		{ 7200, 10, 10800, 7, 10800, 7 },
	};
	struct dovewarden_settings set;
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(tests); i++) {
		set = dovewarden_default_settings;
		set.replication_full_sync_interval = tests[i].repl_interval;
		set.replication_max_conns = tests[i].repl_conns;
		set.dovewarden_full_sync_interval = tests[i].interval;
		set.dovewarden_max_syncs = tests[i].max_syncs;
		dovewarden_settings_apply_replication_names(&set);
		cr_assert_eq(set.dovewarden_full_sync_interval,
			     tests[i].want_interval, "test %u", i);
		cr_assert_eq(set.dovewarden_max_syncs,
			     tests[i].want_max_syncs, "test %u", i);
	}
#undef DAY

	/* the mapped value is checked like the dovewarden one */
	set = dovewarden_default_settings;
	set.replication_max_conns = 0;
	dovewarden_settings_apply_replication_names(&set);
	cr_assert_not(check(&set, &error));
	cr_assert_str_eq(error, "dovewarden_max_syncs must not be 0");
}
#endif
