/*
 * http.c -- libcurl's multi interface on the libuv loop (see http.h): one
 * uv_poll_t per socket libcurl asks about, one uv timer for libcurl's
 * timeouts, and per call the retry, backoff and limiter waits. It never
 * blocks, never calls into Lua and never prints a header or a body.
 */
#include "http.h"

#include <ctype.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "headers.h"
#include "json.h"
#include "lutil.h"

/* ---- types ---------------------------------------------------------------- */

typedef struct origin_gate origin_gate;

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  cp_http *h;
  int closing;
  struct sock_ctx *prev, *next; /* h->socks: every poll not yet closed */
} sock_ctx;

struct cp_http {
  uv_loop_t *loop;
  cp_runtime *rt; /* NULL for a plain loop */
  CURLM *multi;
  uv_timer_t timer;      /* libcurl's timeout */
  int open_handles;      /* ours not yet closed: timer, polls, call timers */
  int freeing;           /* cp_http_free ran; memory goes at open_handles 0 */
  int warned_insecure;   /* the "verification off" warning is printed once */
  cp_http_call *calls;   /* every call not yet closed */
  sock_ctx *socks;
  int close_hook;        /* id of the runtime close hook, or -1 */
  unsigned long long rng; /* xorshift state for jitter */
  origin_gate *origins;  /* every origin a call went to; freed with h */
  /* Calls cleared to go, handed to libcurl in the check phase of the loop,
   * once every answer that has arrived has been read (see flush_ready). */
  cp_http_call *ready_head, *ready_tail;
  uv_check_t check;
  uv_idle_t idle; /* keeps the poll from blocking while calls are ready */
};

/* The gate of one origin (see cp_http_origin_limit). Calls wait here after
 * their own limiter let them through, holding its slot, oldest first. */
struct origin_gate {
  cp_http *h;
  char *key; /* scheme://host:port */
  cp_limiter lim; /* a rate only; base_rate 0 = none */
  double paused_until; /* now_s(): no request goes out before */
  cp_http_call *head, *tail;
  uv_timer_t timer; /* armed while the head must wait */
  origin_gate *next;
};

struct cp_http_cred {
  int refs;
  char *name;  /* header name */
  char *value; /* NULL: none now */
  double expires_at; /* 0: none */
  unsigned gen;
  int proven; /* an answer other than 401 came to gen */
  char *failed; /* why, once failed for good */
};

struct cp_http_limiter {
  cp_limiter lim;
  int refs;
  cp_http_call *head, *tail; /* calls waiting for a slot, oldest first */
  size_t waiting;
};

typedef enum call_state {
  ST_NEW,     /* configured, not started */
  ST_QUEUED,  /* in its limiter's queue (the head may have its timer armed) */
  ST_ORIGIN,  /* holds its limiter slot; in its origin's queue */
  ST_READY,   /* cleared to go; waits for the check phase (h->ready_*) */
  ST_ACTIVE,  /* in the multi handle */
  ST_BACKOFF, /* timer armed until the next attempt */
  ST_FAILING, /* timer armed (0 ms) to report an error found before sending */
  ST_CLOSED   /* finished or cancelled; timer closing */
} call_state;

typedef struct hdr_off {
  size_t name, value; /* offsets into hdr_arena */
} hdr_off;

struct cp_http_call {
  cp_http *h;
  CURL *easy;
  char *method;
  char *where; /* scheme://host[:port]/path, for messages */
  struct curl_slist *headers; /* as given; sent on every attempt */
  struct curl_slist *sent_headers; /* this attempt's: headers + credential */
  origin_gate *origin;
  cp_http_cred *cred;
  unsigned cred_gen;  /* what this attempt carries */
  int cred_missing;   /* ST_FAILING: the credential had no value */
  int prereq_refused; /* the gate closed between start and the wire */
  int prereq_waited;  /* refused once for answers not yet read */
  char *body;
  size_t body_len;
  size_t body_off;   /* how much of body this attempt has handed to libcurl */
  int resend_refused; /* libcurl wanted to send the body again; we said no */
  curl_mime *mime;
  double total, attempt_limit, connect; /* seconds, 0 for none */
  /* now_s() by which the call ends (see cp_http_call_timeouts): set at its
   * first attempt, moved on by the time it then spends queued again. */
  double deadline;
  double queued_at; /* now_s() it went back to a queue once sent; or 0 */
  double attempt_start, attempt_secs; /* this attempt's, for its timeout */
  int deadline_cut; /* what limits this attempt is the deadline */
  int resolve_failures;
  char note[160]; /* why the retries stopped early, for the message */
  char *ca_file;
  int insecure;
  cp_retry_policy retry;
  int idempotent;
  cp_http_limiter *lim;
  int holds_slot;
  cp_http_call *qprev, *qnext; /* limiter or origin queue */
  cp_http_call *prev, *next;   /* h->calls */
  uv_timer_t timer;
  call_state st;

  /* the answer being received */
  cp_buf resp;
  cp_buf hdr_arena;
  hdr_off *hdrs;
  size_t n_hdrs, cap_hdrs;
  char reason[64];

  int attempts;
  int too_big; /* the answer went over MAX_ANSWER */
  int oom;     /* memory ran out preparing the call or holding its answer */
  uint64_t started; /* uv_hrtime at start */
  cp_http_kind fail_kind;
  char *fail_msg;
  cp_http_done_fn done;
  void *data;
  char errbuf[CURL_ERROR_SIZE];
};

const char *cp_http_kind_name(cp_http_kind k) {
  switch (k) {
  case CP_HTTP_OK: return "ok";
  case CP_HTTP_STATUS: return "http";
  case CP_HTTP_RESOLVE: return "resolve";
  case CP_HTTP_CONNECT: return "connect";
  case CP_HTTP_TLS: return "tls";
  case CP_HTTP_TIMEOUT: return "timeout";
  case CP_HTTP_NETWORK: return "network";
  case CP_HTTP_IO: return "io";
  case CP_HTTP_USAGE: return "usage";
  case CP_HTTP_AUTH: return "auth";
  case CP_HTTP_MEMORY: return "memory";
  case CP_HTTP_CONFIG: return "config";
  }
  return "http";
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

double cp_http_now(void) { return now_s(); }

static double draw(cp_http *h) {
  unsigned long long x = h->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  h->rng = x;
  return (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
}

static void handle_opened(cp_http *h) {
  h->open_handles++;
  if (h->rt) cp_runtime_handle_inc(h->rt);
}

static void maybe_release_client(cp_http *h) {
  if (h->freeing && h->open_handles == 0) free(h);
}

static void handle_closed(cp_http *h) {
  h->open_handles--;
  if (h->rt) cp_runtime_handle_dec(h->rt);
  maybe_release_client(h);
}

static void drain(cp_http *h);

/* ---- the loop side: sockets and libcurl's timer --------------------------- */

static void on_poll_closed(uv_handle_t *handle) {
  sock_ctx *s = handle->data;
  cp_http *h = s->h;
  free(s);
  handle_closed(h);
}

static void close_sock(sock_ctx *s) {
  if (s->closing) return;
  s->closing = 1;
  if (s->prev) s->prev->next = s->next;
  else s->h->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_poll_closed);
}

static void read_arrived(cp_http *h);

static void on_poll(uv_poll_t *p, int status, int events) {
  sock_ctx *s = p->data;
  cp_http *h = s->h;
  /* A writable socket is a connection ready for its request: answers that
   * came in meanwhile are read first (a callback before this one may have
   * run Lua for a while), so that a Retry-After among them holds it. */
  if (status >= 0 && (events & UV_WRITABLE)) {
    read_arrived(h);
    if (s->closing || !h->multi) return;
  }
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  /* s may be closed by libcurl's socket callback during this call; its
   * memory lives until the close callback, and is not touched after. */
  curl_multi_socket_action(h->multi, s->fd, flags, &running);
  drain(h);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  (void)easy;
  cp_http *h = userp;
  sock_ctx *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      if (!h->freeing) curl_multi_assign(h->multi, fd, NULL);
      close_sock(s);
    }
    return 0;
  }
  if (!s) {
    s = cp_calloc(1, sizeof *s); /* owned by the poll; freed in on_poll_closed */
    if (!s) return -1; /* libcurl fails the transfers on this socket */
    s->fd = fd;
    s->h = h;
    if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    handle_opened(h);
    s->next = h->socks;
    if (h->socks) h->socks->prev = s;
    h->socks = s;
    curl_multi_assign(h->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static void on_curl_timeout(uv_timer_t *t) {
  cp_http *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain(h);
}

/* libcurl asks for a (re)armed one-shot timer. Must not call into libcurl. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  cp_http *h = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&h->timer);
  } else {
    /* 0 means "as soon as possible"; libuv 1.44 would run a 0 ms timer
     * started from a timer callback within the same pass, and libcurl can
     * ask for 0 again from there, so the shortest wait is 1 ms. */
    uv_timer_start(&h->timer, on_curl_timeout,
                   (uint64_t)(timeout_ms == 0 ? 1 : timeout_ms), 0);
  }
  return 0;
}

