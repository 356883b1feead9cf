/* DeferredLock: acquire/release in first-come order, the state already
 * handed over when a waiter's callbacks run, cancellation of every kind of
 * waiter, run (sync, deferred, failing, cancelled, released unfired), free
 * with waiters, a long line in constant stack, allocation failure. */
#include <twine/dsync.h>

#include "twtest.h"

struct seen {
    int fired;
    int code;
    void *value;
    char order[64];
    size_t n;
};

static tw_result note(tw_result r, void *arg)
{
    struct seen *s = arg;
    s->fired++;
    s->code = r.failure ? tw_failure_code(r.failure) : 0;
    s->value = r.failure ? NULL : r.value;
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

static tw_dlock *lock_new(void)
{
    tw_dlock *l = NULL;
    cr_assert_eq(tw_dlock_new(&l), 0);
    cr_assert_not(tw_dlock_locked(l));
    return l;
}

TW_TEST(dlock, acquire_free_lock_fires_at_once_then_waiters_queue)
{
    tw_dlock *l = lock_new();
    tw_deferred *a = tw_dlock_acquire(l);
    cr_assert(tw_deferred_called(a));
    struct seen sa = {0};
    tw_deferred_add_callback(a, note, &sa);
    cr_assert_eq(sa.value, l, "fires with the lock");
    cr_assert(tw_dlock_locked(l));
    tw_deferred *b = tw_dlock_acquire(l);
    struct seen sb = {0};
    tw_deferred_add_callback(b, note, &sb);
    cr_assert_eq(sb.fired, 0);
    cr_assert_eq(tw_dlock_waiting(l), 1);
    cr_assert_eq(tw_dlock_release(l), 0);
    cr_assert_eq(sb.fired, 1, "handed to the waiter");
    cr_assert(tw_dlock_locked(l), "now the waiter's");
    cr_assert_eq(tw_dlock_waiting(l), 0);
    cr_assert_eq(tw_dlock_release(l), 0);
    cr_assert_not(tw_dlock_locked(l));
    cr_assert_eq(tw_dlock_release(l), TW_EINVAL, "releasing an unlocked lock");
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_dlock_free(l);
}

/* Each waiter records its letter and what it saw, then releases. */
struct line {
    tw_dlock *l;
    char order[64];
    size_t n;
    bool release;
    bool locked_inside;
    size_t waiting_inside;
};

static struct line *cur_line;

static tw_result in_line(tw_result r, void *arg)
{
    struct line *ln = cur_line;
    cr_assert_null(r.failure);
    ln->order[ln->n++] = (char)(intptr_t)arg;
    ln->locked_inside = tw_dlock_locked(ln->l);
    ln->waiting_inside = tw_dlock_waiting(ln->l);
    if (ln->release)
        cr_assert_eq(tw_dlock_release(ln->l), 0);
    return r;
}

TW_TEST(dlock, waiters_are_served_in_order_with_the_state_handed_over)
{
    struct line ln = {.l = lock_new(), .release = false};
    cur_line = &ln;
    tw_deferred *first = tw_dlock_acquire(ln.l);
    tw_deferred *ds[4];
    for (int i = 0; i < 4; i++) {
        ds[i] = tw_dlock_acquire(ln.l);
        tw_deferred_add_callback(ds[i], in_line, (void *)(intptr_t)('a' + i));
    }
    cr_assert_eq(tw_dlock_waiting(ln.l), 4);
    for (int i = 0; i < 4; i++) {
        tw_dlock_release(ln.l);
        cr_assert_eq(ln.n, (size_t)i + 1);
        cr_assert(ln.locked_inside, "the lock is the waiter's when it runs");
        cr_assert_eq(ln.waiting_inside, (size_t)3 - i, "and it is out of the line");
    }
    cr_assert_str_eq(ln.order, "abcd");
    tw_dlock_release(ln.l);
    cr_assert_not(tw_dlock_locked(ln.l));
    tw_deferred_unref(first);
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(ds[i]);
    tw_dlock_free(ln.l);
}

static tw_result acquire_again(tw_result r, void *arg)
{
    struct line *ln = cur_line;
    ln->order[ln->n++] = (char)(intptr_t)arg;
    cr_assert_eq(tw_dlock_release(ln->l), 0);
    if (arg == (void *)'a') {
        /* Acquiring from inside must queue behind the waiters still in line. */
        tw_deferred *again = tw_dlock_acquire(ln->l);
        cr_assert_not(tw_deferred_called(again));
        tw_deferred_add_callback(again, acquire_again, (void *)'z');
        tw_deferred_unref(again);
    }
    return r;
}

TW_TEST(dlock, acquiring_from_a_callback_does_not_jump_the_line)
{
    struct line ln = {.l = lock_new()};
    cur_line = &ln;
    tw_deferred *first = tw_dlock_acquire(ln.l);
    for (int i = 0; i < 3; i++) {
        tw_deferred *d = tw_dlock_acquire(ln.l);
        tw_deferred_add_callback(d, acquire_again, (void *)(intptr_t)('a' + i));
        tw_deferred_unref(d);
    }
    tw_dlock_release(ln.l);
    cr_assert_str_eq(ln.order, "abcz");
    cr_assert_not(tw_dlock_locked(ln.l));
    tw_deferred_unref(first);
    tw_dlock_free(ln.l);
}

TW_TEST(dlock, cancelling_a_waiter_takes_it_out_of_the_line)
{
    tw_dlock *l = lock_new();
    tw_deferred *a = tw_dlock_acquire(l);
    tw_deferred *b = tw_dlock_acquire(l);
    tw_deferred *c = tw_dlock_acquire(l);
    struct seen sb = {0}, sc = {0};
    tw_deferred_add_both(b, note, &sb);
    tw_deferred_add_both(c, note, &sc);
    tw_deferred_cancel(b);
    cr_assert_eq(sb.fired, 1);
    cr_assert_eq(sb.code, TW_ECANCELED);
    cr_assert_eq(tw_dlock_waiting(l), 1);
    tw_dlock_release(l);
    cr_assert_eq(sc.fired, 1, "c is next");
    cr_assert_eq(sc.code, 0);
    tw_deferred_cancel(a); /* fired long ago: nothing */
    tw_deferred_cancel(c); /* fired: nothing, c keeps the lock */
    cr_assert(tw_dlock_locked(l));
    tw_dlock_release(l);
    cr_assert_not(tw_dlock_locked(l));
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(c);
    tw_dlock_free(l);
}

/* The window between being handed the lock and being fired: a's callback
 * releases (b is handed the lock, fired after a's callback returns) and then
 * cancels b. b fails; the lock goes on to c. */
static tw_deferred *victim;

static tw_result release_then_cancel(tw_result r, void *arg)
{
    tw_dlock *l = arg;
    cr_assert_eq(tw_dlock_release(l), 0);
    cr_assert(tw_dlock_locked(l), "handed to b");
    cr_assert_not(tw_deferred_called(victim), "b is not fired yet");
    tw_deferred_cancel(victim);
    return r;
}

TW_TEST(dlock, cancelling_a_waiter_handed_the_lock_passes_it_on)
{
    tw_dlock *l = lock_new();
    tw_deferred *holder = tw_dlock_acquire(l);
    tw_deferred *a = tw_dlock_acquire(l);
    victim = tw_dlock_acquire(l);
    tw_deferred *c = tw_dlock_acquire(l);
    struct seen sb = {0}, sc = {0};
    tw_deferred_add_callback(a, release_then_cancel, l);
    tw_deferred_add_both(victim, note, &sb);
    tw_deferred_add_both(c, note, &sc);
    tw_dlock_release(l); /* to a */
    cr_assert_eq(sb.code, TW_ECANCELED);
    cr_assert_eq(sc.fired, 1);
    cr_assert_eq(sc.code, 0);
    cr_assert(tw_dlock_locked(l), "c holds it");
    tw_dlock_release(l);
    cr_assert_not(tw_dlock_locked(l));
    tw_deferred_unref(holder);
    tw_deferred_unref(a);
    tw_deferred_unref(victim);
    tw_deferred_unref(c);
    tw_dlock_free(l);
}

static size_t served;

static tw_result serve_and_release(tw_result r, void *arg)
{
    served++;
    cr_assert_eq(tw_dlock_release(arg), 0);
    return r;
}

TW_TEST(dlock, a_long_line_drains_in_constant_stack)
{
    enum { N = 200000 };
    tw_dlock *l = lock_new();
    tw_deferred *first = tw_dlock_acquire(l);
    for (int i = 0; i < N; i++) {
        tw_deferred *d = tw_dlock_acquire(l);
        cr_assert(d);
        tw_deferred_add_callback(d, serve_and_release, l);
        tw_deferred_unref(d);
    }
    tw_dlock_release(l);
    cr_assert_eq(served, N);
    cr_assert_not(tw_dlock_locked(l));
    tw_deferred_unref(first);
    tw_dlock_free(l);
}

TW_TEST(dlock, free_fails_the_waiters)
{
    tw_dlock *l = lock_new();
    tw_deferred *a = tw_dlock_acquire(l);
    tw_deferred *b = tw_dlock_acquire(l);
    struct seen sb = {0};
    tw_deferred_add_both(b, note, &sb);
    tw_dlock_free(l);
    cr_assert_eq(sb.fired, 1);
    cr_assert_eq(sb.code, TW_ECANCELED);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
}

/* ---- run */

static int fn_calls;
static bool locked_in_fn;
static tw_dlock *run_lock;
static tw_deferred *fn_pending;

static tw_result fn_value(void *arg)
{
    fn_calls++;
    locked_in_fn = tw_dlock_locked(run_lock);
    return tw_result_from_int((intptr_t)arg);
}

static tw_result fn_fail(void *arg)
{
    fn_calls++;
    return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "fn failed"));
}

