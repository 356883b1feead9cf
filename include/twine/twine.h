/* Twine's core: include this to get the base (with buffers), the reactor, deferreds and
 * coroutines. */
#ifndef TWINE_TWINE_H
#define TWINE_TWINE_H

#include <twine/alloc.h>
#include <twine/buffer.h>
#include <twine/clock.h>
#include <twine/coro.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/reactor.h>
#include <twine/result.h>
#include <twine/thread.h>

#endif