/* ---- libcurl ------------------------------------------------------------------ */

/* 7.85.0 brought CURLOPT_PROTOCOLS_STR, which keeps requests to http and
 * https; every other option used here is older. cmake/deps.cmake asks for
 * the same version at configure time; curl_ready asks the libcurl a
 * process runs with, which a package manager may have left older. */
#define CURL_NEEDED 0x075500
#define CURL_NEEDED_TEXT "7.85.0"
#if LIBCURL_VERSION_NUM < CURL_NEEDED
#error "cogpipe needs libcurl 7.85.0 or later (CURLOPT_PROTOCOLS_STR)"
#endif

/* libcurl's global initialisation, once per process, when the first
 * client is made, so that a command that never goes on the network does
 * not pay for it (it sets up the TLS library). A failure is tried again by
 * the next client: it may have been memory, counted as such. */
static int curl_ready(char *err, size_t errlen) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static atomic_int ready;
  if (atomic_load(&ready)) return 0;
  pthread_mutex_lock(&lock);
  CURLcode rc = CURLE_OK;
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  if (v->version_num < CURL_NEEDED) {
    snprintf(err, errlen,
             "libcurl %s is too old: cogpipe needs " CURL_NEEDED_TEXT
             " or later",
             v->version);
    rc = CURLE_NOT_BUILT_IN;
  } else if (!atomic_load(&ready)) {
    /* thread-safe from 7.84 on, and under the lock anyway */
    rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc == CURLE_OK) {
      atomic_store(&ready, 1);
    } else {
      if (rc == CURLE_OUT_OF_MEMORY) cp_alloc_note_failure();
      snprintf(err, errlen, "libcurl initialisation failed: %s",
               curl_easy_strerror(rc));
    }
  }
  pthread_mutex_unlock(&lock);
  return rc == CURLE_OK ? 0 : -1;
}

/* Each option a call needs is checked: a request sent without one of them
 * is not the request that was asked for (without CURLOPT_PROTOCOLS_STR a
 * URL could open file://). Memory is the usual reason for a refusal; any
 * other is a libcurl built without something or older than its headers,
 * and the call fails with kind config, naming the option. Returns 0 when
 * the option is set, else -1 with the reason recorded in c. */
static int option_set(cp_http_call *c, const char *name, CURLcode rc) {
  if (rc == CURLE_OK) return 0;
  if (rc == CURLE_OUT_OF_MEMORY) {
    c->oom = 1;
    return -1;
  }
  char msg[256];
  snprintf(msg, sizeof msg, "libcurl %s refused %s: %s",
           curl_version_info(CURLVERSION_NOW)->version, name,
           curl_easy_strerror(rc));
  cp_http_call_fail(c, CP_HTTP_CONFIG, msg);
  return -1;
}

/* curl_easy_setopt on c's handle, checked by option_set. A macro rather
 * than a function: the options take values of different types, and
 * libcurl's own compile-time checks of those types see only direct
 * calls. */
#define SETOPT(c, opt, val)                                                    \
  option_set((c), #opt, curl_easy_setopt((c)->easy, opt, val))

/* ---- the client ------------------------------------------------------------- */

/* curl_multi_setopt on h's handle: 0, or -1 with the reason in err. */
static int multi_option(CURLMcode rc, const char *name, char *err,
                        size_t errlen) {
  if (rc == CURLM_OK) return 0;
  if (rc == CURLM_OUT_OF_MEMORY) cp_alloc_note_failure();
  snprintf(err, errlen, "libcurl %s refused %s: %s",
           curl_version_info(CURLVERSION_NOW)->version, name,
           curl_multi_strerror(rc));
  return -1;
}
#define MULTI_SETOPT(h, opt, val, err, errlen)                                 \
  multi_option(curl_multi_setopt((h)->multi, opt, val), #opt, err, errlen)

cp_http *cp_http_new(uv_loop_t *loop, cp_runtime *rt, char *err,
                     size_t errlen) {
  /* cp_http_free does not undo the global initialisation, since other
   * clients may share it. */
  if (curl_ready(err, errlen)) return NULL;
  cp_http *h = cp_calloc(1, sizeof *h); /* the caller's: cp_http_free */
  if (!h) {
    snprintf(err, errlen, "out of memory while creating the HTTP client");
    return NULL;
  }
  h->loop = loop;
  h->rt = rt;
  h->close_hook = -1;
  h->rng = (unsigned long long)uv_hrtime() ^ (unsigned long long)(uintptr_t)h;
  if (h->rng == 0) h->rng = 0x9e3779b97f4a7c15ULL;
  h->multi = curl_multi_init();
  if (!h->multi) { /* libcurl's only reason is memory */
    cp_alloc_note_failure();
    snprintf(err, errlen, "out of memory while creating the HTTP client");
    free(h);
    return NULL;
  }
  if (MULTI_SETOPT(h, CURLMOPT_SOCKETFUNCTION, on_socket, err, errlen) ||
      MULTI_SETOPT(h, CURLMOPT_SOCKETDATA, h, err, errlen) ||
      MULTI_SETOPT(h, CURLMOPT_TIMERFUNCTION, on_timer, err, errlen) ||
      MULTI_SETOPT(h, CURLMOPT_TIMERDATA, h, err, errlen) ||
      /* Many requests to one host share one HTTP/2 connection when offered. */
      MULTI_SETOPT(h, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX, err,
                   errlen)) {
    curl_multi_cleanup(h->multi);
    free(h);
    return NULL;
  }
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  handle_opened(h);
  uv_check_init(loop, &h->check);
  h->check.data = h;
  handle_opened(h);
  uv_idle_init(loop, &h->idle);
  h->idle.data = h;
  handle_opened(h);
  return h;
}

static void on_client_timer_closed(uv_handle_t *t) { handle_closed(t->data); }


static void on_origin_closed(uv_handle_t *t) {
  origin_gate *o = t->data;
  cp_http *h = o->h;
  free(o->key);
  free(o);
  handle_closed(h);
}

void cp_http_free(cp_http *h) {
  if (!h || h->freeing) return;
  h->freeing = 1;
  while (h->calls) cp_http_call_cancel(h->calls);
  /* Closing the connections may call on_socket with REMOVE; it closes the
   * polls and skips curl_multi_assign, which a dying multi refuses. */
  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  while (h->socks) close_sock(h->socks);
  while (h->origins) {
    origin_gate *o = h->origins;
    h->origins = o->next;
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, on_origin_closed);
  }
  uv_timer_stop(&h->timer);
  uv_close((uv_handle_t *)&h->timer, on_client_timer_closed);
  uv_check_stop(&h->check);
  uv_close((uv_handle_t *)&h->check, on_client_timer_closed);
  uv_idle_stop(&h->idle);
  uv_close((uv_handle_t *)&h->idle, on_client_timer_closed);
}

#define CLIENT_KEY "cogpipe.http.client"

static int forget_client(lua_State *L) {
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, CLIENT_KEY);
  return 0;
}

static void client_close_hook(void *data) {
  cp_http *h = data;
  /* at shutdown, outside any Lua call: protected */
  cp_lua_protect(cp_runtime_main_lua(h->rt), forget_client, NULL, 0);
  h->close_hook = -1;
  cp_http_free(h);
}

