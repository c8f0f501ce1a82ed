/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "imap-common.h"
#include "llist.h"
#include "ostream.h"
#include "module-context.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "dovewarden-plugin.h"
#include "imap-dovewarden-plugin.h"

/* With dovewarden_sync_wait, an APPEND's tagged reply is held back until
   the new mail is replicated (or the wait ends otherwise) without
   blocking the process: the command finishes as usual, only its tagline
   is kept and sent when the wait ends. Other sessions of the process
   (client_limit > 1), and the client's own later commands, go on
   meanwhile. */

#define IMAP_DOVEWARDEN_CONTEXT(obj) \
	MODULE_CONTEXT(obj, imap_dovewarden_client_module)

struct imap_dovewarden_client {
	union imap_module_context module_ctx;
	struct client *client;
	struct imap_dovewarden_reply *replies;
};

/* A command whose new mail is being waited for */
struct imap_dovewarden_reply {
	struct imap_dovewarden_reply *prev, *next;
	struct imap_dovewarden_client *dclient;
	unsigned int id;
	/* The command, until it sent its tagline (NULL after) */
	struct client_command_context *cmd;
	/* Waits not ended yet */
	unsigned int waits;
	/* The held tagged reply ("tag text"), once the command sent it */
	char *tagline;
};

static MODULE_CONTEXT_DEFINE_INIT(imap_dovewarden_client_module,
				  &imap_module_register);

const char *imap_dovewarden_plugin_version = DOVECOT_ABI_VERSION;
const char *imap_dovewarden_plugin_dependencies[] = { "dovewarden", NULL };
const char imap_dovewarden_plugin_binary_dependency[] = "imap";

static imap_client_created_func_t *next_hook_client_created;
/* The command being executed (between the command hooks) */
static struct client_command_context *current_cmd;
static unsigned int last_reply_id;
/* Every client with replies, to find a reply from its id */
static ARRAY(struct imap_dovewarden_client *) dclients;

static void imap_dovewarden_reply_free(struct imap_dovewarden_reply *reply)
{
	DLLIST_REMOVE(&reply->dclient->replies, reply);
	i_free(reply->tagline);
	i_free(reply);
}

static struct imap_dovewarden_reply *
imap_dovewarden_reply_find_cmd(struct imap_dovewarden_client *dclient,
			       struct client_command_context *cmd)
{
	struct imap_dovewarden_reply *reply;

	for (reply = dclient->replies; reply != NULL; reply = reply->next) {
		if (reply->cmd == cmd)
			return reply;
	}
	return NULL;
}

static void
imap_dovewarden_send_tagline(struct client_command_context *cmd,
			     const char *data)
{
	struct imap_dovewarden_client *dclient =
		IMAP_DOVEWARDEN_CONTEXT(cmd->client);
	struct imap_dovewarden_reply *reply;

	reply = imap_dovewarden_reply_find_cmd(dclient, cmd);
	if (reply != NULL && reply->waits > 0 && !cmd->cancel &&
	    !cmd->client->output->closed) {
		reply->tagline = i_strdup_printf("%s %s",
			cmd->tag == NULL || cmd->tag[0] == '\0' ?
			"*" : cmd->tag, data);
		reply->cmd = NULL;
		cmd->tagline_reply = p_strdup(cmd->pool, data);
		return;
	}
	if (reply != NULL)
		imap_dovewarden_reply_free(reply);
	dclient->module_ctx.super.send_tagline(cmd, data);
}

static void imap_dovewarden_reply_send(struct imap_dovewarden_reply *reply)
{
	struct client *client = reply->dclient->client;

	if (!client->output->closed) {
		o_stream_nsend_str(client->output, t_strconcat(
			reply->tagline, "\r\n", NULL));
		(void)o_stream_flush(client->output);
		client->last_output = ioloop_time;
	}
	imap_dovewarden_reply_free(reply);
}

static void
imap_dovewarden_client_destroy(struct client *client, const char *reason)
{
	struct imap_dovewarden_client *dclient =
		IMAP_DOVEWARDEN_CONTEXT(client);
	struct imap_dovewarden_client *const *dclientp;

	/* the held replies are dropped: the client is gone */
	while (dclient->replies != NULL)
		imap_dovewarden_reply_free(dclient->replies);
	array_foreach(&dclients, dclientp) {
		if (*dclientp == dclient) {
			array_delete(&dclients,
				     array_foreach_idx(&dclients, dclientp), 1);
			break;
		}
	}
	dclient->module_ctx.super.destroy(client, reason);
}

/* A client with held replies must not be hibernated (moved to the
   imap-hibernate process): the replies would be lost */
static int
imap_dovewarden_state_export(struct client *client, bool internal,
			     buffer_t *dest, const char **error_r)
{
	struct imap_dovewarden_client *dclient =
		IMAP_DOVEWARDEN_CONTEXT(client);

	if (dclient->replies != NULL) {
		*error_r = "dovewarden: APPEND replies wait for replication";
		return 0;
	}
	return dclient->module_ctx.super.state_export(client, internal, dest,
						      error_r);
}

