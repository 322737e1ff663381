/*
 * embedio.h -- embedding vectors in and out of libcogpipe: the vectors
 * file a user hands to `--embeddings FILE`, the on-disk embedding cache,
 * and the body of an OpenAI-compatible /v1/embeddings answer. Only moves
 * vectors between bytes and a cp_vecset (similarity.h); it never fetches
 * anything and never compares vectors.
 *
 * Vectors file, JSON Lines (one object a line, blank lines skipped):
 *
 *   {"text": "book a flight to paris", "vector": [0.12, -0.03, ...]}
 *   {"text": "reset my password", "vector": [...], "intent": "password"}
 *
 * "embedding" is accepted for "vector"; every vector has the same length;
 * "intent" is optional. A file may instead be in the binary format below
 * (told apart by its first bytes), which the cache uses and which loads
 * without parsing numbers. All integers and floats little-endian:
 *
 *   offset 0   8 bytes  magic "CPVEC01\n"
 *   offset 8   u32      dim, the length of every vector (>= 1)
 *   offset 12  u32      flags: bit 0 set when rows carry an intent
 *   offset 16  u64      count of rows
 *   offset 24  rows:    u32 text length, the text (UTF-8);
 *                       if flags bit 0: u32 intent length (0xFFFFFFFF: no
 *                       intent), the intent;
 *                       dim x f32, the vector (stored unit length)
 */
#ifndef CP_EMBEDIO_H
#define CP_EMBEDIO_H

#include <stddef.h>

#include "similarity.h"

/* Reads a vectors file of either format. Returns a new set (the caller
 * holds its one reference) or NULL with a message naming the file and, for
 * JSON Lines, the line. */
cp_vecset *cp_embedio_read(const char *path, char *err, size_t errlen);

/* Writes s to path in the binary format, atomically: a temporary file in
 * the same directory, fsync'd, renamed over path, then the directory
 * fsync'd. Missing parent directories are created (mode 0700). Returns 0,
 * or -1 with a message. */
int cp_embedio_write(const cp_vecset *s, const char *path, char *err,
                     size_t errlen);

/* Adds to s the vectors of an OpenAI-compatible embeddings answer
 * ({"data": [{"index": i, "embedding": [...]}, ...]}, float arrays or
 * base64 of little-endian float32) for the inputs texts[0..n) that were
 * sent, in input order: row texts are texts[i]. Returns 0, or -1 with a
 * message (malformed answer, an index missing or repeated, a dimension
 * that differs from s's); s is unchanged on failure. */
int cp_embedio_add_response(cp_vecset *s, const char *body, size_t len,
                            const char *const *texts, const size_t *lens,
                            size_t n, char *err, size_t errlen);

#endif