cp_http *cp_http_of(lua_State *L, char *err, size_t errlen) {
  /* The client is found through the runtime's registry, which every
   * coroutine shares. Anything that can raise comes before the client is
   * made, so a raise cannot leave one unfreed. */
  cp_runtime *rt = cp_runtime_from_lua(L);
  lua_getfield(L, LUA_REGISTRYINDEX, CLIENT_KEY);
  cp_http *h = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (h) return h;
  lua_pushboolean(L, 1); /* makes the registry's slot for the key */
  lua_setfield(L, LUA_REGISTRYINDEX, CLIENT_KEY);
  h = cp_http_new(cp_runtime_loop(rt), rt, err, errlen);
  int hook = h ? cp_runtime_on_close(rt, client_close_hook, h) : -1;
  if (h && hook < 0) {
    snprintf(err, errlen, "out of memory while creating the HTTP client");
    cp_http_free(h); /* its handles close with the loop's next turn */
    h = NULL;
  }
  if (!h) {
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, CLIENT_KEY);
    return NULL;
  }
  h->close_hook = hook;
  lua_pushlightuserdata(L, h); /* the slot exists: allocates nothing */
  lua_setfield(L, LUA_REGISTRYINDEX, CLIENT_KEY);
  return h;
}

/* ---- limiters ----------------------------------------------------------------- */

cp_http_limiter *cp_http_limiter_new(double rate, double burst,
                                     int max_in_flight) {
  cp_http_limiter *l = cp_calloc(1, sizeof *l); /* freed by the last unref */
  if (!l) return NULL;
  cp_limiter_init(&l->lim, rate, burst, max_in_flight, now_s());
  l->refs = 1;
  return l;
}

void cp_http_limiter_unref(cp_http_limiter *l) {
  if (l && --l->refs == 0) free(l);
}

const cp_limiter *cp_http_limiter_state(const cp_http_limiter *l) {
  return &l->lim;
}

size_t cp_http_limiter_waiting(const cp_http_limiter *l) { return l->waiting; }

static void enqueue(cp_http_limiter *l, cp_http_call *c) {
  c->qnext = NULL;
  c->qprev = l->tail;
  if (l->tail) l->tail->qnext = c;
  else l->head = c;
  l->tail = c;
  l->waiting++;
}

static void dequeue(cp_http_limiter *l, cp_http_call *c) {
  if (c->qprev) c->qprev->qnext = c->qnext;
  else l->head = c->qnext;
  if (c->qnext) c->qnext->qprev = c->qprev;
  else l->tail = c->qprev;
  c->qprev = c->qnext = NULL;
  l->waiting--;
}

static void send_attempt(cp_http_call *c);
static void on_call_timer(uv_timer_t *t);
static void on_check(uv_check_t *ch);
static void on_idle(uv_idle_t *id);
static void unready(cp_http_call *c);

static uint64_t to_ms(double s) {
  if (s <= 0) return 0;
  if (s > 1e9) s = 1e9;
  return (uint64_t)ceil(s * 1000.0);
}

static void to_origin(cp_http_call *c);

/* Lets waiting calls through while the limiter allows; the oldest one that
 * must wait for tokens sleeps on its own timer, the others behind it. */
static void pump(cp_http_limiter *l) {
  while (l->head && !l->head->h->freeing) {
    cp_http_call *c = l->head;
    double wait = cp_limiter_take(&l->lim, now_s());
    if (wait == 0) {
      dequeue(l, c);
      uv_timer_stop(&c->timer);
      c->holds_slot = 1;
      to_origin(c);
      continue;
    }
    if (wait > 0) {
      /* The loop's cached time may be behind; the wait counts from now. */
      uv_update_time(c->h->loop);
      uv_timer_start(&c->timer, on_call_timer, to_ms(wait), 0);
    }
    return;
  }
}

static void release_slot(cp_http_call *c) {
  if (!c->holds_slot) return;
  c->holds_slot = 0;
  cp_limiter_release(&c->lim->lim);
  pump(c->lim);
}

/* ---- origins ---------------------------------------------------------------- */

/* "scheme://host:port" of url, lower case, the port made explicit: what the
 * platform counts a client's requests by. malloc'd; NULL when unparsable or
 * out of memory (*oom then set). */
static char *origin_key(const char *url, int *oom) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL, *key = NULL;
  *oom = !u;
  if (u &&
      curl_url_set(u, CURLUPART_URL, url,
                      CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) ==
          CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
          CURLUE_OK) {
    cp_buf b = CP_BUF_INIT;
    cp_buf_printf(&b, "%s://%s:%s", scheme, host, port);
    key = cp_buf_steal(&b, NULL);
    *oom = !key;
    for (char *k = key; k && *k; k++) *k = (char)tolower((unsigned char)*k);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return key;
}

static void on_origin_timer(uv_timer_t *t);

/* The gate of url's origin, made on first use; NULL for a URL that does not
 * parse (libcurl will refuse it anyway), or when out of memory (*oom set). */
static origin_gate *origin_of(cp_http *h, const char *url, int *oom) {
  char *key = origin_key(url, oom);
  if (!key) return NULL;
  for (origin_gate *o = h->origins; o; o = o->next)
    if (strcmp(o->key, key) == 0) {
      free(key);
      return o;
    }
  origin_gate *o = cp_calloc(1, sizeof *o); /* the client's; freed by cp_http_free */
  if (!o) {
    free(key);
    *oom = 1;
    return NULL;
  }
  o->h = h;
  o->key = key;
  cp_limiter_init(&o->lim, 0, 1, 0, now_s());
  uv_timer_init(h->loop, &o->timer);
  o->timer.data = o;
  handle_opened(h);
  o->next = h->origins;
  h->origins = o;
  return o;
}

int cp_http_origin_limit(cp_http *h, const char *url, double rate,
                         double burst) {
  int oom;
  origin_gate *o = origin_of(h, url, &oom);
  if (!o) return oom ? -2 : -1;
  if (rate > 0 && (o->lim.base_rate == 0 || rate < o->lim.base_rate)) {
    double b = burst >= 1 ? burst : 1;
    if (o->lim.base_rate > 0 && o->lim.burst < b) b = o->lim.burst;
    cp_limiter_init(&o->lim, rate, b, 0, now_s());
  }
  return 0;
}

double cp_http_origin_paused(cp_http *h, const char *url) {
  int oom;
  char *key = origin_key(url, &oom);
  if (!key && oom) return -1;
  double left = 0;
  for (origin_gate *o = h->origins; key && o; o = o->next)
    if (strcmp(o->key, key) == 0 && o->paused_until > now_s())
      left = o->paused_until - now_s();
  free(key);
  return left;
}

static void origin_enqueue(origin_gate *o, cp_http_call *c) {
  c->qnext = NULL;
  c->qprev = o->tail;
  if (o->tail) o->tail->qnext = c;
  else o->head = c;
  o->tail = c;
  c->st = ST_ORIGIN;
}

static void origin_dequeue(origin_gate *o, cp_http_call *c) {
  if (c->qprev) c->qprev->qnext = c->qnext;
  else o->head = c->qnext;
  if (c->qnext) c->qnext->qprev = c->qprev;
  else o->tail = c->qprev;
  c->qprev = c->qnext = NULL;
}

static void fail_soon(cp_http_call *c, cp_http_kind kind, const char *msg);

/* Sends what the gate lets through, oldest first: nothing while it is
 * closed, and no faster than its rate. */
static void origin_pump(origin_gate *o) {
  while (o->head && !o->h->freeing) {
    cp_http_call *c = o->head;
    double now = now_s(), wait = o->paused_until - now;
    if (wait > 0 && wait > c->retry.max_wait) {
      char msg[160];
      snprintf(msg, sizeof msg,
               "the server asks every request to wait %.0f s, more than "
               "max_wait %.0f s",
               wait, c->retry.max_wait);
      origin_dequeue(o, c);
      fail_soon(c, CP_HTTP_STATUS, msg);
      continue;
    }
    if (wait <= 0 && o->lim.base_rate > 0) wait = cp_limiter_take(&o->lim, now);
    if (wait > 0) {
      uv_update_time(o->h->loop);
      /* ms are truncated on the loop's clock: a few more keep "not before" */
      uv_timer_start(&o->timer, on_origin_timer, to_ms(wait) + 2, 0);
      return;
    }
    if (o->lim.base_rate > 0) cp_limiter_release(&o->lim); /* rate only */
    origin_dequeue(o, c);
    send_attempt(c);
  }
}

static void on_origin_timer(uv_timer_t *t) { origin_pump(t->data); }

