/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_PLUGIN_H
#define DOVEWARDEN_PLUGIN_H

/* The mail plugin lib20_dovewarden_plugin.so. Enabled with
   mail_plugins { notify = yes  dovewarden = yes }. It tells the dovewarden
   service which users' mail changed (see dovewarden-notify-client.h);
   these are its only exported symbols. */

#define DOVEWARDEN_PLUGIN_EXPORT __attribute__((visibility("default")))

struct module;

extern DOVEWARDEN_PLUGIN_EXPORT const char *dovewarden_plugin_version;
extern DOVEWARDEN_PLUGIN_EXPORT const char *dovewarden_plugin_dependencies[];

DOVEWARDEN_PLUGIN_EXPORT void dovewarden_plugin_init(struct module *module);
DOVEWARDEN_PLUGIN_EXPORT void dovewarden_plugin_deinit(void);

#endif
