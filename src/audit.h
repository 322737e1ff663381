/*
 * audit.h -- the tamper-evident audit log: JSON Lines chained by SHA-256,
 * appended whole-line with O_APPEND, fsync'd by policy, rotated by size
 * without breaking the chain, and verified. It writes what it is given:
 * redaction happens before (lua_audit.c), never here.
 *
 * A record is one line:
 *   {"ts":"2024-05-01T12:00:00.123Z","seq":7,"run_id":"...","tenant":"...",
 *    "pipeline":"...","event":"...",<fields>,"prev":"<64 hex>"}
 * where prev is the SHA-256 of the previous line's bytes (without its
 * newline). The first record of a chain has "genesis":true and prev = 64
 * zeros. The first record of a file started by rotation is an
 * "audit.continued" record naming the previous file, whose prev is the
 * hash of that file's last line. A line cut short by a crash is closed on
 * the next open and followed by an "audit.recovered" record whose prev is
 * the hash of the cut line and whose "resumes" is the hash of the last
 * whole record before it. seq counts records along the chain, from 1.
 */
#ifndef CP_AUDIT_H
#define CP_AUDIT_H

#include <stddef.h>
#include <stdint.h>

typedef enum cp_audit_fsync {
  CP_AUDIT_FSYNC_BATCH,  /* at cp_audit_sync (batch boundaries) and close */
  CP_AUDIT_FSYNC_ALWAYS, /* after every record */
  CP_AUDIT_FSYNC_OFF     /* left to the kernel */
} cp_audit_fsync;

/* "always", "batch", "off" -> 0 and *out; -1 for anything else. */
int cp_audit_fsync_parse(const char *s, cp_audit_fsync *out);

typedef struct cp_audit_options {
  cp_audit_fsync fsync;
  /* Rotate before a record would take a non-empty file past this many
   * bytes; 0 never rotates. Rotated files are PATH.000001, PATH.000002,
   * ... in the order they were written. */
  uint64_t max_bytes;
} cp_audit_options;

typedef struct cp_audit cp_audit;

/* Opens or creates the log at path and reads its last line, so the next
 * record continues its chain. Returns NULL with *err set (malloc'd; the
 * caller frees it) when libcrypto cannot be loaded (crypto_load.h), the
 * file cannot be opened or its last whole line is not an audit record. */
cp_audit *cp_audit_open(const char *path, const cp_audit_options *o,
                        char **err);

typedef struct cp_audit_record {
  const char *run_id;   /* UTF-8 text; NULL writes null */
  const char *tenant;   /* NULL writes null */
  const char *pipeline; /* NULL writes null */
  const char *event;    /* required */
  /* The event's own members as JSON without the braces ("a":1,"b":[2]),
   * or NULL. They must not repeat the envelope names above, seq, ts,
   * genesis or prev. */
  const char *fields;
  size_t fields_len;
} cp_audit_record;

/* Appends one record (and, when due, the rotation or recovery record that
 * must come before it) in a single write(2), under an exclusive flock, so
 * several processes may share a log. Returns 0, or -1 with *err set
 * (malloc'd). After a failed write the chain state is re-read from the
 * file on the next call. */
int cp_audit_append(cp_audit *a, const cp_audit_record *r, char **err);

/* fsync of what was written since the last sync (and of the directory when
 * a file was created or rotated). A no-op with CP_AUDIT_FSYNC_OFF. */
int cp_audit_sync(cp_audit *a, char **err);

/* A descriptor the caller may fsync from another thread: a dup of the
 * log's, which the caller closes. Clears the "written since sync" state
 * as cp_audit_sync does. Returns -1 when nothing needs syncing. */
int cp_audit_sync_fd(cp_audit *a, char **err);

/* Syncs (unless CP_AUDIT_FSYNC_OFF), closes and frees. a may be NULL. */
int cp_audit_close(cp_audit *a, char **err);

/* What the chain stands at: the last record's seq and hash (hex). */
uint64_t cp_audit_seq(const cp_audit *a);
void cp_audit_last_hash(const cp_audit *a, char hex[65]);
const char *cp_audit_path(const cp_audit *a);

/* RFC 3339 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z. */
void cp_audit_timestamp(char out[32]);
/* A new run id: a UUID version 7 (time-ordered, 74 random bits; from the
 * clock and the pid when libcrypto or its entropy source is missing). */
void cp_audit_run_id(char out[37]);
/* SHA-256 of data as 64 lower-case hex digits. Returns 0, or -1 with *err
 * set (malloc'd) when libcrypto cannot be loaded. */
int cp_audit_sha256_hex(const void *data, size_t len, char hex[65], char **err);
/* SHA-256 of a file's bytes, read in chunks (input files of a run, for the
 * run_start record). Returns 0, or -1 with *err set (malloc'd). */
int cp_audit_sha256_file(const char *path, char hex[65], char **err);

/* ---- verification ----------------------------------------------------------
 */

typedef struct cp_audit_note {
  size_t file; /* index into the paths given */
  uint64_t line;
  char *message; /* owned by the report */
} cp_audit_note;

typedef struct cp_audit_report {
  int broken;            /* 1 when the chain is broken (see problem) */
  int unreadable;        /* 1 when a file could not be read */
  cp_audit_note problem; /* the first broken line (message NULL if none) */
  cp_audit_note *warnings;
  size_t n_warnings;
  uint64_t *records; /* records per file */
  uint64_t total_records;
  uint64_t last_seq;
  char last_hash[65]; /* of the last record; "" when there is none */
} cp_audit_report;

/* Verifies the files as one chain, in the order given (oldest first).
 * Finds the first broken line and says why: not JSON, not a record, a
 * record changed, removed, inserted, repeated or out of order, a chain
 * that starts or continues wrongly. A line cut short by a crash (the last
 * line of the last file, without its newline; or one an "audit.recovered"
 * record accounts for) is a warning. Returns 0 intact, 1 broken, -1 when
 * a file could not be read (report->unreadable; report->problem says
 * which) or libcrypto cannot be loaded (report->problem says why). The
 * caller frees the report with cp_audit_report_free. */
int cp_audit_verify(const char *const *paths, size_t n,
                    cp_audit_report *report);
void cp_audit_report_free(cp_audit_report *report);

#endif
