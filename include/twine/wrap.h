/* Protocol wrappers (twisted.protocols.policies: ProtocolWrapper,
 * WrappingFactory): a protocol that sits between a transport and another
 * protocol and sees everything that passes.
 *
 * A tw_wrapper is two things in one struct: a tw_protocol (`base`) that the
 * real transport feeds, and a tw_transport (`transport`) that the wrapped
 * protocol is given as its own. By default every event is forwarded down
 * (connection_made, data_received, read/write_connection_lost, fd_received,
 * connection_lost) and every transport call is forwarded up to the real
 * transport (writes, lose/abort/half-close, get_peer/get_host, pause and
 * resume, producers, water marks, options, send_fds). An implementation
 * overrides what it needs through tw_wrapper_hooks; every hook left NULL keeps
 * the default. Policies (policies.h), the haproxy endpoint and TLS are built
 * this way.
 *
 * ---- Lifetimes
 * The real transport owns the wrapper (its protocol) and releases it after
 * connection_lost, as protocol.h says. The wrapper owns the wrapped protocol
 * and releases it right after the wrapped protocol's connection_lost (or, for
 * one whose connection was never made, when the wrapper itself is released).
 * The wrapper's transport is reference counted like any transport: the
 * wrapper holds its first reference until it is released; a wrapped protocol
 * that keeps a reference keeps the wrapper's memory (not the connection)
 * alive. During the wrapped protocol's connection_lost, calls still go to
 * the real transport (get_peer works there, if the real transport allows it);
 * once it returns, every call on the wrapper's transport returns TW_ENOTCONN
 * (lose/abort return 0: closing a closed transport does nothing;
 * write_buffer_size returns 0) without touching the real transport, which may
 * be gone by then.
 *
 * ---- Delaying connection_made (the haproxy endpoint)
 * The default connection_made calls tw_wrapper_make_wrapped_connection at
 * once. A wrapper that must read something first (a PROXY header) sets a
 * connection_made hook that does not call it, and a data_received hook that
 * collects the first bytes; once it has what it waited for it calls
 * tw_wrapper_make_wrapped_connection, then tw_wrapper_deliver with the bytes
 * that followed. Its get_peer / get_host hooks report the addresses it read
 * (falling back to tw_transport_get_peer(tw_wrapper_real(w), out)). Until the
 * wrapped connection is made, tw_wrapper_deliver drops nothing silently: it
 * returns TW_ENOTCONN and the bytes stay the hook's to keep. If the
 * connection is lost first, the wrapped protocol is released without ever
 * seeing connection_made or connection_lost (protocol.h's rule for a protocol
 * whose connection never got made). Sketch:
 *
 *     struct haproxy_wrapper { tw_wrapper w; char head[TW_PROXY_MAX]; size_t n;
 *                              tw_address peer, host; bool have; };
 *     static void hp_made(tw_wrapper *w) { }   // wait for the header
 *     static void hp_data(tw_wrapper *w, const char *d, size_t len)
 *     {
 *         struct haproxy_wrapper *h = (struct haproxy_wrapper *)w;
 *         if (h->have) { tw_wrapper_deliver(w, d, len); return; }
 *         ... append to head, tw_proxy_parse; on TW_EAGAIN return; on TW_EINVAL
 *         tw_transport_abort_connection(tw_wrapper_real(w)); return;
 *         on n > 0: fill peer/host, h->have = true;
 *         tw_wrapper_make_wrapped_connection(w);
 *         tw_wrapper_deliver(w, rest, rest_len);   // bytes after the header
 *     }
 *     static const tw_wrapper_hooks hp_hooks = {.connection_made = hp_made,
 *         .data_received = hp_data, .get_peer = hp_peer, .get_host = hp_host};
 *
 * Both calls are safe from inside any hook: the wrapped protocol may close
 * the connection from its connection_made, after which tw_wrapper_deliver
 * still hands it the bytes (as a transport does for bytes read in the same
 * pass) unless the connection is already lost.
 *
 * Everything here runs on the connection's reactor thread. */
#ifndef TWINE_WRAP_H
#define TWINE_WRAP_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/protocol.h>
#include <twine/transport.h>

typedef struct tw_wrapper tw_wrapper;
typedef struct tw_wrapping_factory tw_wrapping_factory;

/* What a wrapper implementation overrides. Every member may be NULL (the
 * default). Transport-side hooks run only while the connection is up (the
 * wrapper answers TW_ENOTCONN itself afterwards); to do the default from
 * inside a hook, call the same tw_transport_* function on tw_wrapper_real(w). */
