/* A broker target spread over several connections (see pool.c). */
#ifndef HOOKD_TRANSPORT_POOL_H
#define HOOKD_TRANSPORT_POOL_H

#include "transport/transport.h"

/* A target that sends through subs[0..n) in turn and answers in order,
 * described as desc (where its messages go, for logs and dead letters).
 * It takes the n targets over (destroying it destroys them); the caller
 * frees only the array. NULL when out of memory (the subs stay the
 * caller's). */
hk_tx_target *hk_tx_pool_create(hk_tx_target **subs, size_t n,
                                const char *desc);

#endif
