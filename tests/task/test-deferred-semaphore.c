/* DeferredSemaphore: tokens and the limit, waiters in order, run limiting
 * concurrency, cancellation (waiting and handed a token), free, misuse,
 * allocation failure. */
#include <twine/dsync.h>

#include "twtest.h"

struct seen {
    int fired;
    int code;
    void *value;
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

static tw_dsemaphore *sem_new(size_t tokens)
{
    tw_dsemaphore *s = NULL;
    cr_assert_eq(tw_dsemaphore_new(&s, tokens), 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), tokens);
    cr_assert_eq(tw_dsemaphore_limit(s), tokens);
    return s;
}

TW_TEST(dsem, tokens_are_taken_then_waited_for)
{
    tw_dsemaphore *s = sem_new(3);
    tw_deferred *d[5];
    struct seen seen[5] = {0};
    for (int i = 0; i < 5; i++) {
        d[i] = tw_dsemaphore_acquire(s);
        tw_deferred_add_both(d[i], note, &seen[i]);
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(seen[i].fired, 1);
        cr_assert_eq(seen[i].value, s, "fires with the semaphore");
    }
    cr_assert_eq(seen[3].fired + seen[4].fired, 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), 0);
    cr_assert_eq(tw_dsemaphore_waiting(s), 2);
    tw_dsemaphore_release(s);
    cr_assert_eq(seen[3].fired, 1, "the first waiter");
    cr_assert_eq(seen[4].fired, 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), 0, "the token went to the waiter");
    tw_dsemaphore_release(s);
    cr_assert_eq(seen[4].fired, 1);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tw_dsemaphore_release(s), 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), 3);
    cr_assert_eq(tw_dsemaphore_release(s), TW_EINVAL, "released too many times");
    cr_assert_eq(tw_dsemaphore_tokens(s), 3);
    for (int i = 0; i < 5; i++)
        tw_deferred_unref(d[i]);
    tw_dsemaphore_free(s);
}

/* ---- run limits concurrency */

struct job {
    tw_deferred *pending;
    bool started;
};

static struct job jobs[10];
static int in_progress, max_in_progress;

static tw_result job_done(tw_result r, void *arg)
{
    in_progress--;
    return r;
}

static tw_result job_fn(void *arg)
{
    struct job *j = arg;
    j->started = true;
    in_progress++;
    if (in_progress > max_in_progress)
        max_in_progress = in_progress;
    j->pending = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(j->pending, job_done, NULL);
    return tw_result_deferred(tw_deferred_ref(j->pending));
}

TW_TEST(dsem, run_keeps_at_most_limit_functions_going)
{
    tw_dsemaphore *s = sem_new(3);
    tw_deferred *d[10];
    struct seen seen[10] = {0};
    for (int i = 0; i < 10; i++) {
        d[i] = tw_dsemaphore_run(s, job_fn, &jobs[i]);
        tw_deferred_add_both(d[i], note, &seen[i]);
    }
    cr_assert_eq(in_progress, 3);
    cr_assert(jobs[2].started);
    cr_assert_not(jobs[3].started);
    /* Finish them in a scrambled order: started ones only. */
    int finish[] = {1, 0, 2, 4, 3, 5, 8, 6, 7, 9};
    int done = 0;
    while (done < 10) {
        for (int k = 0; k < 10; k++) {
            int i = finish[k];
            if (jobs[i].started && !tw_deferred_called(jobs[i].pending)) {
                tw_deferred_callback(jobs[i].pending, tw_result_from_int(i));
                cr_assert_eq(seen[i].fired, 1);
                cr_assert_eq(seen[i].value, (void *)(intptr_t)i);
                done++;
                break;
            }
        }
    }
    cr_assert_eq(max_in_progress, 3);
    cr_assert_eq(in_progress, 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), 3);
    for (int i = 0; i < 10; i++) {
        tw_deferred_unref(d[i]);
        tw_deferred_unref(jobs[i].pending);
    }
    tw_dsemaphore_free(s);
}

TW_TEST(dsem, cancelling_a_waiter_and_a_handed_over_one)
{
    tw_dsemaphore *s = sem_new(1);
    tw_deferred *holder = tw_dsemaphore_acquire(s);
    tw_deferred *a = tw_dsemaphore_acquire(s);
    tw_deferred *b = tw_dsemaphore_acquire(s);
    struct seen sa = {0}, sb = {0};
    tw_deferred_add_both(a, note, &sa);
    tw_deferred_add_both(b, note, &sb);
    tw_deferred_cancel(a);
    cr_assert_eq(sa.code, TW_ECANCELED);
    cr_assert_eq(tw_dsemaphore_waiting(s), 1);
    tw_dsemaphore_release(s);
    cr_assert_eq(sb.fired, 1);
    cr_assert_eq(sb.code, 0);
    tw_dsemaphore_release(s);
    cr_assert_eq(tw_dsemaphore_tokens(s), 1);
    tw_deferred_unref(holder);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_dsemaphore_free(s);
}

