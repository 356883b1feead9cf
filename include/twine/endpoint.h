/* Endpoint descriptions (twisted.internet.endpoints' serverFromString and
 * clientFromString strings): turns "tcp:8080:interface=127.0.0.1" into a
 * validated, typed description. This is the parser only; it does no I/O and
 * opens nothing (listening and connecting are built on top of it).
 *
 * ---- Syntax (Twisted's _tokenize/_parse)
 *
 *   description = field *(":" field)
 *   field       = value | key "=" value
 *
 * Fields are separated by ':'. A field holding an unescaped '=' is a keyword
 * argument, split at its first unescaped '=' (later '=' in the same field are
 * part of the value); any other field is a positional argument. A backslash
 * makes the next byte literal, whatever it is ("\:" "\=" "\\" are the useful
 * ones); a backslash at the very end is an error. Empty fields are empty
 * values ("tcp:80:" has the positional arguments "80" and ""). Positional and
 * keyword arguments may be mixed in any order; positional ones fill the type's
 * parameters in order, as in a Python call. Option names are case-sensitive
 * (bindAddress); type names are not (TCP:80 is tcp:80).
 *
 * The first field is the type and must be positional. Built-in types, with
 * their parameters in positional order and Twisted's defaults:
 *
 *   server  tcp:PORT[:interface=ADDR][:backlog=N]     positional: port interface backlog
 *           tcp6:PORT[:backlog=N][:interface=ADDR]    positional: port backlog interface
 *           unix:PATH[:mode=OCTAL][:backlog=N][:lockfile=0|1]
 *                                       positional: address mode backlog lockfile
 *           systemd:domain=INET|INET6|UNIX:index=N    positional: domain index
 *           haproxy:<any server description but haproxy>
 *           ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem][:extraCertChain=CHAIN.pem]
 *               [:interface=ADDR][:backlog=N]
 *                   positional: port interface backlog privateKey certKey sslmethod
 *                   extraCertChain dhParameters (Twisted's order); sslmethod= and
 *                   dhParameters= are refused ("not supported")
 *           stdio: (or stdio)                   no arguments
 *   client  tcp:HOST:PORT[:timeout=S][:bindAddress=ADDR]  positional: host port
 *           tcp6: likewise                     (with one positional and host=, it is the port)
 *           unix:PATH[:timeout=S][:checkPID=0|1]          positional: path
 *           tls:HOST:PORT[:trustRoots=CA.pem|DIR][:certificate=CERT.pem][:privateKey=KEY.pem]
 *               [:timeout=S][:bindAddress=ADDR]              positional: host port
 *
 *   port       decimal, 0-65535 for servers (0: any free port), 1-65535 for clients
 *   interface  tcp: "" (the default: all) or an IPv4 or IPv6 literal;
 *              tcp6: "" or "::" (the default: all) or an IPv6 literal (scope "%eth0" allowed).
 *              Names are refused: which address a name means is a resolver's question.
 *   backlog    decimal, 0-2147483647, default 50
 *   host       a DNS name (letters, digits, '-', '_', dots; labels of 1-63, 253 in all)
 *              or an IP literal; tcp6 refuses IPv4 literals
 *   bindAddress  an IP literal (IPv6 for tcp6) to bind before connecting (port 0)
 *   timeout    seconds, decimal with an optional fraction ("2.5"; no sign, no exponent),
 *              more than 0 and at most 1e9, default 30
 *   PATH       the server's is address=, the client's path= (as in Twisted). A path
 *              starting with '@' or a NUL byte names the Linux abstract namespace (the
 *              rest is the name, at most 107 bytes, NULs allowed); any other path is a
 *              file name without NUL bytes, at most 107 bytes.
 *   mode       octal digits, at most 07777, default 0666
 *   lockfile   0 or 1, default 1; for clients, lockfile= is Twisted's own spelling of
 *              checkPID= (default 0); giving both is an error
 *   domain     INET, INET6 or UNIX (exactly so); index 0-65535 into LISTEN_FDS
 *   privateKey, certKey, extraCertChain, trustRoots, certificate
 *              file names (trustRoots: a PEM file or a hashed directory), not
 *              empty, without NUL bytes; ssl: requires privateKey (Twisted's
 *              default 'server.pem' is not assumed) and certKey defaults to it (a
 *              PEM holding both); tls: privateKey without certificate is an error,
 *              certificate without privateKey reads the key from the same file
 *
 * Examples: "tcp:8080", "tcp6:443:interface=\:\:1", "unix:/run/app\:1.sock:mode=600",
 * "unix:@abstract", "systemd:domain=INET6:index=0", "haproxy:tcp:80",
 * "ssl:443:privateKey=key.pem:certKey=cert.pem", client "tcp:example.com:80:timeout=2.5",
 * "tcp:host=\:\:1:port=80", "tls:example.com:443:trustRoots=/etc/ssl/ca.pem".
 *
 * ---- Bounds
 * A description holds at most TW_ENDPOINT_MAX_LENGTH bytes and
 * TW_ENDPOINT_MAX_FIELDS fields (the type included); longer ones are refused
 * before anything is allocated.
 *
 * ---- Errors
 * Parsing returns 0, TW_EINVAL for a bad description, TW_ENOMEM, or the code
 * a registered type's validator failed with. With an error, a failure with the
 * same code is stored in *failure (if failure is not NULL; the caller owns
 * it), whose message names the offending part, prefixed
 * by the type: "unknown endpoint type 'tpc'", "tcp: port 70000 out of range
 * (0-65535)", "tcp: port 'http' is not a number", "tcp: unknown option
 * 'backlg'", "tcp: missing port", "tcp: option 'port' given twice", "unix:
 * mode '0999' is not octal", "tcp: too many positional arguments (at most 3)",
 * "empty endpoint description", "unterminated escape at the end of the
 * endpoint description", "haproxy: tcp: missing port". Values are quoted with
 * bytes outside printable ASCII as \xNN and long ones cut short, so a message
 * is always one printable line. When the arguments hold an empty value followed
 * by an empty positional one, the trace of an unescaped "::", the message ends
 * with a hint to write ':' in values as '\:'. Any bytes may be given: none makes
 * the parser crash or read out of bounds. */