typedef struct tw_wrapper_hooks {
    /* ---- Events from the real transport */
    /* Default: tw_wrapper_make_wrapped_connection(w). */
    void (*connection_made)(tw_wrapper *w);
    /* Default: tw_wrapper_deliver(w, data, len). */
    void (*data_received)(tw_wrapper *w, const char *data, size_t len);
    /* Runs first on connection lost (reason borrowed); the wrapped protocol's
     * connection_lost (when it was made) and release follow, always. */
    void (*connection_lost)(tw_wrapper *w, tw_failure *reason);
    /* The wrapper is being released (once, also for one whose factory init
     * refused it, with the extension as init left it): release what the
     * implementation holds. Never free w: its memory is the library's. */
    void (*free)(tw_wrapper *w);

    /* ---- Calls from the wrapped protocol on w->transport */
    int (*write)(tw_wrapper *w, const void *data, size_t len);
    int (*write_iov)(tw_wrapper *w, const struct iovec *iov, int iovcnt);
    int (*write_zerocopy)(tw_wrapper *w, const void *data, size_t len, tw_release_fn release,
                          void *arg);
    int (*lose_connection)(tw_wrapper *w);
    int (*abort_connection)(tw_wrapper *w);
    int (*get_peer)(const tw_wrapper *w, tw_address *out);
    int (*get_host)(const tw_wrapper *w, tw_address *out);
    int (*pause_producing)(tw_wrapper *w);
    int (*resume_producing)(tw_wrapper *w);
    int (*register_producer)(tw_wrapper *w, tw_producer *producer, bool streaming);
    int (*unregister_producer)(tw_wrapper *w);
    /* Default: the real transport's. A wrapper that holds bytes of its own
     * (TLS before its handshake) adds them. */
    size_t (*write_buffer_size)(const tw_wrapper *w);

    /* The real transport's end of file ends the connection even when the
     * wrapped protocol can half-close (TLS: an end of file under it is a
     * truncation, not the peer closing its half). */
    bool no_half_close;
} tw_wrapper_hooks;

/* Embed it first in an implementation's own struct (wrapper_size below). */
struct tw_wrapper {
    tw_protocol base;       /* what the real transport feeds */
    tw_transport transport; /* what the wrapped protocol is given */
    tw_protocol *wrapped;   /* the wrapped protocol; NULL once released */
    const tw_wrapper_hooks *hooks;
    tw_wrapping_factory *wfactory; /* the factory that built it, or NULL */
    tw_address addr;               /* the address given to build_protocol */
    void *data;                    /* the implementation's */
    /* Private. */
    tw_wrapper *prev, *next; /* the factory's list of connected wrappers */
    bool wrapped_made;       /* the wrapped protocol's connection_made ran */
    bool lost;               /* the wrapper's connection is lost */
    bool listed;             /* in wfactory's list */
    bool counted;            /* wfactory's unregister_protocol is still owed */
    bool holds_factory;      /* holds a reference to wfactory (tw_wrapping_factory_keep) */
    tw_failure *lost_reason; /* tw_wrapper_set_lost_reason's, or NULL */
};

/* Makes a wrapper around `wrapped` (taken over on success; the caller keeps
 * it on error) with the given hooks (may be NULL: forward everything) and
 * size (>= sizeof(tw_wrapper), 0 means sizeof(tw_wrapper); the extra bytes are
 * zeroed). Hand &w->base to a transport as its protocol. Returns 0 and *out,
 * TW_EINVAL (NULL wrapped or out, size too small) or TW_ENOMEM. A wrapper
 * that is never given a transport is disposed of with
 * tw_protocol_release(&w->base). */
int tw_wrapper_new(const tw_wrapper_hooks *hooks, size_t size, tw_protocol *wrapped,
                   tw_wrapper **out);

/* The wrapper whose base is p, or NULL when p is not a wrapper. */
tw_wrapper *tw_wrapper_from_protocol(tw_protocol *p);

/* The wrapper whose transport is t, or NULL when t is not a wrapper's. */
tw_wrapper *tw_wrapper_from_transport(const tw_transport *t);

/* The reason the wrapped protocol's connection_lost will be given instead of
 * the real transport's (TLS: the handshake failed, so the connection was
 * closed; the protocol hears why). Takes over `reason`; the first one set
 * wins (a later one is dropped). Call it before closing the real transport,
 * or from the connection_lost hook. */
void tw_wrapper_set_lost_reason(tw_wrapper *w, tw_failure *reason);

/* Puts w (from tw_wrapper_new, around a protocol p whose connection is live)
 * under p now: the transport p had (a real one, or another wrapper's) feeds
 * w instead, and p's transport becomes w->transport. p's connection is not
 * made again (tw_wrapper_make_wrapped_connection returns
 * TW_EALREADYCALLED); w's connection_made hook runs, if set. Bytes already
 * queued on the old transport stay ahead of what p writes from now on.
 * Returns 0, TW_EINVAL (w not fresh) or TW_ENOTCONN (p has no connection). */
int tw_wrapper_insert(tw_wrapper *w);

/* The real transport (NULL before connection_made and after release). */
static inline tw_transport *tw_wrapper_real(const tw_wrapper *w)
{
    return w->base.transport;
}

/* Gives the wrapped protocol its connection (its connection_made, with
 * w->transport as its transport), once. Returns 0; TW_EALREADYCALLED when it
 * was made already; TW_ENOTCONN when the wrapper has no live connection. */