static tw_result fn_defer(void *arg)
{
    fn_calls++;
    fn_pending = tw_deferred_new(NULL, NULL);
    return tw_result_deferred(tw_deferred_ref(fn_pending));
}

TW_TEST(dlock, run_holds_the_lock_around_a_synchronous_function)
{
    run_lock = lock_new();
    tw_deferred *d = tw_dlock_run(run_lock, fn_value, (void *)17);
    struct seen s = {0};
    tw_deferred_add_both(d, note, &s);
    cr_assert_eq(fn_calls, 1);
    cr_assert(locked_in_fn);
    cr_assert_eq(s.value, (void *)17);
    cr_assert_not(tw_dlock_locked(run_lock), "released after");
    tw_deferred_unref(d);
    d = tw_dlock_run(run_lock, fn_fail, NULL);
    tw_deferred_add_both(d, note, &s);
    cr_assert_eq(s.code, TW_EUSER, "the failure passes through");
    cr_assert_not(tw_dlock_locked(run_lock), "released after a failure too");
    tw_deferred_unref(d);
    tw_dlock_free(run_lock);
}

TW_TEST(dlock, run_holds_the_lock_until_the_deferred_fires)
{
    run_lock = lock_new();
    tw_deferred *d1 = tw_dlock_run(run_lock, fn_defer, NULL);
    tw_deferred *first_pending = fn_pending;
    tw_deferred *d2 = tw_dlock_run(run_lock, fn_value, (void *)2);
    struct seen s1 = {0}, s2 = {0};
    tw_deferred_add_both(d1, note, &s1);
    tw_deferred_add_both(d2, note, &s2);
    cr_assert_eq(fn_calls, 1, "the second run waits for the lock");
    cr_assert(tw_dlock_locked(run_lock));
    tw_deferred_callback(first_pending, tw_result_from_int(1));
    cr_assert_eq(s1.value, (void *)1);
    cr_assert_eq(fn_calls, 2);
    cr_assert_eq(s2.value, (void *)2);
    cr_assert_not(tw_dlock_locked(run_lock));
    tw_deferred_unref(first_pending);
    tw_deferred_unref(d1);
    tw_deferred_unref(d2);
    tw_dlock_free(run_lock);
}