#ifndef TWINE_ENDPOINT_H
#define TWINE_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/reactor.h>

#define TW_ENDPOINT_MAX_LENGTH 4096 /* bytes in a description, the NUL excluded */
#define TW_ENDPOINT_MAX_FIELDS 64   /* fields in a description, the type included */
#define TW_ENDPOINT_MAX_TYPE   32   /* bytes in a registered type name */

/* A role, or a set of them (a mask) where a registration says so. */
typedef enum tw_endpoint_role {
    TW_ENDPOINT_SERVER = 1,
    TW_ENDPOINT_CLIENT = 2,
} tw_endpoint_role;

/* Which built-in type a spec is; TW_ENDPOINT_REGISTERED for the others. */
typedef enum tw_endpoint_kind {
    TW_ENDPOINT_REGISTERED,
    TW_ENDPOINT_TCP,
    TW_ENDPOINT_TCP6,
    TW_ENDPOINT_UNIX,
    TW_ENDPOINT_SYSTEMD,
    TW_ENDPOINT_HAPROXY,
    TW_ENDPOINT_SSL,   /* server: TLS over tcp */
    TW_ENDPOINT_TLS,   /* client: TLS over tcp */
    TW_ENDPOINT_STDIO, /* server: standard input and output (process.h) */
} tw_endpoint_kind;

/* One argument, unescaped. Strings are NUL-terminated copies owned by the
 * spec, but may also hold NUL bytes: the lengths are the truth. */
typedef struct tw_endpoint_arg {
    const char *key; /* NULL for a positional argument */
    size_t key_len;
    const char *value; /* never NULL */
    size_t value_len;
} tw_endpoint_arg;