static void imap_dovewarden_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct imap_dovewarden_client *dclient;

	dclient = p_new(client->pool, struct imap_dovewarden_client, 1);
	dclient->client = client;
	dclient->module_ctx.super = client->v;
	client->v.send_tagline = imap_dovewarden_send_tagline;
	client->v.destroy = imap_dovewarden_client_destroy;
	client->v.state_export = imap_dovewarden_state_export;
	MODULE_CONTEXT_SET(client, imap_dovewarden_client_module, dclient);
	array_push_back(&dclients, &dclient);

	if (next_hook_client_created != NULL)
		next_hook_client_created(clientp);
}

static bool imap_dovewarden_cmd_alive(struct client_command_context *cmd)
{
	struct client_command_context *c;

	for (c = cmd->client->command_queue; c != NULL; c = c->next) {
		if (c == cmd)
			return TRUE;
	}
	return FALSE;
}

static void imap_dovewarden_cmd_pre(struct client_command_context *cmd)
{
	struct imap_dovewarden_client *dclient =
		IMAP_DOVEWARDEN_CONTEXT(cmd->client);
	struct imap_dovewarden_reply *reply, *next;

	current_cmd = cmd;
	if (dclient == NULL)
		return;
	if (strcasecmp(cmd->name, "LOGOUT") == 0) {
		/* the mail is saved; the client leaves and would not see
		   the replies after its BYE */
		for (reply = dclient->replies; reply != NULL; reply = next) {
			next = reply->next;
			if (reply->tagline != NULL)
				imap_dovewarden_reply_send(reply);
		}
	}
	/* a command freed without a tagline (cancelled) leaves its reply */
	for (reply = dclient->replies; reply != NULL; reply = next) {
		next = reply->next;
		if (reply->cmd != NULL && reply->cmd != cmd &&
		    !imap_dovewarden_cmd_alive(reply->cmd))
			imap_dovewarden_reply_free(reply);
	}
}

static void imap_dovewarden_cmd_post(struct client_command_context *cmd)
{
	struct imap_dovewarden_client *dclient =
		IMAP_DOVEWARDEN_CONTEXT(cmd->client);
	struct imap_dovewarden_reply *reply;

	current_cmd = NULL;
	if (dclient == NULL)
		return;
	/* the waits ended before the command replied */
	reply = imap_dovewarden_reply_find_cmd(dclient, cmd);
	if (reply != NULL && reply->waits == 0)
		imap_dovewarden_reply_free(reply);
}

static void *imap_dovewarden_wait_begin(struct mail_user *user)
{
	struct client_command_context *cmd = current_cmd;
	struct imap_dovewarden_client *dclient;
	struct imap_dovewarden_reply *reply;

	if (cmd == NULL || cmd->client->user != user || cmd->cancel)
		return NULL;
	dclient = IMAP_DOVEWARDEN_CONTEXT(cmd->client);
	if (dclient == NULL)
		return NULL;
	reply = imap_dovewarden_reply_find_cmd(dclient, cmd);
	if (reply == NULL) {
		reply = i_new(struct imap_dovewarden_reply, 1);
		reply->dclient = dclient;
		reply->cmd = cmd;
		if (++last_reply_id == 0)
			last_reply_id++;
		reply->id = last_reply_id;
		DLLIST_PREPEND(&dclient->replies, reply);
	}
	reply->waits++;
	return POINTER_CAST(reply->id);
}

static void imap_dovewarden_wait_end(void *token)
{
	unsigned int id = POINTER_CAST_TO(token, unsigned int);
	struct imap_dovewarden_client *dclient;
	struct imap_dovewarden_reply *reply = NULL;

	array_foreach_elem(&dclients, dclient) {
		for (reply = dclient->replies; reply != NULL;
		     reply = reply->next) {
			if (reply->id == id)
				break;
		}
		if (reply != NULL)
			break;
	}
	/* NULL: the client is gone */
	if (reply == NULL)
		return;
	i_assert(reply->waits > 0);
	if (--reply->waits > 0)
		return;
	if (reply->tagline != NULL) {
		T_BEGIN {
			imap_dovewarden_reply_send(reply);
		} T_END;
	}
	/* else the command has not replied yet: its tagline goes out as
	   usual, and the post hook or send_tagline frees the reply */
}

static const struct dovewarden_sync_wait_hook imap_dovewarden_wait_hook = {
	.begin = imap_dovewarden_wait_begin,
	.end = imap_dovewarden_wait_end,
};

void imap_dovewarden_plugin_init(struct module *module ATTR_UNUSED)
{
	i_array_init(&dclients, 16);
	command_hook_register(imap_dovewarden_cmd_pre,
			      imap_dovewarden_cmd_post);
	next_hook_client_created =
		imap_client_created_hook_set(imap_dovewarden_client_created);
	dovewarden_plugin_set_sync_wait_hook(&imap_dovewarden_wait_hook);
}

void imap_dovewarden_plugin_deinit(void)
{
	dovewarden_plugin_set_sync_wait_hook(NULL);
	imap_client_created_hook_set(next_hook_client_created);
	command_hook_unregister(imap_dovewarden_cmd_pre,
				imap_dovewarden_cmd_post);
	array_free(&dclients);
}