TW_TEST(dlock, cancelling_a_run_waiting_for_the_lock_never_calls_fn)
{
    run_lock = lock_new();
    tw_deferred *held = tw_dlock_acquire(run_lock);
    tw_deferred *d = tw_dlock_run(run_lock, fn_value, NULL);
    struct seen s = {0};
    tw_deferred_add_both(d, note, &s);
    tw_deferred_cancel(d);
    cr_assert_eq(s.code, TW_ECANCELED);
    cr_assert_eq(tw_dlock_waiting(run_lock), 0);
    tw_dlock_release(run_lock);
    cr_assert_eq(fn_calls, 0);
    cr_assert_not(tw_dlock_locked(run_lock));
    tw_deferred_unref(held);
    tw_deferred_unref(d);
    tw_dlock_free(run_lock);
}

TW_TEST(dlock, cancelling_a_run_in_progress_cancels_fns_deferred_and_releases)
{
    run_lock = lock_new();
    tw_deferred *d = tw_dlock_run(run_lock, fn_defer, NULL);
    struct seen s = {0};
    tw_deferred_add_both(d, note, &s);
    cr_assert(tw_dlock_locked(run_lock));
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(fn_pending));
    cr_assert_eq(s.code, TW_ECANCELED);
    cr_assert_not(tw_dlock_locked(run_lock));
    tw_deferred_unref(fn_pending);
    tw_deferred_unref(d);
    tw_dlock_free(run_lock);
}