static tw_deferred *victim;

static tw_result release_then_cancel(tw_result r, void *arg)
{
    tw_dsemaphore *s = arg;
    cr_assert_eq(tw_dsemaphore_release(s), 0);
    cr_assert_eq(tw_dsemaphore_tokens(s), 0, "handed to the victim");
    tw_deferred_cancel(victim);
    cr_assert_eq(tw_dsemaphore_tokens(s), 1, "given back: nobody else waits");
    return r;
}

TW_TEST(dsem, a_cancelled_handed_over_token_comes_back)
{
    tw_dsemaphore *s = sem_new(1);
    tw_deferred *holder = tw_dsemaphore_acquire(s);
    tw_deferred *a = tw_dsemaphore_acquire(s);
    victim = tw_dsemaphore_acquire(s);
    struct seen sv = {0};
    tw_deferred_add_callback(a, release_then_cancel, s);
    tw_deferred_add_both(victim, note, &sv);
    tw_dsemaphore_release(s);
    cr_assert_eq(sv.code, TW_ECANCELED);
    cr_assert_eq(tw_dsemaphore_tokens(s), 1);
    tw_deferred_unref(holder);
    tw_deferred_unref(a);
    tw_deferred_unref(victim);
    tw_dsemaphore_free(s);
}

TW_TEST(dsem, free_fails_waiters_and_a_pending_run_completes)
{
    tw_dsemaphore *s = sem_new(1);
    struct job j = {0};
    in_progress = 0;
    tw_deferred *r1 = tw_dsemaphore_run(s, job_fn, &j);
    tw_deferred *w = tw_dsemaphore_acquire(s);
    struct seen s1 = {0}, sw = {0};
    tw_deferred_add_both(r1, note, &s1);
    tw_deferred_add_both(w, note, &sw);
    tw_dsemaphore_free(s);
    cr_assert_eq(sw.code, TW_ECANCELED);
    tw_deferred_callback(j.pending, tw_result_from_int(3));
    cr_assert_eq(s1.value, (void *)3);
    tw_deferred_unref(j.pending);
    tw_deferred_unref(r1);
    tw_deferred_unref(w);
}

TW_TEST(dsem, bad_arguments)
{
    tw_dsemaphore *s = NULL;
    cr_assert_eq(tw_dsemaphore_new(&s, 0), TW_EINVAL, "tokens >= 1");
    cr_assert_eq(tw_dsemaphore_new(NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_dsemaphore_release(NULL), TW_EINVAL);
    struct seen seen = {0};
    tw_deferred *d = tw_dsemaphore_acquire(NULL);
    tw_deferred_add_both(d, note, &seen);
    cr_assert_eq(seen.code, TW_EINVAL);
    tw_deferred_unref(d);
    d = tw_dsemaphore_run(NULL, job_fn, NULL);
    tw_deferred_add_both(d, note, &seen);
    cr_assert_eq(seen.code, TW_EINVAL);
    tw_deferred_unref(d);
    tw_dsemaphore_free(NULL);
}

static tw_result quick(void *arg)
{
    return tw_result_from_int(1);
}

TW_TEST(dsem, allocation_failure_is_clean)
{
    for (long n = 0;; n++) {
        tw_dsemaphore *s = sem_new(2);
        tw_deferred *h = tw_dsemaphore_acquire(s);
        tw_deferred *h2 = tw_dsemaphore_acquire(s);
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_dsemaphore_run(s, quick, NULL);
        tw_testing_fail_alloc_off();
        if (d) {
            tw_dsemaphore_release(s);
            struct seen seen = {0};
            tw_deferred_add_both(d, note, &seen);
            cr_assert_eq(seen.value, (void *)1);
            cr_assert_eq(tw_dsemaphore_tokens(s), 1);
            tw_deferred_unref(d);
            tw_deferred_unref(h);
            tw_deferred_unref(h2);
            tw_dsemaphore_free(s);
            break;
        }
        cr_assert_eq(tw_dsemaphore_waiting(s), 0);
        cr_assert_eq(tw_dsemaphore_tokens(s), 0);
        tw_deferred_unref(h);
        tw_deferred_unref(h2);
        tw_dsemaphore_free(s);
    }
}