/* A call its limiter let through goes on the wire when its origin allows. */
static void to_origin(cp_http_call *c) {
  origin_gate *o = c->origin;
  if (!o) {
    send_attempt(c);
    return;
  }
  origin_enqueue(o, c);
  if (o->head == c) origin_pump(o);
}

/* The server said when this client may come back: every request to the
 * origin waits until then. */
static void origin_pause(origin_gate *o, double seconds) {
  double until = now_s() + seconds;
  if (until <= o->paused_until) return;
  o->paused_until = until;
  if (o->head) {
    uv_timer_stop(&o->timer);
    origin_pump(o);
  }
}

/* Whether an answer has arrived on one of libcurl's sockets and not been
 * read yet. */
static int answers_waiting(cp_http *h) {
  struct pollfd fds[64];
  nfds_t n = 0;
  for (sock_ctx *k = h->socks; k && n < 64; k = k->next)
    if (!k->closing) fds[n++] = (struct pollfd){k->fd, POLLIN, 0};
  return n > 0 && poll(fds, n, 0) > 0;
}

/* Called by libcurl once the connection is ready, just before the request
 * goes out: the gate may have closed since the call was handed over. */
static int on_prereq(void *arg, char *ip, char *local_ip, int port,
                     int local_port) {
  (void)ip;
  (void)local_ip;
  (void)port;
  (void)local_port;
  cp_http_call *c = arg;
  if (c->origin && c->origin->paused_until > now_s()) {
    c->prereq_refused = 1;
    return CURL_PREREQFUNC_ABORT;
  }
  /* An answer waiting unread on another connection may be a 429: this call
   * goes back to the gate once, to be sent after it is read. */
  if (c->origin && !c->prereq_waited && answers_waiting(c->h)) {
    c->prereq_waited = 1;
    c->prereq_refused = 1;
    return CURL_PREREQFUNC_ABORT;
  }
  return CURL_PREREQFUNC_OK;
}

/* ---- credentials ------------------------------------------------------------ */

static void wipe(char *s) {
  if (!s) return;
  volatile char *v = s;
  while (*v) *v++ = 0;
}

cp_http_cred *cp_http_cred_new(const char *header) {
  cp_http_cred *cr = cp_calloc(1, sizeof *cr); /* freed by the last unref */
  char *name = cp_strdup(header);
  if (!cr || !name) {
    free(cr);
    free(name);
    return NULL;
  }
  cr->refs = 1;
  cr->name = name;
  return cr;
}

/* Why a credential failed, when even that could not be copied. */
static char failed_nomem[] = "the credential failed (out of memory)";

void cp_http_cred_unref(cp_http_cred *cr) {
  if (!cr || --cr->refs > 0) return;
  wipe(cr->value);
  free(cr->value);
  free(cr->name);
  if (cr->failed != failed_nomem) free(cr->failed);
  free(cr);
}

int cp_http_cred_set(cp_http_cred *cr, const char *value, double expires_at) {
  char *v = cp_strdup(value);
  if (!v) return -1;
  wipe(cr->value);
  free(cr->value);
  cr->value = v;
  cr->expires_at = expires_at;
  cr->gen++;
  cr->proven = 0;
  return 0;
}

void cp_http_cred_invalidate(cp_http_cred *cr, unsigned gen) {
  if (gen != cr->gen || !cr->value) return;
  wipe(cr->value);
  free(cr->value);
  cr->value = NULL;
}

static int cred_usable(const cp_http_cred *cr) {
  return cr->value && !cr->failed &&
         (cr->expires_at <= 0 || now_s() < cr->expires_at);
}

void cp_http_cred_get(const cp_http_cred *cr, cp_http_cred_state *out) {
  out->gen = cr->gen;
  out->has_value = cr->value && (cr->expires_at <= 0 || now_s() < cr->expires_at);
  out->proven = cr->proven;
  out->failed = cr->failed != NULL;
}

/* Takes c out of whichever queue holds it, so it can complete now. */
static void unqueue(cp_http_call *c) {
  if (c->st == ST_QUEUED) {
    int was_head = c->lim->head == c;
    dequeue(c->lim, c);
    if (was_head) pump(c->lim);
  } else if (c->st == ST_ORIGIN) {
    origin_gate *o = c->origin;
    int was_head = o->head == c;
    origin_dequeue(o, c);
    if (was_head) {
      uv_timer_stop(&o->timer);
      origin_pump(o);
    }
  }
  uv_timer_stop(&c->timer);
}

void cp_http_cred_fail(cp_http *h, cp_http_cred *cr, const char *msg) {
  if (!cr->failed) cr->failed = cp_strdup(msg);
  if (!cr->failed) cr->failed = failed_nomem;
  wipe(cr->value);
  free(cr->value);
  cr->value = NULL;
  /* Calls not on the wire stop now rather than each at its turn. */
  for (cp_http_call *c = h ? h->calls : NULL, *next; c; c = next) {
    next = c->next;
    if (c->cred != cr) continue;
    if (c->st == ST_QUEUED || c->st == ST_ORIGIN || c->st == ST_BACKOFF ||
        c->st == ST_READY) {
      if (c->st == ST_READY) unready(c);
      unqueue(c);
      if (c->holds_slot) release_slot(c);
      fail_soon(c, CP_HTTP_AUTH, cr->failed);
      next = h->calls; /* the queues may have moved; start over */
    }
  }
}


/* ---- calls ---------------------------------------------------------------------- */

/* Answers are held in memory; nothing the platform sends comes near this,
 * and a runaway server must not take the process down with it. */
#define MAX_ANSWER ((size_t)256 << 20)

static size_t on_body(char *p, size_t size, size_t n, void *userp) {
  cp_http_call *c = userp;
  if (c->resp.len + size * n > MAX_ANSWER) {
    c->too_big = 1;
    return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
  }
  cp_buf_add(&c->resp, p, size * n);
  if (!cp_buf_ok(&c->resp)) {
    c->oom = 1;
    return 0;
  }
  return size * n;
}

static void reset_answer(cp_http_call *c) {
  c->too_big = 0;
  cp_buf_reset(&c->resp);
  cp_buf_reset(&c->hdr_arena);
  c->n_hdrs = 0;
  c->reason[0] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *userp) {
  cp_http_call *c = userp;
  cp_header_line h;
  cp_header_line_parse(p, size * n, &h);
  if (h.kind == CP_HEADER_STATUS) {
    /* A new answer (after a 100 Continue, or the next attempt): start over. */
    reset_answer(c);
    size_t rl = h.value_len < sizeof c->reason ? h.value_len : sizeof c->reason - 1;
    memcpy(c->reason, h.value, rl);
    c->reason[rl] = '\0';
    return size * n;
  }
  if (h.kind != CP_HEADER_FIELD) return size * n;
  if (c->n_hdrs == c->cap_hdrs) {
    size_t cap = c->cap_hdrs ? c->cap_hdrs * 2 : 16;
    hdr_off *hdrs = cp_reallocarray(c->hdrs, cap, sizeof *hdrs);
    if (!hdrs) {
      c->oom = 1;
      return 0; /* libcurl ends the transfer */
    }
    c->hdrs = hdrs;
    c->cap_hdrs = cap;
  }
  hdr_off *o = &c->hdrs[c->n_hdrs++];
  o->name = c->hdr_arena.len;
  for (size_t i = 0; i < h.name_len; i++)
    cp_buf_addc(&c->hdr_arena, (char)tolower((unsigned char)h.name[i]));
  cp_buf_addc(&c->hdr_arena, '\0');
  o->value = c->hdr_arena.len;
  cp_buf_add(&c->hdr_arena, h.value, h.value_len);
  cp_buf_addc(&c->hdr_arena, '\0');
  if (!cp_buf_ok(&c->hdr_arena)) {
    c->oom = 1;
    return 0;
  }
  return size * n;
}

static const char *find_header(cp_http_call *c, const char *name) {
  for (size_t i = c->n_hdrs; i-- > 0;)
    if (strcmp(c->hdr_arena.data + c->hdrs[i].name, name) == 0)
      return c->hdr_arena.data + c->hdrs[i].value;
  return NULL;
}

/* scheme://host[:port]/path of url, without user info or query, which may
 * hold credentials. Returns a malloc'd string the caller owns; NULL when
 * out of memory. */
