#include "twtest-gate.h"

#include <time.h>

void gate_init(gate *g)
{
    *g = (gate)GATE_INIT;
}

void gate_destroy(gate *g)
{
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cv);
}

void gate_wait(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->waiting++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->lock);
    g->waiting--;
    pthread_mutex_unlock(&g->lock);
}

void gate_open(gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->lock);
}

bool gate_await_waiting(gate *g, int n)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&g->lock);
    int rc = 0;
    while (g->waiting < n && rc == 0)
        rc = pthread_cond_timedwait(&g->cv, &g->lock, &deadline);
    bool ok = g->waiting >= n;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

void gate_job(void *arg)
{
    gate_wait(arg);
}

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