/* A parsed description. Every member is read-only and lives as long as the
 * spec; the caller owns the spec and frees it with tw_endpoint_spec_free. */
typedef struct tw_endpoint_spec tw_endpoint_spec;
struct tw_endpoint_spec {
    tw_endpoint_role role;         /* one role, never a mask */
    tw_endpoint_kind kind;         /* built-in type, or TW_ENDPOINT_REGISTERED */
    const char *type;              /* the type's registered name, lowercase */
    size_t nargs;                  /* arguments after the type, in the order given */
    const tw_endpoint_arg *args;   /* nargs of them */
    const void *typed;             /* what the type's validator made (see below), or NULL */
    const tw_endpoint_spec *inner; /* haproxy: the wrapped description; else NULL */
};

/* ---- Typed fields of the built-in types (spec->typed, or the accessors
 * below). Strings point into the spec's arguments or at static defaults. */

typedef struct tw_endpoint_tcp_server { /* tcp and tcp6 servers */
    unsigned port;
    const char *interface; /* "" = all (tcp's default), "::" = all (tcp6's default) */
    int backlog;
} tw_endpoint_tcp_server;

typedef struct tw_endpoint_tcp_client { /* tcp and tcp6 clients */
    const char *host;
    unsigned port;
    double timeout;           /* seconds */
    const char *bind_address; /* NULL when not given */
} tw_endpoint_tcp_client;

typedef struct tw_endpoint_unix_server {
    const char *path; /* as given, '@' or NUL included; path_len bytes */
    size_t path_len;
    bool abstract; /* the socket name is path[1..] in the abstract namespace */
    unsigned mode;
    int backlog;
    bool lockfile;
} tw_endpoint_unix_server;

typedef struct tw_endpoint_unix_client {
    const char *path; /* as for servers */
    size_t path_len;
    bool abstract;
    double timeout;
    bool check_pid;
} tw_endpoint_unix_client;

typedef enum tw_endpoint_domain {
    TW_ENDPOINT_DOMAIN_INET,
    TW_ENDPOINT_DOMAIN_INET6,
    TW_ENDPOINT_DOMAIN_UNIX,
} tw_endpoint_domain;

typedef struct tw_endpoint_systemd {
    tw_endpoint_domain domain;
    unsigned index; /* the socket is fd 3 + index (sd_listen_fds) */
} tw_endpoint_systemd;

/* ssl: servers. The tcp part is as tcp's (interface "" = all). */
typedef struct tw_endpoint_ssl_server {
    tw_endpoint_tcp_server tcp;
    const char *private_key;      /* privateKey= */
    const char *cert_key;         /* certKey=, or private_key when not given */
    const char *extra_cert_chain; /* extraCertChain=, or NULL */
} tw_endpoint_ssl_server;

/* tls: clients. The tcp part is as tcp's. */
typedef struct tw_endpoint_tls_client {
    tw_endpoint_tcp_client tcp;
    const char *trust_roots; /* trustRoots= (a PEM file or a directory), or NULL: the system's */
    const char *certificate; /* certificate=, or NULL */
    const char *private_key; /* privateKey=, or NULL: certificate's file when it is given */
} tw_endpoint_tls_client;

/* The typed fields when spec is of that kind and role; NULL otherwise. */
const tw_endpoint_tcp_server *tw_endpoint_spec_tcp_server(const tw_endpoint_spec *spec);
const tw_endpoint_tcp_client *tw_endpoint_spec_tcp_client(const tw_endpoint_spec *spec);
const tw_endpoint_unix_server *tw_endpoint_spec_unix_server(const tw_endpoint_spec *spec);
const tw_endpoint_unix_client *tw_endpoint_spec_unix_client(const tw_endpoint_spec *spec);
const tw_endpoint_systemd *tw_endpoint_spec_systemd(const tw_endpoint_spec *spec);
const tw_endpoint_ssl_server *tw_endpoint_spec_ssl_server(const tw_endpoint_spec *spec);
const tw_endpoint_tls_client *tw_endpoint_spec_tls_client(const tw_endpoint_spec *spec);

