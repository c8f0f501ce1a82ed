/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_USERDB_H
#define DOVEWARDEN_USERDB_H

/* Per-user replication settings from the userdb, looked up through the
   auth-userdb socket. Mail processes get these as setting overrides; the
   service has no mail user, so it reads the fields itself. */

struct dovewarden_userdb_info {
	/* dovewarden_replica, else mail_replica from the userdb; NULL when
	   the userdb has neither (then the global setting applies) */
	const char *replica;
	/* dovewarden_noreplicate or noreplicate is true */
	bool noreplicate;
	/* The uid the user's mail runs as, if the userdb returns it
	   (uid_set) */
	uid_t uid;
	bool uid_set;
	/* The username as the userdb returned it (its user field, or the
	   name after auth_username_format), NULL if the same */
	const char *canonical;
};

/* Apply userdb fields ("key=value" strings) to info. A noreplicate field
   is true unless its value is no, n, 0 or false (case-insensitive); a
   bare key or an empty value is true. */
void dovewarden_userdb_fields_apply(const char *const *fields,
				    struct dovewarden_userdb_info *info);

/* socket_path is the absolute path of the auth-userdb socket. Lookups
   time out after timeout_msecs; results are cached for cache_secs. */
struct dovewarden_userdb *
dovewarden_userdb_init(const char *socket_path, unsigned int timeout_msecs,
		       unsigned int cache_secs, struct event *event_parent);
void dovewarden_userdb_deinit(struct dovewarden_userdb **userdb);

/* Look up the user's fields. This blocks for at most the timeout.
   Returns 1 and fills info_r (its strings on the data stack), 0 when the
   user does not exist, -1 with error_r when the lookup failed. */
int dovewarden_userdb_lookup(struct dovewarden_userdb *userdb,
			     const char *username,
			     struct dovewarden_userdb_info *info_r,
			     const char **error_r);

#endif
