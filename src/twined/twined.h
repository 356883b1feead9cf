/* twined's parts (src/twined/): the launcher (main.c), the worker
 * supervisor (supervisor.c), the listening sockets shared with workers
 * (sockets.c), and systemd's readiness protocol and the pid file
 * (notify.c). Program code, not library: names are twined_*. */
#ifndef TWINED_H
#define TWINED_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <twine/log.h>
#include <twine/plugin.h>
#include <twine/reactor.h>
#include <twine/service.h>

#define TWINED_NS "twined"

/* Exit statuses: 2 for what the user typed wrong, 1 for what went wrong. */
enum { TWINED_EXIT_OK = 0, TWINED_EXIT_FAILED = 1, TWINED_EXIT_USAGE = 2 };

/* What the command line asked for. */
typedef struct twined_config {
    int argc;
    char **argv;
    const tw_plugin *plugin;
    tw_plugin_args *args;
    const char *backend;   /* --reactor, or NULL */
    long workers;          /* --workers; 0: serve in this process */
    const char *pidfile;   /* or NULL */
    bool set_uid, set_gid; /* --uid / --gid: who to run as once the ports are bound */
    uid_t uid;
    gid_t gid;
    double grace; /* --grace seconds */
    tw_log_file *log;
} twined_config;

/* Prints "twined: <message>" on standard error: the one line a user sees
 * when twined cannot start. */
void twined_complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Makes the reactor twined runs on (the backend asked for, no default
 * signal handlers: twined watches the signals itself). Returns 0 or an error
 * (complained about). */
int twined_reactor_new(const twined_config *cfg, tw_reactor **out);

/* Builds the plugin's service tree; complains and returns the exit status on
 * error (2: a bad option value, 1: anything else), else 0. */
int twined_make_service(const twined_config *cfg, tw_reactor *r, tw_service **out);

/* Logs, for every server service in the tree, where it listens. */
void twined_log_ports(const twined_config *cfg, tw_service *tree);

/* ---- Running the tree in this process (main.c): until SIGTERM/SIGINT,
 * then the graceful stop. worker: this is one of a supervisor's workers. */
int twined_serve(const twined_config *cfg, bool worker);

/* ---- --workers (supervisor.c) */
int twined_supervise(const twined_config *cfg);

/* ---- Listening sockets shared with the workers (sockets.c) */

#define TWINED_MAX_SOCKETS 64

typedef struct twined_sockets {
    int fds[TWINED_MAX_SOCKETS];
    size_t n;
    char *paths[TWINED_MAX_SOCKETS]; /* Unix socket files to remove at exit, or NULL */
} twined_sockets;

/* In the supervisor: while installed, every tw_listen_stream on r binds and
 * listens a socket into *s instead of accepting on it (the port handed back
 * only answers where it is bound). */
void twined_sockets_bind_on(tw_reactor *r, twined_sockets *s);
/* In a worker: while installed, the n-th tw_listen_stream on r adopts the
 * n-th inherited socket (fds[first..first+count)); a listen past those
 * listens for real. */
void twined_sockets_adopt_on(tw_reactor *r, int first, int count);
/* Either way: back to plain listening. */
void twined_sockets_off(tw_reactor *r);
/* Closes the sockets and removes their files. */
void twined_sockets_close(twined_sockets *s);

/* Drops root for --uid/--gid (supplementary groups, then group, then user,
 * as Twisted's switchUID). Complains and returns -errno on failure. */
int twined_drop_privileges(const twined_config *cfg);

/* ---- systemd and pid files (notify.c) */

/* sd_notify: sends state ("READY=1", "STOPPING=1") to $NOTIFY_SOCKET when
 * set. Returns 0 (also when unset) or -errno. */
int twined_notify(const char *state);
/* Writes the pid file; refuses (complains, returns -EEXIST) when it names
 * another live process. */
int twined_pidfile_write(const char *path);
void twined_pidfile_remove(const char *path);

#endif
