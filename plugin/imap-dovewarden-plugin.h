/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef IMAP_DOVEWARDEN_PLUGIN_H
#define IMAP_DOVEWARDEN_PLUGIN_H

/* The IMAP part, lib30_imap_dovewarden_plugin.so: with it, an APPEND that
   waits for its replication (dovewarden_sync_wait) holds back only its own
   tagged reply instead of the whole imap process. Enabled in imap only:
     protocol imap {
       mail_plugins {
         imap_dovewarden = yes
       }
     }
   These are its only exported symbols. */

#define IMAP_DOVEWARDEN_PLUGIN_EXPORT __attribute__((visibility("default")))

struct module;

extern IMAP_DOVEWARDEN_PLUGIN_EXPORT const char *imap_dovewarden_plugin_version;
extern IMAP_DOVEWARDEN_PLUGIN_EXPORT const char *imap_dovewarden_plugin_dependencies[];
extern IMAP_DOVEWARDEN_PLUGIN_EXPORT const char imap_dovewarden_plugin_binary_dependency[];

IMAP_DOVEWARDEN_PLUGIN_EXPORT void imap_dovewarden_plugin_init(struct module *module);
IMAP_DOVEWARDEN_PLUGIN_EXPORT void imap_dovewarden_plugin_deinit(void);

#endif
