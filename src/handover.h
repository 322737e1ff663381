/*
 * handover.h -- how a pass of the check runs on two threads, a scanner and
 * a prober, or on one (handover.c): the calls check.c makes as it scans
 * and probes. For check.c only.
 */
#ifndef CP_HANDOVER_H
#define CP_HANDOVER_H

#include <stddef.h>

#include "check_internal.h"

/* Starts a thread that runs scan(arg), which scans the source and hands
 * its blocks over, while the caller probes them (cp_handover_probe).
 * `more`: the entries the pass is expected to add, whose pages the
 * scanner readies ahead of the prober. Leaves c->threaded 0 when no thread
 * could be made: the caller then runs the pass alone. */
void cp_handover_start(cp_check *c, size_t more, void (*scan)(void *),
                       void *arg);
/* Probing side of a pass on two threads: probes every block the scanner
 * hands over, helps compare and confirm, and returns when the pass is
 * counted and the scanner has ended. */
void cp_handover_probe(cp_check *c, size_t src);

/* Scanning side: the first block to fill. */
block *cp_handover_first(cp_check *c);
/* Scanning side: hands a filled block over, to the other thread or
 * straight to probing when there is none; returns the next block to fill.
 * While the other thread is behind, this one confirms. */
block *cp_handover_block(cp_check *c, size_t src, block *b);
/* Scanning side: hands over the source's last block and, with two
 * threads, compares and confirms until every block is counted. */
void cp_handover_last(cp_check *c, size_t src, block *b);

/* Probing side: the set being filled is big enough to be confirmed. */
void cp_handover_set_full(cp_check *c);

#endif