int tw_wrapper_make_wrapped_connection(tw_wrapper *w);

/* Hands bytes to the wrapped protocol's data_received (borrowed for the
 * call). Returns 0, or TW_ENOTCONN (nothing delivered) when its connection is
 * not made yet or already lost. */
int tw_wrapper_deliver(tw_wrapper *w, const char *data, size_t len);

/* ---- WrappingFactory
 *
 * A factory that wraps each protocol another factory builds: build_protocol
 * allocates a wrapper (wrapper_size bytes, zeroed), then asks the wrapped
 * factory for the protocol (NULL refuses the connection: the wrapper is
 * freed and NULL returned), then runs hooks->init. start_factory and
 * stop_factory run the wrapped factory's tw_factory_do_start / do_stop (then
 * the hooks'); the client callbacks (started_connecting,
 * client_connection_failed/lost) are forwarded to the wrapped factory.
 *
 * While connected (from the wrapper's connection_made to its
 * connection_lost) a wrapper is in the factory's list (Twisted's
 * `protocols`), walked with tw_wrapping_factory_each. */

typedef struct tw_wrapping_factory_hooks {
    /* Replaces build_protocol: decide (limits...) and call
     * tw_wrapping_factory_build for the wrapper, or return NULL to refuse.
     * NULL: tw_wrapping_factory_build. */
    tw_protocol *(*build_protocol)(tw_wrapping_factory *wf, const tw_address *addr);
    /* The wrapper and its wrapped protocol were just built: set up the
     * extension. A negative return refuses the connection (both are released;
     * unregister_protocol is not called). May be NULL. */
    int (*init)(tw_wrapping_factory *wf, tw_wrapper *w);
    /* Exactly once for every wrapper whose init succeeded: at its
     * connection_lost (after the wrapped protocol's), or when it is released
     * without ever having been connected. Count connections down here. */
    void (*unregister_protocol)(tw_wrapping_factory *wf, tw_wrapper *w);
    /* After the wrapped factory's start / before its stop. May be NULL. */
    void (*start_factory)(tw_wrapping_factory *wf);
    void (*stop_factory)(tw_wrapping_factory *wf);
} tw_wrapping_factory_hooks;

/* Embed it first in a policy's own factory struct. */
struct tw_wrapping_factory {
    tw_factory base; /* give &wf->base to ports and connectors */
    tw_factory *wrapped;
    const tw_wrapper_hooks *wrapper_hooks;
    size_t wrapper_size;
    const tw_wrapping_factory_hooks *hooks;
    /* Private. */
    tw_wrapper *head; /* connected wrappers, oldest first */
    tw_wrapper *tail;
    size_t connected;
    unsigned refs; /* with keep: the owner's, each wrapper's, each build in progress */
    void (*release)(tw_wrapping_factory *wf);
};

/* wrapped must outlive wf. wrapper_hooks, hooks may be NULL; wrapper_size as
 * tw_wrapper_new. */
void tw_wrapping_factory_init(tw_wrapping_factory *wf, tw_factory *wrapped,
                              const tw_wrapper_hooks *wrapper_hooks, size_t wrapper_size,
                              const tw_wrapping_factory_hooks *hooks);

/* ---- Lifetime, for a factory its connections may outlive the owner of (a
 * port stopped while its connections go on: the haproxy and ssl endpoints).
 * keep makes the owner's reference and says how to free the factory; from
 * then on every wrapper the factory builds holds a reference until it is
 * released, and so does every build in progress (a build_protocol may stop
 * the port). drop lets go of the owner's; the last reference calls
 * release(wf), which frees the factory's memory (and what it owns). A factory
 * nobody keeps is the caller's to free, after its last connection. */
void tw_wrapping_factory_keep(tw_wrapping_factory *wf, void (*release)(tw_wrapping_factory *wf));
void tw_wrapping_factory_drop(tw_wrapping_factory *wf);

/* The wrapping factory whose base is f, or NULL when f is not one. */
tw_wrapping_factory *tw_wrapping_factory_from_factory(tw_factory *f);

/* WrappingFactory.buildProtocol: see above. Returns &w->base, or NULL
 * (refused, out of memory, or init refused). */
tw_protocol *tw_wrapping_factory_build(tw_wrapping_factory *wf, const tw_address *addr);
/* The same with the wrapped protocol built by `from` instead of wf->wrapped
 * (LimitTotalConnectionsFactory's overflow protocol). */
tw_protocol *tw_wrapping_factory_build_with(tw_wrapping_factory *wf, tw_factory *from,
                                            const tw_address *addr);

/* Wrappers connected now (len(factory.protocols)). */
size_t tw_wrapping_factory_connected(const tw_wrapping_factory *wf);

/* Calls fn(w, arg) for every connected wrapper, oldest first. fn may close
 * connections (they leave the list only when their connection_lost runs,
 * later) but must not free wf. */
void tw_wrapping_factory_each(tw_wrapping_factory *wf, void (*fn)(tw_wrapper *w, void *arg),
                              void *arg);

#endif