TW_TEST(dlock, a_run_whose_deferred_is_released_unfired_releases)
{
    run_lock = lock_new();
    tw_deferred *d = tw_dlock_run(run_lock, fn_defer, NULL);
    cr_assert(tw_dlock_locked(run_lock));
    tw_deferred_unref(d);
    tw_deferred_unref(fn_pending); /* nobody can fire it now */
    cr_assert_not(tw_dlock_locked(run_lock), "not held forever");
    tw_dlock_free(run_lock);
}

TW_TEST(dlock, free_while_a_run_is_pending)
{
    run_lock = lock_new();
    tw_deferred *d = tw_dlock_run(run_lock, fn_defer, NULL);
    tw_deferred *waiter = tw_dlock_run(run_lock, fn_value, NULL);
    struct seen s = {0}, sw = {0};
    tw_deferred_add_both(d, note, &s);
    tw_deferred_add_both(waiter, note, &sw);
    tw_dlock_free(run_lock);
    cr_assert_eq(sw.code, TW_ECANCELED, "the waiting run fails");
    tw_deferred_callback(fn_pending, tw_result_from_int(4));
    cr_assert_eq(s.value, (void *)4, "the run in progress completes");
    cr_assert_eq(fn_calls, 1);
    tw_deferred_unref(fn_pending);
    tw_deferred_unref(d);
    tw_deferred_unref(waiter);
}

TW_TEST(dlock, bad_arguments)
{
    cr_assert_eq(tw_dlock_new(NULL), TW_EINVAL);
    cr_assert_eq(tw_dlock_release(NULL), TW_EINVAL);
    tw_deferred *d = tw_dlock_acquire(NULL);
    struct seen s = {0};
    tw_deferred_add_both(d, note, &s);
    cr_assert_eq(s.code, TW_EINVAL);
    tw_deferred_unref(d);
    tw_dlock *l = lock_new();
    d = tw_dlock_run(l, NULL, NULL);
    tw_deferred_add_both(d, note, &s);
    cr_assert_eq(s.code, TW_EINVAL);
    cr_assert_not(tw_dlock_locked(l));
    tw_deferred_unref(d);
    tw_dlock_free(l);
    tw_dlock_free(NULL);
}

TW_TEST(dlock, allocation_failure_is_clean)
{
    for (int held = 0; held < 2; held++) {
        for (long n = 0;; n++) {
            run_lock = lock_new();
            tw_deferred *h = held ? tw_dlock_acquire(run_lock) : NULL;
            fn_calls = 0;
            tw_testing_fail_alloc_after(n);
            tw_deferred *a = tw_dlock_acquire(run_lock);
            tw_deferred *d = a ? tw_dlock_run(run_lock, fn_value, (void *)8) : NULL;
            tw_testing_fail_alloc_off();
            if (a && d) {
                if (held)
                    tw_dlock_release(run_lock); /* to a */
                tw_dlock_release(run_lock);     /* a's: the run goes */
                struct seen s = {0};
                tw_deferred_add_both(d, note, &s);
                cr_assert_eq(s.value, (void *)8);
                cr_assert_not(tw_dlock_locked(run_lock));
                tw_deferred_unref(a);
                tw_deferred_unref(d);
                tw_deferred_unref(h);
                tw_dlock_free(run_lock);
                break;
            }
            cr_assert_eq(fn_calls, 0);
            cr_assert_eq(tw_dlock_waiting(run_lock), a && held ? 1 : 0);
            if (a) {
                if (held) {
                    struct seen sa = {0};
                    tw_deferred_add_both(a, note, &sa);
                    tw_deferred_cancel(a);
                    cr_assert_eq(sa.code, TW_ECANCELED);
                } else
                    tw_dlock_release(run_lock);
            }
            cr_assert_eq(tw_dlock_waiting(run_lock), 0);
            cr_assert_eq(tw_dlock_locked(run_lock), held == 1);
            tw_deferred_unref(a);
            tw_deferred_unref(h);
            tw_dlock_free(run_lock);
        }
    }
}