static char *describe_url(const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
  cp_buf b = CP_BUF_INIT;
  if (u &&
      curl_url_set(u, CURLUPART_URL, url,
                   CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    cp_buf_printf(&b, "%s://%s%s%s%s", scheme, host, port ? ":" : "",
                  port ? port : "", path ? path : "/");
  } else {
    cp_buf_adds(&b, "(invalid URL)");
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(path);
  curl_url_cleanup(u);
  return cp_buf_steal(&b, NULL);
}

cp_http_call *cp_http_call_new(cp_http *h, const char *method,
                               const char *url) {
  /* Everything is made before the call is linked anywhere, so a failure
   * only has to free. */
  cp_http_call *c = cp_calloc(1, sizeof *c); /* freed in on_call_closed */
  if (!c) return NULL;
  int oom = 0;
  c->h = h;
  c->easy = curl_easy_init(); /* NULL only for want of memory */
  c->method = cp_strdup(method);
  c->where = describe_url(url);
  c->origin = c->easy && c->method && c->where ? origin_of(h, url, &oom) : NULL;
  if (!c->easy || !c->method || !c->where || oom) {
    if (c->easy) curl_easy_cleanup(c->easy);
    free(c->method);
    free(c->where);
    free(c);
    return NULL;
  }
  for (char *m = c->method; *m; m++) *m = (char)toupper((unsigned char)*m);
  cp_retry_policy_default(&c->retry);
  uv_timer_init(h->loop, &c->timer);
  c->timer.data = c;
  handle_opened(h);
  c->next = h->calls;
  if (h->calls) h->calls->prev = c;
  h->calls = c;

  /* libcurl copies the URL: that can fail only for want of memory */
  SETOPT(c, CURLOPT_URL, url);
  SETOPT(c, CURLOPT_PRIVATE, c);
  SETOPT(c, CURLOPT_NOSIGNAL, 1L);
  SETOPT(c, CURLOPT_ERRORBUFFER, c->errbuf);
  SETOPT(c, CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(c, CURLOPT_WRITEDATA, c);
  SETOPT(c, CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(c, CURLOPT_HEADERDATA, c);
  SETOPT(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* Over TLS, wait for a multiplexed HTTP/2 connection rather than open
   * more: ALPN says within the handshake whether there will be one. Over
   * plain HTTP there never is, and waiting would mean waiting for the first
   * answer on the first connection -- past the timeout of every request
   * behind it when that answer is slow, so that they fail unsent. */
  if (c->origin && strncmp(c->origin->key, "https:", 6) == 0)
    SETOPT(c, CURLOPT_PIPEWAIT, 1L);
  /* The last look at the origin's gate before the request leaves. */
  SETOPT(c, CURLOPT_PREREQFUNCTION, on_prereq);
  SETOPT(c, CURLOPT_PREREQDATA, c);
  SETOPT(c, CURLOPT_ACCEPT_ENCODING, "");
  /* Only the web: a URL read from a tenant file must not open file:// or
   * other protocols libcurl knows. */
  SETOPT(c, CURLOPT_PROTOCOLS_STR, "http,https");
  /* A URL without a scheme must not send credentials in the clear. */
  SETOPT(c, CURLOPT_DEFAULT_PROTOCOL, "https");
  /* libcurl reads http_proxy, https_proxy and no_proxy by itself as long as
   * CURLOPT_PROXY stays unset, which it does. */
  return c;
}

void cp_http_call_nomem(cp_http_call *c) { c->oom = 1; }

void cp_http_call_header(cp_http_call *c, const char *line) {
  struct curl_slist *n = curl_slist_append(c->headers, line);
  if (!n) c->oom = 1; /* the list is as it was */
  else c->headers = n;
}

void cp_http_call_body(cp_http_call *c, char *body, size_t len) {
  free(c->body);
  c->body = body;
  c->body_len = len;
}

curl_mime *cp_http_call_mime(cp_http_call *c) {
  if (!c->mime) c->mime = curl_mime_init(c->easy);
  if (!c->mime) c->oom = 1;
  return c->mime;
}

void cp_http_call_timeouts(cp_http_call *c, double total, double attempt,
                           double connect) {
  c->total = total > 0 ? total : 0;
  c->attempt_limit = attempt > 0 ? attempt : 0;
  c->connect = connect;
}

void cp_http_call_tls(cp_http_call *c, const char *ca_file, int insecure) {
  free(c->ca_file);
  c->ca_file = ca_file ? cp_strdup(ca_file) : NULL;
  if (ca_file && !c->ca_file) c->oom = 1;
  c->insecure = insecure;
}

void cp_http_call_retry(cp_http_call *c, const cp_retry_policy *p) {
  c->retry = *p;
  if (c->retry.tries < 1) c->retry.tries = 1;
}

void cp_http_call_limiter(cp_http_call *c, cp_http_limiter *l) {
  if (l) l->refs++;
  if (c->lim) cp_http_limiter_unref(c->lim);
  c->lim = l;
}

void cp_http_call_cred(cp_http_call *c, cp_http_cred *cr) {
  if (cr) cr->refs++;
  cp_http_cred_unref(c->cred);
  c->cred = cr;
}

void cp_http_call_fail(cp_http_call *c, cp_http_kind kind, const char *msg) {
  if (c->fail_msg) return; /* the first problem is the one to report */
  c->fail_kind = kind;
  c->fail_msg = cp_strdup(msg);
  if (!c->fail_msg) c->oom = 1;
}

/* Bodies of non-idempotent requests go through these two callbacks instead
 * of CURLOPT_POSTFIELDS. libcurl (before 8.16's FORBID_RETRY_ON_REUSE)
 * silently sends a request again on a fresh connection when a reused one
 * is reset before any answer -- even after the whole body went out and the
 * server may have acted on it. Such a resend must rewind the body first, so
 * refusing the rewind turns it into an error the retry policy sees as an
 * outcome unknown, which is what it is. */
static size_t body_read(char *buf, size_t size, size_t n, void *arg) {
  cp_http_call *c = arg;
  size_t want = size * n, left = c->body_len - c->body_off;
  if (want > left) want = left;
  if (want) memcpy(buf, c->body + c->body_off, want);
  c->body_off += want;
  return want;
}

static int body_seek(void *arg, curl_off_t offset, int origin) {
  cp_http_call *c = arg;
  if (origin != SEEK_SET || offset != 0) return CURL_SEEKFUNC_CANTSEEK;
  if (c->body_off == 0) return CURL_SEEKFUNC_OK; /* nothing sent yet */
  c->resend_refused = 1;
  return CURL_SEEKFUNC_FAIL;
}

static void apply_options(cp_http_call *c) {
  c->idempotent = c->retry.idempotent >= 0
                      ? c->retry.idempotent
                      : cp_retry_method_idempotent(c->method);
  int is_post = strcmp(c->method, "POST") == 0;
  if (strcmp(c->method, "HEAD") == 0) {
    SETOPT(c, CURLOPT_NOBODY, 1L);
  } else if (!is_post && strcmp(c->method, "GET") != 0) {
    SETOPT(c, CURLOPT_CUSTOMREQUEST, c->method);
  }
  if (c->mime) {
    SETOPT(c, CURLOPT_MIMEPOST, c->mime);
    if (strcmp(c->method, "GET") == 0)
      SETOPT(c, CURLOPT_CUSTOMREQUEST, "GET");
  } else if (c->body || is_post) {
    /* c->body stays owned by the call and alive until the easy handle is. */
    SETOPT(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    if (c->body_len > 0 && !c->idempotent) {
      SETOPT(c, CURLOPT_POST, 1L);
      SETOPT(c, CURLOPT_READFUNCTION, body_read);
      SETOPT(c, CURLOPT_READDATA, c);
      SETOPT(c, CURLOPT_SEEKFUNCTION, body_seek);
      SETOPT(c, CURLOPT_SEEKDATA, c);
      /* a read-callback body would otherwise wait for 100 Continue */
      struct curl_slist *n = curl_slist_append(c->headers, "Expect:");
      if (!n) c->oom = 1;
      else c->headers = n;
    } else {
      SETOPT(c, CURLOPT_POSTFIELDS, c->body ? c->body : "");
    }
    if (strcmp(c->method, "GET") == 0)
      SETOPT(c, CURLOPT_CUSTOMREQUEST, "GET");
  }
  if (c->connect > 0)
    SETOPT(c, CURLOPT_CONNECTTIMEOUT_MS, (long)to_ms(c->connect));
  if (c->ca_file) SETOPT(c, CURLOPT_CAINFO, c->ca_file);
  if (c->insecure) {
    SETOPT(c, CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(c, CURLOPT_SSL_VERIFYHOST, 0L);
    if (!c->h->warned_insecure) {
      c->h->warned_insecure = 1;
      fprintf(stderr,
              "cogpipe: warning: TLS certificate verification is off "
              "(insecure=true) for %s; anyone on the path can read and "
              "change this traffic\n",
              c->where);
    }
  }
}

void cp_http_call_start(cp_http_call *c, cp_http_done_fn done, void *data) {
  c->done = done;
  c->data = data;
  c->started = uv_hrtime();
  apply_options(c);
  if (c->oom && !c->fail_msg) {
    c->fail_kind = CP_HTTP_MEMORY;
    c->st = ST_FAILING;
    uv_timer_start(&c->timer, on_call_timer, 0, 0);
  } else if (c->fail_msg) {
    /* Reported from the loop: done must never run inside start. */
    c->st = ST_FAILING;
    uv_timer_start(&c->timer, on_call_timer, 0, 0);
  } else if (c->lim) {
    c->st = ST_QUEUED;
    enqueue(c->lim, c);
    pump(c->lim);
  } else {
    to_origin(c);
  }
}

/* Completes c from the loop with an error found before sending; done
 * never runs inside the call that found it. */
static void fail_soon(cp_http_call *c, cp_http_kind kind, const char *msg) {
  free(c->fail_msg);
  c->fail_msg = NULL;
  if (msg) cp_http_call_fail(c, kind, msg);
  c->fail_kind = kind;
  c->st = ST_FAILING;
  uv_timer_start(&c->timer, on_call_timer, 0, 0);
}

static void free_sent_headers(cp_http_call *c) {
  for (struct curl_slist *n = c->sent_headers; n; n = n->next) wipe(n->data);
  curl_slist_free_all(c->sent_headers);
  c->sent_headers = NULL;
}

static int append_sent(cp_http_call *c, const char *line) {
  struct curl_slist *n = curl_slist_append(c->sent_headers, line);
  if (n) c->sent_headers = n;
  return n != NULL;
}

/* Hands libcurl the header list of an attempt: 0, or -1 when it refused
 * (c is then on its way to completing unsent, with option_set's reason). */
static int set_headers(cp_http_call *c, struct curl_slist *list) {
  if (SETOPT(c, CURLOPT_HTTPHEADER, list) == 0) return 0;
  release_slot(c);
  c->st = ST_FAILING;
  uv_timer_start(&c->timer, on_call_timer, 0, 0);
  return -1;
}

/* The headers of this attempt: the call's own and, with a credential, its
 * value of now. Returns 0, or -1 when the credential cannot be used (c is
 * then on its way to completing unsent). */
static int attempt_headers(cp_http_call *c) {
  free_sent_headers(c);
  c->cred_gen = 0;
  if (!c->cred) {
    return set_headers(c, c->headers);
  }
  cp_http_cred *cr = c->cred;
  if (!cred_usable(cr)) {
    release_slot(c);
    c->cred_missing = !cr->failed;
    fail_soon(c, CP_HTTP_AUTH,
              cr->failed ? cr->failed
                         : "the credential has no value now (refresh it and "
                           "send again)");
    return -1;
  }
  int ok = 1;
  for (struct curl_slist *n = c->headers; n && ok; n = n->next)
    ok = append_sent(c, n->data);
  cp_buf line = CP_BUF_INIT;
  cp_buf_printf(&line, "%s: %s", cr->name, cr->value);
  ok = ok && cp_buf_ok(&line) && append_sent(c, line.data);
  if (line.data) wipe(line.data);
  cp_buf_free(&line);
  if (!ok) {
    free_sent_headers(c);
    release_slot(c);
    c->oom = 1;
    fail_soon(c, CP_HTTP_MEMORY, NULL);
    return -1;
  }
  if (set_headers(c, c->sent_headers)) return -1;
  c->cred_gen = cr->gen;
  return 0;
}

/* The time this attempt may take: what is left of the call's time, which
 * starts counting now at the first attempt and does not count the time
 * spent queued since the last one, or the attempt's own limit if that is
 * shorter. 0, or -1 with the call failing (libcurl refused the limit). */
static int attempt_time(cp_http_call *c) {
  double now = now_s(), limit = c->attempt_limit;
  c->deadline_cut = 0;
  if (c->total > 0) {
    if (c->deadline == 0) c->deadline = now + c->total;
    else if (c->queued_at > 0) c->deadline += now - c->queued_at;
    double left = c->deadline - now;
    if (left < 0.001) left = 0.001;
    if (limit <= 0 || left <= limit) {
      limit = left;
      c->deadline_cut = 1;
    }
  }
  c->queued_at = 0;
  c->attempt_start = now;
  c->attempt_secs = limit > 0 ? limit : 0;
  CURLcode rc = curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS,
                                 limit > 0 ? (long)to_ms(limit) : 0L);
  if (rc == CURLE_OK) return 0;
  char msg[256];
  snprintf(msg, sizeof msg, "libcurl %s refused CURLOPT_TIMEOUT_MS: %s",
           curl_version_info(CURLVERSION_NOW)->version, curl_easy_strerror(rc));
  release_slot(c);
  fail_soon(c, rc == CURLE_OUT_OF_MEMORY ? CP_HTTP_MEMORY : CP_HTTP_CONFIG,
            rc == CURLE_OUT_OF_MEMORY ? NULL : msg);
  return -1;
}

/* Hands c to libcurl now: its credential as of this moment, one more
 * attempt. */
static void start_transfer(cp_http_call *c) {
  if (attempt_headers(c) || attempt_time(c)) return;
  reset_answer(c);
  c->errbuf[0] = '\0';
  c->attempts++;
  c->body_off = 0;
  CURLMcode mc = curl_multi_add_handle(c->h->multi, c->easy);
  if (mc != CURLM_OK) {
    release_slot(c);
    c->attempts--;
    fail_soon(c, CP_HTTP_USAGE, curl_multi_strerror(mc));
    return;
  }
  c->st = ST_ACTIVE;
}

/* A call its limiter and origin let through goes out in the check phase,
 * right after the loop has polled. */
static void send_attempt(cp_http_call *c) {
  cp_http *h = c->h;
  c->st = ST_READY;
  c->qnext = NULL;
  c->qprev = h->ready_tail;
  if (h->ready_tail) h->ready_tail->qnext = c;
  else h->ready_head = c;
  h->ready_tail = c;
  if (!uv_is_active((uv_handle_t *)&h->check)) {
    uv_check_start(&h->check, on_check);
    uv_idle_start(&h->idle, on_idle);
  }
}

static void unready(cp_http_call *c) {
  cp_http *h = c->h;
  if (c->qprev) c->qprev->qnext = c->qnext;
  else h->ready_head = c->qnext;
  if (c->qnext) c->qnext->qprev = c->qprev;
  else h->ready_tail = c->qprev;
  c->qprev = c->qnext = NULL;
}

/* Reads whatever answers have arrived on libcurl's sockets since the loop
 * last polled: Lua code may have run a while since then, and an answer
 * among them (a 429 with Retry-After) may say that nothing must go out. */
static void read_arrived(cp_http *h) {
  for (int round = 0; round < 8 && h->multi; round++) {
    struct pollfd fds[64];
    nfds_t n = 0;
    for (sock_ctx *k = h->socks; k && n < 64; k = k->next)
      if (!k->closing) fds[n++] = (struct pollfd){k->fd, POLLIN, 0};
    if (n == 0 || poll(fds, n, 0) <= 0) return;
    int running, any = 0;
    for (nfds_t i = 0; i < n && h->multi; i++)
      if (fds[i].revents) {
        any = 1;
        int ev = (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) &&
                         !(fds[i].revents & POLLIN)
                     ? CURL_CSELECT_ERR
                     : CURL_CSELECT_IN;
        curl_multi_socket_action(h->multi, fds[i].fd, ev, &running);
        drain(h);
      }
    if (!any) return;
  }
}

/* The check phase: calls cleared to go are handed to libcurl, after every
 * answer that arrived meanwhile was read, each taking a last look at its
 * origin's gate; then libcurl starts them at once. */
static void flush_ready(cp_http *h) {
  read_arrived(h);
  cp_http_call *c;
  int started = 0;
  while ((c = h->ready_head) != NULL) {
    unready(c);
    if (c->origin && c->origin->paused_until > now_s()) {
      to_origin(c); /* the answers just read closed the gate */
      continue;
    }
    start_transfer(c);
    started = 1;
  }
  uv_check_stop(&h->check);
  uv_idle_stop(&h->idle);
  if (started && h->multi) {
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    drain(h);
  }
}

static void on_check(uv_check_t *ch) { flush_ready(ch->data); }

static void on_idle(uv_idle_t *id) { (void)id; }

static void on_call_closed(uv_handle_t *t) {
  cp_http_call *c = t->data;
  cp_http *h = c->h;
  free(c);
  handle_closed(h);
}

/* Takes c out of the multi handle, its limiter and the client's list, so
 * that nothing but its owner can reach it any more. The answer stays. */
static void detach(cp_http_call *c) {
  cp_http *h = c->h;
  if (c->st == ST_ACTIVE) curl_multi_remove_handle(h->multi, c->easy);
  if (c->st == ST_QUEUED || c->st == ST_ORIGIN) unqueue(c);
  if (c->st == ST_READY) unready(c);
  c->st = ST_CLOSED;
  uv_timer_stop(&c->timer);
  release_slot(c);
  if (c->prev) c->prev->next = c->next;
  else h->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

/* Frees everything but the timer, whose close callback frees c. */
static void destroy(cp_http_call *c) {
  /* libcurl wants the easy handle gone before the mime and the list. */
  curl_easy_cleanup(c->easy);
  curl_mime_free(c->mime);
  curl_slist_free_all(c->headers);
  free_sent_headers(c);
  cp_http_cred_unref(c->cred);
  free(c->body);
  free(c->method);
  free(c->where);
  free(c->ca_file);
  free(c->fail_msg);
  free(c->hdrs);
  cp_buf_free(&c->resp);
  cp_buf_free(&c->hdr_arena);
  cp_http_limiter_unref(c->lim);
  uv_close((uv_handle_t *)&c->timer, on_call_closed);
}

void cp_http_call_cancel(cp_http_call *c) {
  if (c->st == ST_CLOSED) return; /* inside its own done: already detached */
  detach(c);
  destroy(c);
}

/* ---- results -------------------------------------------------------------------- */

/* Appends what a JSON error body says: Cognigy's {title, detail, traceId},
 * OAuth2's {error, error_description}, or a plain {message}. */
static void add_error_detail(cp_buf *m, const char *body, size_t len) {
  if (len == 0 || len > 65536) return;
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(body, len, &jerr);
  if (!doc) return;
  const cp_json *root = cp_json_root(doc);
  static const char *const keys[] = {"detail", "error_description", "message",
                                     "title", "error"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    const cp_json *v = cp_json_get(root, keys[i]);
    if (v && v->type == CP_JSON_STRING && v->u.str.len > 0) {
      int n = v->u.str.len > 300 ? 300 : (int)v->u.str.len;
      cp_buf_printf(m, ": %.*s", n, v->u.str.s);
      break;
    }
  }
  const cp_json *code = cp_json_get(root, "code");
  if (code && code->type == CP_JSON_STRING)
    cp_buf_printf(m, " [%.*s]", code->u.str.len > 64 ? 64 : (int)code->u.str.len,
                  code->u.str.s);
  const cp_json *trace = cp_json_get(root, "traceId");
  if (trace && trace->type == CP_JSON_STRING)
    cp_buf_printf(m, " (traceId %.*s)",
                  trace->u.str.len > 128 ? 128 : (int)trace->u.str.len,
                  trace->u.str.s);
  cp_json_doc_free(doc);
}

/* Reports the call's outcome to its owner and frees it. why is the
 * transport error, or for an HTTP status a note to append. */
static void finish(cp_http_call *c, cp_http_kind kind, long status,
                   const char *why, int retryable, int unknown) {
  if (kind == CP_HTTP_MEMORY) {
    status = 0;
    retryable = 0;
    if (!why) why = "out of memory";
  }
  cp_buf msg = CP_BUF_INIT;
  if (kind == CP_HTTP_STATUS) {
    cp_buf_printf(&msg, "%s %s: %ld", c->method, c->where, status);
    if (c->reason[0]) cp_buf_printf(&msg, " %s", c->reason);
    add_error_detail(&msg, c->resp.data, c->resp.len);
    if (why) cp_buf_printf(&msg, "; %s", why);
  } else if (kind != CP_HTTP_OK) {
    cp_buf_printf(&msg, "%s %s: %s", c->method, c->where, why);
  }
  if (kind != CP_HTTP_OK && (c->attempts > 1 || c->note[0])) {
    cp_buf_adds(&msg, " (");
    if (c->attempts > 1) cp_buf_printf(&msg, "%d attempts", c->attempts);
    if (c->attempts > 1 && c->note[0]) cp_buf_adds(&msg, "; ");
    cp_buf_printf(&msg, "%s)", c->note);
  }
  if (unknown)
    cp_buf_adds(&msg, "; the request was sent and may have been applied");

  cp_http_header *hs = cp_calloc(c->n_hdrs, sizeof *hs);
  if (!hs && kind != CP_HTTP_MEMORY) { /* an answer cannot go half read */
    kind = CP_HTTP_MEMORY;
    unknown = c->attempts > 0 && !c->idempotent;
    retryable = 0;
    status = 0;
  }
  /* A message that cannot be built is still a message: the basic one, in
   * a buffer of our own. */
  char fallback[512];
  const char *message = msg.data;
  if (kind == CP_HTTP_MEMORY || !cp_buf_ok(&msg) || !msg.data) {
    snprintf(fallback, sizeof fallback, "%s %s: %s%s", c->method, c->where,
             kind == CP_HTTP_MEMORY ? "out of memory" : (why ? why : "failed"),
             unknown ? "; the request was sent and may have been applied" : "");
    message = fallback;
  }
  if (!hs) c->n_hdrs = 0;
  for (size_t i = 0; i < c->n_hdrs; i++) {
    hs[i].name = c->hdr_arena.data + c->hdrs[i].name;
    hs[i].value = c->hdr_arena.data + c->hdrs[i].value;
  }
  cp_http_result r = {
      .kind = kind,
      .status = status,
      .body = c->resp.data ? c->resp.data : "",
      .body_len = c->resp.len,
      .headers = hs,
      .n_headers = c->n_hdrs,
      .message = kind == CP_HTTP_OK ? NULL : message,
      .retryable = retryable,
      .unknown = unknown,
      .attempts = c->attempts,
      .elapsed = (double)(uv_hrtime() - c->started) / 1e9,
      .cred_gen = c->cred_gen,
      .cred_missing = kind == CP_HTTP_AUTH && c->cred_missing,
  };
  /* Detached first, so that done may start new calls (the limiter slot is
   * already free) and a cancel of c from inside done is a no-op. */
  detach(c);
  c->done(c, &r, c->data);
  free(hs);
  cp_buf_free(&msg);
  destroy(c);
}

/* How far a failed transfer got (see retry.h). */
static cp_retry_sent how_far(cp_http_call *c, CURLcode rc) {
  if (c->resend_refused) return CP_SENT_ALL; /* a whole body went out once */
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
    return CP_SENT_NONE;
  default:
    break;
  }
  curl_off_t connect_us = 0, sent = 0, expected = -1;
  long req_size = 0;
  curl_easy_getinfo(c->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  curl_easy_getinfo(c->easy, CURLINFO_SIZE_UPLOAD_T, &sent);
  curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_UPLOAD_T, &expected);
  curl_easy_getinfo(c->easy, CURLINFO_REQUEST_SIZE, &req_size);
  if (connect_us == 0 && req_size == 0 && sent == 0) return CP_SENT_NONE;
  if (c->mime || c->body_len > 0) {
    curl_off_t want = c->mime ? expected : (curl_off_t)c->body_len;
    /* A server does not act on a request whose body it did not get whole;
     * a MIME body of unknown size counts as complete, to be safe. */
    if (want > 0 && sent < want) return CP_SENT_PARTIAL;
  }
  return CP_SENT_ALL;
}

static cp_http_kind classify(CURLcode rc, int *transient) {
  *transient = 1;
  switch (rc) {
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return CP_HTTP_RESOLVE;
  case CURLE_COULDNT_CONNECT:
    return CP_HTTP_CONNECT;
  case CURLE_OPERATION_TIMEDOUT:
    return CP_HTTP_TIMEOUT;
  case CURLE_SSL_CONNECT_ERROR:
    return CP_HTTP_TLS; /* may be a reset mid-handshake */
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CRL_BADFILE:
    *transient = 0;
    return CP_HTTP_TLS;
  case CURLE_SEND_FAIL_REWIND: /* see body_seek: a resend we refused */
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_HTTP3:
    return CP_HTTP_NETWORK;
  case CURLE_READ_ERROR:
    *transient = 0;
    return CP_HTTP_IO;
  case CURLE_OUT_OF_MEMORY:
    *transient = 0;
    return CP_HTTP_MEMORY;
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_NOT_BUILT_IN:
    *transient = 0;
    return CP_HTTP_USAGE;
  default:
    *transient = 0;
    return CP_HTTP_NETWORK;
  }
}

/* What an answer says about the client as a whole: a Retry-After on a 429
 * (or a 503 that carries one) closes the origin's gate for every request,
 * a 429 slows the rates down, a success lets them recover; an answer other
 * than 401 proves the credential it carried. */
static void learn(cp_http_call *c, long status) {
  double t = now_s(), ra;
  const char *hdr = find_header(c, "retry-after");
  if (c->origin && (status == 429 || (status == 503 && hdr)) && hdr &&
      cp_retry_after_parse(hdr, time(NULL), &ra) == 0)
    origin_pause(c->origin, ra);
  if (status == 429) {
    if (c->lim) cp_limiter_slow_down(&c->lim->lim, t);
    if (c->origin && c->origin->lim.base_rate > 0)
      cp_limiter_slow_down(&c->origin->lim, t);
  } else if (status > 0 && status < 400) {
    if (c->lim) cp_limiter_speed_up(&c->lim->lim, t);
    if (c->origin && c->origin->lim.base_rate > 0)
      cp_limiter_speed_up(&c->origin->lim, t);
  }
  if (c->cred && status > 0 && status != 401 && c->cred_gen == c->cred->gen)
    c->cred->proven = 1;
}

static void attempt_done(cp_http_call *c, CURLcode rc) {
  cp_http *h = c->h;
  curl_multi_remove_handle(h->multi, c->easy);
  if (rc == CURLE_ABORTED_BY_CALLBACK && c->prereq_refused) {
    /* Nothing left: back to the gate, keeping the limiter's slot. */
    c->prereq_refused = 0;
    c->attempts--;
    c->queued_at = now_s();
    to_origin(c);
    return;
  }
  c->st = ST_BACKOFF; /* not in the multi any more; decided below */
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
  learn(c, status);
  release_slot(c);

  cp_http_kind kind = CP_HTTP_OK;
  cp_retry_verdict v;
  const char *why = NULL;
  char whybuf[CURL_ERROR_SIZE + 256];
  int out_of_time = 0; /* the attempt ran into the call's deadline */
  if (c->oom) {
    /* The answer could not be held: sent, maybe applied, never retried. */
    finish(c, CP_HTTP_MEMORY, 0, "out of memory while receiving the answer",
           0, !c->idempotent && how_far(c, rc) == CP_SENT_ALL);
    return;
  }
  if (rc == CURLE_OK) {
    if (status >= 400) kind = CP_HTTP_STATUS;
    v = cp_retry_decide(c->idempotent, status, 0, CP_SENT_ALL);
  } else {
    int transient;
    kind = classify(rc, &transient);
    v = cp_retry_decide(c->idempotent, 0, transient, how_far(c, rc));
    why = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
    if (c->resend_refused)
      why = "the connection was reset after the request was sent, with no answer";
    if (c->too_big) {
      snprintf(whybuf, sizeof whybuf, "answer larger than %zu MiB",
               MAX_ANSWER >> 20);
      why = whybuf;
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION) {
      snprintf(whybuf, sizeof whybuf,
               "TLS verification failed: %s (pass ca_file= with the CA that "
               "issued the server's certificate)",
               why);
      why = whybuf;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      /* libcurl tells a lookup that timed out only by its message. */
      int resolving = strncmp(c->errbuf, "Resolving timed out", 19) == 0;
      if (resolving) kind = CP_HTTP_RESOLVE;
      /* Ours unless a shorter connect timeout ended it first. */
      int ours = c->attempt_secs > 0 &&
                 now_s() - c->attempt_start >= c->attempt_secs - 0.005;
      out_of_time = ours && c->deadline_cut;
      if (ours)
        snprintf(whybuf, sizeof whybuf, "%s after %g s%s",
                 out_of_time ? "timed out" : "the attempt timed out",
                 out_of_time ? c->total : c->attempt_secs,
                 resolving ? " resolving the host name" : "");
      why = ours ? whybuf : why;
    }
  }

  int tries = c->retry.tries;
  if (kind == CP_HTTP_RESOLVE &&
      ++c->resolve_failures >= CP_RETRY_RESOLVE_TRIES)
    tries = c->attempts; /* see cp_retry_resolve_delay */
  if (v == CP_RETRY_YES && !out_of_time && c->attempts < tries) {
    double wait = -1, ra = -1;
    const char *hdr = status ? find_header(c, "retry-after") : NULL;
    if (hdr && cp_retry_after_parse(hdr, time(NULL), &ra) == 0) {
      if (ra > c->retry.max_wait) {
        snprintf(whybuf, sizeof whybuf,
                 "the server asks to retry after %.0f s, more than max_wait "
                 "%.0f s",
                 ra, c->retry.max_wait);
        finish(c, kind, status, whybuf, 1, 0);
        return;
      }
      wait = cp_retry_after_delay(ra, draw(h));
    } else if (kind == CP_HTTP_RESOLVE) {
      wait = cp_retry_resolve_delay(&c->retry, draw(h));
    } else {
      wait = cp_retry_backoff(&c->retry, c->attempts, draw(h));
    }
    if (!cp_retry_fits(c->total > 0 ? c->deadline - now_s() : -1, wait)) {
      if (ra >= 0)
        snprintf(c->note, sizeof c->note,
                 "the server asks to retry after %.0f s, past the timeout "
                 "of %g s",
                 ra, c->total);
      else
        snprintf(c->note, sizeof c->note,
                 "no time left to retry within the timeout of %g s", c->total);
      finish(c, kind, status, why, 1, 0);
      return;
    }
    c->st = ST_BACKOFF;
    /* The loop's clock counts whole (truncated) milliseconds, so a timer can
     * fire up to a tick early; a few ms more keep "never before
     * Retry-After" true. */
    uv_update_time(h->loop);
    uv_timer_start(&c->timer, on_call_timer, to_ms(wait) + 5, 0);
    return;
  }
  if (kind == CP_HTTP_OK) {
    finish(c, kind, status, NULL, 0, 0);
    return;
  }
  finish(c, kind, status, why, v == CP_RETRY_YES, v == CP_RETRY_UNKNOWN);
}

static void on_call_timer(uv_timer_t *t) {
  cp_http_call *c = t->data;
  switch (c->st) {
  case ST_QUEUED:
    pump(c->lim);
    break;
  case ST_BACKOFF:
    c->queued_at = now_s(); /* the call's time stops while it queues */
    if (c->lim) {
      c->st = ST_QUEUED;
      enqueue(c->lim, c);
      pump(c->lim);
    } else {
      to_origin(c);
    }
    break;
  case ST_FAILING:
    /* no message: it could not be kept, for want of memory */
    finish(c, c->fail_msg ? c->fail_kind : CP_HTTP_MEMORY, 0, c->fail_msg, 0, 0);
    break;
  default:
    break;
  }
}

static void drain(cp_http *h) {
  CURLMsg *m;
  int left;
  while (h->multi && (m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *e = m->easy_handle;
    CURLcode rc = m->data.result; /* m is invalid once e is removed */
    cp_http_call *c = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&c);
    attempt_done(c, rc);
  }
}
