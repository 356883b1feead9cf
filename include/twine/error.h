/* Twine's one error convention.
 *
 * Functions return 0 (or a positive count) on success and a negative code on
 * failure. System errors are -errno (TW_ENOMEM == -ENOMEM, ...); Twine's own
 * conditions have codes below TW__ERRNO_LIMIT so the two never collide.
 * A function that takes a callback and returns an error never calls it.
 * Errors that happen later arrive as a tw_failure (see failure.h). */
#ifndef TWINE_ERROR_H
#define TWINE_ERROR_H

#include <errno.h>

/* X(name, value, description). Values are negative. */
#define TW_ERRNO_MAP(X)                                                                            \
    X(ENOMEM, -ENOMEM, "out of memory")                                                            \
    X(EINVAL, -EINVAL, "invalid argument")                                                         \
    X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                                         \
    X(EBADF, -EBADF, "bad file descriptor")                                                        \
    X(EEXIST, -EEXIST, "already exists")                                                           \
    X(ENOENT, -ENOENT, "no such entry")                                                            \
    X(EBUSY, -EBUSY, "resource busy")                                                              \
    X(ECANCELED, -ECANCELED, "operation cancelled")                                                \
    X(ETIMEDOUT, -ETIMEDOUT, "operation timed out")                                                \
    X(ENOSYS, -ENOSYS, "not supported on this system")                                             \
    X(ENOBUFS, -ENOBUFS, "no buffer space available")                                              \
    X(EMSGSIZE, -EMSGSIZE, "message too long")                                                     \
    X(EPERM, -EPERM, "operation not permitted")                                                    \
    X(EACCES, -EACCES, "permission denied")                                                        \
    X(ENOTSUP, -EOPNOTSUPP, "operation not supported")                                             \
    X(ENOTCONN, -ENOTCONN, "not connected")                                                        \
    X(EISCONN, -EISCONN, "already connected")                                                      \
    X(EPIPE, -EPIPE, "broken pipe")                                                                \
    X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                                           \
    X(ECONNRESET, -ECONNRESET, "connection reset by peer")                                         \
    X(ECONNABORTED, -ECONNABORTED, "connection aborted")                                           \
    X(EADDRINUSE, -EADDRINUSE, "address already in use")                                           \
    X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "cannot assign requested address")                            \
    X(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported")                                 \
    X(ENETUNREACH, -ENETUNREACH, "network is unreachable")                                         \
    X(EHOSTUNREACH, -EHOSTUNREACH, "no route to host")                                             \
    X(EMFILE, -EMFILE, "too many open files")                                                      \
    X(ENFILE, -ENFILE, "too many open files in system")

#define TW__ERRNO_LIMIT (-4096)

#define TW_OWN_ERROR_MAP(X)                                                                        \
    X(EALREADYCALLED, -4097, "already called: the deferred or delayed call has fired")             \
    X(EALREADYCANCELLED, -4098, "already cancelled")                                               \
    X(ENOTRUNNING, -4099, "the reactor is not running")                                            \
    X(EALREADYRUNNING, -4100, "the reactor is already running")                                    \
    X(ENOTRESTARTABLE, -4101, "the reactor has been stopped and cannot run again")                 \
    X(EWRONGTHREAD, -4102, "called from a thread that does not own the reactor")                   \
    X(EUNKNOWNBACKEND, -4103, "unknown reactor backend")                                           \
    X(EFIRSTERROR, -4104, "one of the deferreds failed")                                           \
    X(EALLFAILED, -4105, "every deferred failed")                                                  \
    X(EPAUSED, -4106, "the deferred is not paused")                                                \
    X(ECHAINED, -4107, "the deferred is already chained to another deferred")                      \
    X(ESHUTDOWN, -4108, "the reactor or pool is shutting down")                                    \
    X(EUSER, -4109, "application error")                                                           \
    X(ECONNDONE, -4110, "connection was closed cleanly")                                           \
    X(ECONNLOST, -4111, "connection to the other side was lost in a non-clean fashion")            \
    X(EDNSLOOKUP, -4112, "the name could not be resolved")                                         \
    X(EPROTOCOL, -4113, "the peer broke the protocol")                                             \
    X(ELIMIT, -4114, "a limit was reached")                                                        \
    X(ETLS, -4115, "TLS failure")                                                                  \
    X(ETLSVERIFY, -4116, "the peer's certificate could not be verified")                           \
    X(EPROCESSTERMINATED, -4117, "the process ended with a non-zero status or by a signal")

enum {
#define TW__ERR_ENUM(name, value, text) TW_##name = (value),
    TW_ERRNO_MAP(TW__ERR_ENUM) TW_OWN_ERROR_MAP(TW__ERR_ENUM)
#undef TW__ERR_ENUM
};

/* A human sentence for any code: Twine's own, or -errno (via strerror).
 * Never NULL; the string is static. */
const char *tw_strerror(int code);

/* The code's name ("ENOMEM", "EALREADYCALLED"), or "UNKNOWN". Static. */
const char *tw_err_name(int code);

#endif
