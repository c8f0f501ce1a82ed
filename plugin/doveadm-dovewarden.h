/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEADM_DOVEWARDEN_H
#define DOVEADM_DOVEWARDEN_H

struct module;

/* doveadm loads lib10_doveadm_dovewarden_plugin.so from
   <moduledir>/doveadm/ into the doveadm CLI and doveadm-server processes.
   The init registers these commands, which talk to the service's admin
   socket (see dovewarden-admin-protocol.h); each also exists under the
   Dovecot 2.3 name "doveadm replicator ...":

     doveadm dovewarden status [-a <socket>] [<user mask>]
     doveadm dovewarden dsync-status [-a <socket>]
     doveadm dovewarden replicate [-a <socket>] [-f] [-p <priority>] <mask>
     doveadm dovewarden add [-a <socket>] <user mask>
     doveadm dovewarden remove [-a <socket>] <user>

   The socket defaults to <base_dir>/dovewarden-admin. Exit codes:
   EX_TEMPFAIL when the service cannot be reached or does not answer,
   EX_USAGE for invalid arguments or a request the service rejected,
   EX_NOUSER when remove names an unknown user. */

/* The module is built with hidden visibility; only these are exported */
#define DOVEADM_DOVEWARDEN_EXPORT __attribute__((visibility("default")))

extern DOVEADM_DOVEWARDEN_EXPORT const char *doveadm_dovewarden_plugin_version;

DOVEADM_DOVEWARDEN_EXPORT
void doveadm_dovewarden_plugin_init(struct module *module);
DOVEADM_DOVEWARDEN_EXPORT
void doveadm_dovewarden_plugin_deinit(void);

#endif
