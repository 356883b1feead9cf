/* Test helpers for code that runs on other threads: a gate that jobs wait on
 * until the test opens it, and a short sleep. */
#ifndef TWTEST_GATE_H
#define TWTEST_GATE_H

#include <pthread.h>
#include <stdbool.h>

typedef struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool open;
    int waiting; /* threads inside gate_wait now */
} gate;

#define GATE_INIT                                                                                  \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0                              \
    }

void gate_init(gate *g);
void gate_destroy(gate *g);
/* Blocks until the gate is open. */
void gate_wait(gate *g);
void gate_open(gate *g);
/* Waits (5 s bound) until n threads are inside gate_wait; returns whether they were. */
bool gate_await_waiting(gate *g, int n);
/* A tw_call_fn that waits on the gate passed as its argument. */
void gate_job(void *arg);

void sleep_ms(int ms);

#endif
