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
 * record continues its chain. The log's head file (PATH.head, below) must
 * agree with that line: a log that ends before its head file's record, or
 * goes on past it, or whose last record is not the one the head names, is
 * refused rather than continued, since continuing it would hide the cut or
 * the change. Returns NULL with *err set (malloc'd; the caller frees it)
 * when memory runs out, the file cannot be opened, its last whole line is
 * not an audit record, or it disagrees with its head file. */
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
 * several processes may share a log, then replaces the head file. Returns
 * 0, or -1 with *err set (malloc'd).
 *
 * A record is written whole or not at all: when the write, the fsync
 * (CP_AUDIT_FSYNC_ALWAYS) or the head file fails -- no space, an I/O
 * error, a read-only file system -- the bytes that reached the log are
 * cut off again and *err names the file and the system's reason. Such a
 * failure is final for this handle: every later append, sync and close
 * returns it again, so that no record after a lost one is written as if
 * nothing had happened. Reopening the log goes on from what is on disk.
 * Records refused for what they are (no event name, text that is not
 * UTF-8) write nothing and leave the handle usable. */
int cp_audit_append(cp_audit *a, const cp_audit_record *r, char **err);

/* Makes what was written since the last sync durable: the log's data, its
 * head file and the directory entries of both. A no-op with
 * CP_AUDIT_FSYNC_OFF (the head file is still replaced with each record). */
int cp_audit_sync(cp_audit *a, char **err);

/* The same sync carried out by another thread (the event loop's pool):
 * start on a's thread, run anywhere, finish on a's thread again. start
 * returns NULL when nothing needs syncing (*err NULL) or on failure (*err
 * set, malloc'd). The job keeps a allocated (not open) until finish, which
 * returns the outcome, records a failure in a so that later appends
 * refuse, and frees the job. run touches nothing but the job. */
typedef struct cp_audit_sync_job cp_audit_sync_job;
cp_audit_sync_job *cp_audit_sync_start(cp_audit *a, char **err);
void cp_audit_sync_run(cp_audit_sync_job *j);
int cp_audit_sync_finish(cp_audit_sync_job *j, char **err);

/* Syncs (unless CP_AUDIT_FSYNC_OFF), closes and frees; after a failed
 * write it only closes, and returns that failure. a may be NULL. */
int cp_audit_close(cp_audit *a, char **err);

/* What the chain stands at: the last record's seq and hash (hex; "" when
 * there is none). */
uint64_t cp_audit_seq(const cp_audit *a);
void cp_audit_last_hash(const cp_audit *a, char hex[65]);
const char *cp_audit_path(const cp_audit *a);

/* The head file: PATH.head, one JSON object naming the last record of the
 * log at PATH,
 *   {"path":"...","seq":155,"hash":"<64 hex>","records":155,
 *    "run_id":"...","ts":"<the record's ts>"}
 * where records counts the records in this file (not in files rotated
 * away). It is replaced atomically (a temporary file renamed over it)
 * after every record, and fsync'd with the log. It anchors the end of the
 * chain outside the log: `cogpipe audit verify` checks that the chain ends
 * exactly at the record it names, and so finds a removed or edited last
 * record, a file cut at a line boundary and an emptied file. The same
 * anchor, taken from a run's summary, can be given to cp_audit_verify. */
typedef struct cp_audit_head {
  uint64_t seq;     /* 0: no record yet */
  char hash[65];    /* "" when seq is 0 */
  uint64_t records; /* in this file */
} cp_audit_head;

void cp_audit_head_get(const cp_audit *a, cp_audit_head *out);
/* PATH.head for the log at path; caller frees. */
char *cp_audit_head_path(const char *path);

/* RFC 3339 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z. */
void cp_audit_timestamp(char out[32]);
/* A new run id: a UUID version 7 (time-ordered, 74 random bits; from the
 * clock and the pid when libcrypto's entropy source fails). */
void cp_audit_run_id(char out[37]);
/* SHA-256 of data as 64 lower-case hex digits. Returns 0, or -1 with *err
 * set (malloc'd) when memory runs out. */
int cp_audit_sha256_hex(const void *data, size_t len, char hex[65], char **err);
/* SHA-256 of a file's bytes, read in chunks (input files of a run, for the
 * run_start record). Returns 0, or -1 with *err set (malloc'd). */
int cp_audit_sha256_file(const char *path, char hex[65], char **err);

/* ---- verification ----------------------------------------------------- */

typedef struct cp_audit_note {
  size_t file;   /* index into the paths given */
  uint64_t line; /* 1-based; 0 when the note is about the file as a whole */
  char *message; /* owned by the report */
} cp_audit_note;

/* A run with a run_start record and no run_end: killed, crashed, cut off
 * by a failed write, or still going. */
typedef struct cp_audit_run {
  size_t file;
  uint64_t line; /* of its run_start record */
  char *run_id;  /* owned by the report */
} cp_audit_run;

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
  cp_audit_run *interrupted;
  size_t n_interrupted;
  /* The head file read beside the last file (head_path NULL when it does
   * not exist), and whether the end of the chain was checked against it
   * or against the anchor given. */
  char *head_path;
  cp_audit_head head;
  int end_checked;
  /* Where the anchor given was found in the chain (anchor_line 0: not
   * found), and how many records come after it. */
  size_t anchor_file;
  uint64_t anchor_line;
  uint64_t after_anchor;
} cp_audit_report;

/* Verifies the files as one chain, in the order given (oldest first).
 * Finds the first broken line and says why: not JSON, not a record, a
 * record changed, removed, inserted, repeated or out of order, a chain
 * that starts or continues wrongly. A line cut short by a crash (the last
 * line of the last file, without its newline; or one an "audit.recovered"
 * record accounts for) is a warning.
 *
 * The end of the chain is checked against the head file of the last file
 * when there is one: the chain must end exactly at the record it names.
 * anchor (seq and hash; records is not used), when not NULL, is a record
 * the chain must pass through, as a run's summary reported it; records
 * after it are fine (later runs). With neither, a warning says that the
 * end could not be checked.
 *
 * Returns 0 intact, 1 broken, -1 when a file (or the head file) could not
 * be read (report->unreadable; report->problem says which) or memory ran
 * out (report->problem says so). The caller frees the report
 * with cp_audit_report_free. */
int cp_audit_verify(const char *const *paths, size_t n,
                    const cp_audit_head *anchor, cp_audit_report *report);
void cp_audit_report_free(cp_audit_report *report);

#endif
