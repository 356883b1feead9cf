/* `twined socks`: a SOCKS4, 4a and 5 server (CONNECT only) limited to the
 * destinations --allow names. Twisted's socks plugin listens on
 * 127.0.0.1:1080 and lets clients go anywhere; this one listens there too
 * by default but refuses to start without an allow list, so that it is
 * never an open proxy by accident. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/socks.h>

#include "plugins-extra.h"

static void release_socks(void *sf)
{
    tw_socks_factory_free(sf);
}

static int seconds_arg(const tw_plugin_args *args, const char *name, double *out,
                       tw_failure **failure)
{
    const char *v = tw_plugin_arg(args, name);
    if (!v) {
        *out = 0; /* the library's default */
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d > 0) || isinf(d) || d > 1e9) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "--%s: '%s' is not a number of seconds (more than 0)", name, v);
        return TW_EINVAL;
    }
    *out = d;
    return 0;
}

/* --credentials FILE: "USER:PASSWORD" on the first line (a file, so the
 * password is not on the command line for every ps to see). */
static int read_credentials(const char *path, char **user, char **password, tw_failure **failure)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        /* The user's mistake, not the program's: bad input. */
        *failure = tw_failure_new(TW_EINVAL, NULL, "--credentials: cannot read '%s': %s", path,
                                  tw_strerror(-errno));
        return TW_EINVAL;
    }
    char line[2 * TW_SOCKS_MAX_USER + 4];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t len = got ? strcspn(line, "\r\n") : 0;
    line[len] = '\0';
    char *colon = strchr(line, ':');
    size_t ulen = colon ? (size_t)(colon - line) : 0;
    if (!colon || ulen == 0 || ulen > TW_SOCKS_MAX_USER || strlen(colon + 1) > TW_SOCKS_MAX_USER) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "--credentials: '%s' must hold USER:PASSWORD on its first line "
                                  "(each 1-255 bytes)",
                                  path);
        return TW_EINVAL;
    }
    *colon = '\0';
    *user = tw_strdup(line);
    *password = tw_strdup(colon + 1);
    memset(line, 0, sizeof line);
    if (!*user || !*password) {
        tw_free(*user);
        tw_free(*password);
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    return 0;
}

static int make_socks(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                      tw_failure **failure)
{
    size_t nrules = tw_plugin_arg_count(args, "allow");
    if (nrules == 0) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "--allow is required: name the destinations clients may reach "
                                  "(e.g. --allow 127.0.0.1/8:80 --allow example.org:443; "
                                  "--allow '*' makes an open proxy)");
        return TW_EINVAL;
    }
    tw_socks_options opts = {0};
    int rc = seconds_arg(args, "negotiation-timeout", &opts.negotiation_timeout, failure);
    if (rc == 0)
        rc = seconds_arg(args, "connect-timeout", &opts.connect_timeout, failure);
    if (rc < 0)
        return rc;
    tw_socks_allow *allow = NULL;
    rc = tw_socks_allow_new(&allow);
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, NULL);
        return rc;
    }
    bool any = false;
    for (size_t i = 0; rc == 0 && i < nrules; i++) {
        const char *rule = tw_plugin_arg_at(args, "allow", i);
        tw_failure *why = NULL;
        rc = tw_socks_allow_add(allow, rule, &why);
        if (rc < 0) {
            *failure = tw_failure_new(rc, NULL, "--allow: %s",
                                      why ? tw_failure_message(why) : tw_strerror(rc));
            tw_failure_unref(why);
            break;
        }
        any = any || (rule[0] == '*' && (rule[1] == '\0' || rule[1] == ':'));
    }
    if (rc < 0) {
        tw_socks_allow_free(allow);
        return rc;
    }
    char *user = NULL, *password = NULL;
    const char *cred = tw_plugin_arg(args, "credentials");
    if (cred && (rc = read_credentials(cred, &user, &password, failure)) < 0) {
        tw_socks_allow_free(allow);
        return rc;
    }
    opts.username = user;
    opts.password = password;
    tw_socks_factory *sf = NULL;
    rc = tw_socks_factory_new(r, allow, &opts, &sf);
    if (password)
        memset(password, 0, strlen(password));
    tw_free(user);
    tw_free(password);
    if (rc < 0) {
        tw_socks_allow_free(allow);
        *failure = tw_failure_new(rc, NULL, "socks: %s", tw_strerror(rc));
        return rc;
    }
    if (any)
        tw_log_warn("twine.socks", "--allow '*': clients may reach any destination (an open "
                                   "proxy to whoever can reach --listen)");
    return tw__plugin_serve_factory(r, args, "socks", tw_socks_factory_base(sf), release_socks, sf,
                                    out, failure);
}

static const tw_plugin_option socks_options[] = {
    {.name = "listen",
     .short_name = 'l',
     .metavar = "ENDPOINT",
     .help = "Listen on ENDPOINT (default: Twisted's, on loopback only).",
     .default_value = "tcp:1080:interface=127.0.0.1",
     .repeatable = true},
    {.name = "allow",
     .short_name = 'a',
     .metavar = "RULE",
     .help = "A destination clients may reach (required): HOST or HOST:PORTS. HOST is "
             "10.0.0.0/8, 192.0.2.7, [2001:db8::]/32, ::1, example.org, *.example.org or *; "
             "PORTS is 443, 8000-8999 or *. Names are matched as names, before they are "
             "resolved.",
     .repeatable = true},
    {.name = "credentials",
     .metavar = "FILE",
     .help = "Require SOCKS5 username/password (RFC 1929): USER:PASSWORD on FILE's first "
             "line. SOCKS4 is then refused."},
    {.name = "negotiation-timeout",
     .metavar = "SECONDS",
     .help = "Close a client whose request is not complete after SECONDS.",
     .default_value = "30"},
    {.name = "connect-timeout",
     .metavar = "SECONDS",
     .help = "Give up connecting to a destination after SECONDS.",
     .default_value = "30"},
    {0},
};

const tw_plugin tw__plugin_socks = {
    .name = "socks",
    .description = "A SOCKS4, 4a and 5 proxy (CONNECT only) to the destinations --allow names.",
    .options = socks_options,
    .make_service = make_socks,
};