/* ---- Parsing */

/* Parses a NUL-terminated description for the role (TW_ENDPOINT_SERVER or
 * TW_ENDPOINT_CLIENT). Returns 0 and stores a new spec in *out; or TW_EINVAL
 * / TW_ENOMEM with *out set to NULL and, if failure is not NULL, a new failure
 * of the same code in *failure (see Errors above). description == NULL or a
 * role that is not exactly one role is TW_EINVAL too; out == NULL is TW_EINVAL
 * with no failure made. Safe to call from any
 * thread, as long as no type is being registered at the same time. */
int tw_endpoint_parse(tw_endpoint_role role, const char *description, tw_endpoint_spec **out,
                      tw_failure **failure);

/* The same over `len` bytes that may hold NUL bytes (a unix path in the
 * abstract namespace may start with one). */
int tw_endpoint_parse_bytes(tw_endpoint_role role, const char *description, size_t len,
                            tw_endpoint_spec **out, tw_failure **failure);

/* Frees the spec, its arguments, its typed fields (through the release
 * function its validator gave) and its inner spec. NULL is ignored. */
void tw_endpoint_spec_free(tw_endpoint_spec *spec);

/* The canonical string for spec: the type's registered name, then every
 * argument in order, positional ones as values and keyword ones as key=value,
 * joined by ':', with a backslash before each ':' '=' or '\' that would
 * otherwise be read as syntax (an '=' in a keyword's value is left alone).
 * Parsing it again for the same role gives an equal spec
 * (tw_endpoint_spec_equal); it is never longer than the description the spec
 * was parsed from. Returns a tw_malloc'd NUL-terminated string (free it with
 * tw_free; it may hold NUL bytes, so its length is stored in *len when len is
 * not NULL), or NULL when memory runs out. */
char *tw_endpoint_format(const tw_endpoint_spec *spec, size_t *len);

/* True when a and b have the same role, type, arguments (keys and values,
 * byte for byte, in order) and inner spec. Typed fields follow from those. */
bool tw_endpoint_spec_equal(const tw_endpoint_spec *a, const tw_endpoint_spec *b);

/* The last keyword argument named `key` (exact case), or NULL. */
const tw_endpoint_arg *tw_endpoint_spec_get(const tw_endpoint_spec *spec, const char *key);

/* ---- Registering types (how later layers add ssl:, tls:, ...)
 *
 * A validator checks the arguments of a spec of its type and makes the typed
 * fields. It is given the spec with role, kind, type, nargs and args set (typed
 * and inner are NULL), and the `arg` it was registered with. It returns 0 and
 * stores in *typed a value (NULL is allowed) with in *release the function that
 * frees it (NULL: nothing to free); spec_free calls it. Or it returns a negative
 * code with a new failure in *failure (tw_endpoint_fail makes one); a failure
 * left NULL becomes a generic one from the code. On error, *typed is ignored:
 * the validator frees what it made. Strings in spec->args may be borrowed by
 * the typed value: they live as long as the spec.
 *
 * Duplicate keyword arguments are refused before validators run, so a
 * validator sees each key at most once. The built-in types go through this
 * same path (their validators are the library's own). */
typedef int (*tw_endpoint_validate_fn)(const tw_endpoint_spec *spec, void *arg, void **typed,
                                       tw_release_fn *release, tw_failure **failure);

/* Registers `name` for `roles` (a mask of TW_ENDPOINT_SERVER and
 * TW_ENDPOINT_CLIENT): descriptions of that type, in those roles, are
 * validated by `validate`. A name is 1 to TW_ENDPOINT_MAX_TYPE bytes, starts
 * with a letter and holds only letters, digits, '+', '-', '.' and '_'; it is
 * matched case-insensitively and stored lowercase. The same name may be
 * registered once per role (a server validator and a client one, say).
 * Returns 0; TW_EINVAL for a bad name, an empty or unknown role mask or a NULL
 * validate; TW_EEXIST when the name is already registered (built-in types
 * included) for one of the roles; TW_ENOMEM. Registration lasts for the
 * process. Not thread-safe: register types at startup, before any other
 * thread parses. */
int tw_endpoint_register_type(const char *name, unsigned roles, tw_endpoint_validate_fn validate,
                              void *arg);

/* ---- Helpers for validators (the built-in ones use them too) */

/* Binds spec's arguments to the type's parameters as Python binds a call:
 * the positional arguments fill params[0..npositional-1] in order, keyword
 * arguments fill the parameter of their name. slots (nparams of them) get the
 * argument bound to each parameter, or NULL. Returns 0, or TW_EINVAL with a
 * failure for "too many positional arguments (at most N)", "unknown option
 * 'K'", "option 'K' given twice" (by position and by keyword). */
int tw_endpoint_bind_args(const tw_endpoint_spec *spec, const char *const *params, size_t nparams,
                          size_t npositional, const tw_endpoint_arg **slots, tw_failure **failure);

/* Reads arg's value as a decimal number within [min, max] (digits only: no
 * sign, no space). Returns 0, or TW_EINVAL with a failure "<type>: <what>
 * 'V' is not a number" or "<type>: <what> V out of range (min-max)". */
int tw_endpoint_arg_uint(const tw_endpoint_spec *spec, const tw_endpoint_arg *arg, const char *what,
                         unsigned long min, unsigned long max, unsigned long *out,
                         tw_failure **failure);

/* Reads "0" or "1". Returns 0, or TW_EINVAL with "<type>: <what> 'V' is not
 * 0 or 1". */
int tw_endpoint_arg_flag(const tw_endpoint_spec *spec, const tw_endpoint_arg *arg, const char *what,
                         bool *out, tw_failure **failure);

/* Writes a printable, quoted form of len bytes into buf (always
 * NUL-terminated when size > 0, cut to fit): 'value', with bytes outside
 * printable ASCII as \xNN, and after 64 bytes the rest left out: 'abc'...
 * Returns buf. TW_ENDPOINT_QUOTE_SIZE bytes are always enough. */
#define TW_ENDPOINT_QUOTE_SIZE (2 + 64 * 4 + 3 + 1)
const char *tw_endpoint_quote(char *buf, size_t size, const char *s, size_t len);

/* Makes a TW_EINVAL failure whose message is "<spec's type>: " followed by
 * the formatted text. Never NULL (see tw_failure_new). */
tw_failure *tw_endpoint_fail(const tw_endpoint_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Endpoints: listening and connecting (IStreamServerEndpoint,
 * IStreamClientEndpoint)
 *
 * An endpoint is a parsed description bound to a reactor. What each type
 * does:
 *   tcp, tcp6, unix servers   tw_listen_stream (net.h) with the spec's options
 *   systemd                   tw_listen_adopt on fd 3 + index, checked against
 *                             LISTEN_PID / LISTEN_FDS and the domain
 *   haproxy                   the inner server, each connection first reading a
 *                             PROXY header (v1 or v2; proxy.h): the protocol sees
 *                             the header's source and destination through
 *                             get_peer / get_host, and a connection whose header
 *                             is malformed, or missing after 10 s, is closed
 *                             (logged) without reaching the factory
 *                             (haproxy:ssl: reads the header in the clear,
 *                             then does TLS, as a proxy sends it)
 *   tcp, tcp6 clients         an IP literal: one connect; a name: the hostname
 *                             endpoint (HostnameEndpoint): getaddrinfo on the
 *                             reactor's thread pool, then one attempt per
 *                             address, a new one every 0.3 s (attemptDelay)
 *                             while none has succeeded, the first connection
 *                             made wins and the other attempts are abandoned;
 *                             the timeout bounds the whole (resolution
 *                             included); failing with TW_EDNSLOOKUP when the
 *                             name does not resolve, else the last attempt's
 *                             failure
 *   unix client               one connect
 *   ssl server                tcp's listen, each connection under TLS (tls.h) as the
 *                             server, with a context made from the files; a file
 *                             that cannot be read, or a key that does not match,
 *                             fails the listen with the context's failure
 *                             ("ssl: cannot read certificate 'x.pem': ...")
 *   stdio server              one protocol from the factory (build_protocol gets the
 *                             pipe address) connected to this program's standard
 *                             input and output (tw_stdio_new, process.h); the
 *                             "port" (get_host: the pipe address) stopping closes
 *                             that connection (lose_connection); build_protocol
 *                             refusing fails the listen with TW_ECONNABORTED
 *   tls client                tcp's connect (the hostname endpoint), then TLS as
 *                             the client, verifying the server's certificate for
 *                             the host (also sent as SNI) against trustRoots or
 *                             the system's store; the deferred fires once the
 *                             protocol's connection_made ran (before the
 *                             handshake, as in Twisted: a refused certificate is
 *                             the protocol's connection_lost, TW_ETLSVERIFY) with
 *                             the application's protocol. The client context is
 *                             made at the endpoint's first connect and kept for
 *                             its later ones (the trust roots read once; the
 *                             server's last session resumed)
 * Types registered by other layers plug their own in later. */

typedef struct tw_endpoint tw_endpoint;

/* serverFromString / clientFromString: parses `description` for the role and
 * binds it to r. Returns 0 and *out (free it with tw_endpoint_free); errors
 * and failures as tw_endpoint_parse, plus TW_ENOTSUP for a registered type
 * that cannot listen or connect (yet). */
int tw_endpoint_server_from_string(tw_reactor *r, const char *description, tw_endpoint **out,
                                   tw_failure **failure);
int tw_endpoint_client_from_string(tw_reactor *r, const char *description, tw_endpoint **out,
                                   tw_failure **failure);

/* Frees the endpoint. Ports, connections and attempts it started are not
 * tied to it and carry on. NULL is ignored. */
void tw_endpoint_free(tw_endpoint *ep);

/* The parsed description; NULL for an endpoint made from C without one (the
 * process endpoint, process.h). */
const tw_endpoint_spec *tw_endpoint_get_spec(const tw_endpoint *ep);

/* listen: a new deferred (the caller's reference) that fires with the
 * tw_listening_port * (net.h) once it listens — the result owns the port:
 * take it with tw_result_take, or the result's release stops listening — or
 * fails with why (TW_EADDRINUSE, TW_EACCES, ...; a failure whose message
 * names the address). factory must outlive the port. For the built-in types
 * binding and listening happen now, so the deferred has fired when this
 * returns (a caller may rely on it, as the examples do). */
tw_deferred *tw_endpoint_listen(tw_endpoint *ep, tw_factory *factory);

/* connect: a new deferred that fires with the connected tw_protocol *
 * (borrowed: its transport owns it) after its connection_made ran, or fails
 * with why the connection could not be made (TW_ECONNREFUSED, TW_ETIMEDOUT,
 * TW_EDNSLOOKUP, TW_ECONNABORTED when build_protocol refused...). Cancelling
 * it abandons the attempt (TW_ECANCELED). The factory's client hooks
 * (started_connecting, ...) are not called: the deferred reports instead. */
tw_deferred *tw_endpoint_connect(tw_endpoint *ep, tw_factory *factory);

/* connectProtocol: connects a protocol made already. The transport takes it
 * over at once: its free op runs when the connection ends, or when the
 * attempt fails (the deferred fails then too). */
tw_deferred *tw_endpoint_connect_protocol(tw_endpoint *ep, tw_protocol *protocol);

#endif
