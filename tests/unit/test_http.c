/*
 * test_http.c -- unit tests of http.c against a tiny HTTP/1.1 server that
 * runs on the same libuv loop: answers, retries with Retry-After, the
 * unknown outcome of a POST reset after its body, timeouts, limiters,
 * the per-origin gate a Retry-After closes for every request, credentials
 * taken when a request is sent, multipart streaming from a file,
 * cancellation and teardown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "http.h"

/* ---- the test server ------------------------------------------------------- */

typedef struct conn {
  uv_tcp_t tcp;
  cp_buf in;
  uv_timer_t delay; /* for /slow answers */
  int delay_open;
  char pending[64]; /* path answered when delay fires */
  int closing;
} conn;

static uv_loop_t *loop;
static uv_tcp_t server;
static int port;
static int hits_429, hits_total, hits_reset, hits_503, hits_post_503;
static int slow_now, slow_max;
static int accepted; /* connections the server accepted */
static double first_429_at, retry_429_at;
static int hits_gate;
static double gate_429_at, ok_at; /* when /gate answered 429; last /ok */
static char last_auth[128];       /* Authorization of the last request */
static size_t last_body_len;
static cp_buf last_body;

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  cp_buf_free(&c->in);
  if (c->delay_open) return; /* the timer's close frees c */
  free(c);
}

static void on_delay_closed(uv_handle_t *h) {
  conn *c = h->data;
  c->delay_open = 0;
  if (c->closing) free(c);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->delay_open) {
    uv_timer_stop(&c->delay);
    uv_close((uv_handle_t *)&c->delay, on_delay_closed);
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

typedef struct wreq {
  uv_write_t w;
  char *data;
} wreq;

static void on_written(uv_write_t *w, int status) {
  (void)status;
  wreq *r = (wreq *)w;
  free(r->data);
  free(r);
}

static void reply(conn *c, int status, const char *extra, const char *body,
                  size_t len) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b,
                "HTTP/1.1 %d Test\r\nContent-Length: %zu\r\n%sX-Test: Yes\r\n"
                "Content-Type: application/json\r\n\r\n",
                status, len, extra ? extra : "");
  cp_buf_add(&b, body, len);
  wreq *r = cp_malloc(sizeof *r);
  size_t n;
  r->data = cp_buf_steal(&b, &n);
  uv_buf_t ub = uv_buf_init(r->data, (unsigned)n);
  uv_write(&r->w, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
}

static void on_delay(uv_timer_t *t) {
  conn *c = t->data;
  slow_now--;
  reply(c, 200, NULL, "slow", 4);
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static void answer(conn *c, const char *method, const char *path,
                   const char *body, size_t blen) {
  hits_total++;
  if (strcmp(path, "/ok") == 0) {
    ok_at = now_s();
    reply(c, 200, "Set-Cookie: a=1\r\n", "{\"hello\":1}", 11);
  } else if (strcmp(path, "/gate") == 0) {
    if (hits_gate++ == 0) {
      gate_429_at = now_s();
      reply(c, 429, "Retry-After: 1\r\n", "{}", 2);
    } else {
      reply(c, 200, NULL, "{}", 2);
    }
  } else if (strcmp(path, "/auth") == 0) {
    if (strcmp(last_auth, "Bearer good") == 0) reply(c, 200, NULL, "{}", 2);
    else reply(c, 401, NULL, "{}", 2);
  } else if (strcmp(path, "/echo") == 0) {
    last_body_len = blen;
    cp_buf_reset(&last_body);
    cp_buf_add(&last_body, body, blen);
    reply(c, 200, NULL, body, blen);
  } else if (strcmp(path, "/flaky429") == 0) {
    if (hits_429++ == 0) {
      first_429_at = (double)uv_hrtime() / 1e9;
      reply(c, 429, "Retry-After: 1\r\n", "{}", 2);
    } else {
      retry_429_at = (double)uv_hrtime() / 1e9;
      reply(c, 200, NULL, "{}", 2);
    }
  } else if (strcmp(path, "/longwait") == 0) {
    reply(c, 429, "Retry-After: 3600\r\n", "{}", 2);
  } else if (strcmp(path, "/503") == 0) {
    hits_503++;
    if (strcmp(method, "POST") == 0) hits_post_503++;
    reply(c, 503, NULL, "{}", 2);
  } else if (strcmp(path, "/reset") == 0) {
    hits_reset++;
    uv_tcp_close_reset(&c->tcp, on_conn_closed);
    c->closing = 1;
  } else if (strcmp(path, "/hang") == 0) {
    /* never answers */
  } else if (strcmp(path, "/cognigy400") == 0) {
    const char *e = "{\"type\":\"about:blank\",\"title\":\"Bad Request\","
                    "\"status\":400,\"detail\":\"text must not be empty\","
                    "\"code\":\"E_TEXT\",\"traceId\":\"tr-42\"}";
    reply(c, 400, NULL, e, strlen(e));
  } else if (strcmp(path, "/slow") == 0) {
    if (++slow_now > slow_max) slow_max = slow_now;
    if (!c->delay_open) {
      uv_timer_init(loop, &c->delay);
      c->delay.data = c;
      c->delay_open = 1;
    }
    uv_timer_start(&c->delay, on_delay, 50, 0);
  } else {
    reply(c, 404, NULL, "{}", 2);
  }
}

/* Parses as many whole requests as c->in holds (Content-Length bodies). */
static void serve(conn *c) {
  for (;;) {
    if (c->closing || !c->in.data) return;
    char *end = strstr(c->in.data, "\r\n\r\n");
    if (!end) return;
    size_t head = (size_t)(end - c->in.data) + 4;
    size_t clen = 0;
    const char *cl = strstr(c->in.data, "\r\nContent-Length:");
    if (cl && cl < end) clen = strtoul(cl + 17, NULL, 10);
    if (c->in.len < head + clen) return;
    char method[16] = "", path[256] = "";
    sscanf(c->in.data, "%15s %255s", method, path);
    last_auth[0] = '\0';
    const char *au = strstr(c->in.data, "\r\nAuthorization: ");
    if (au && au < end) sscanf(au + 17, "%127[^\r]", last_auth);
    char *q = strchr(path, '?');
    if (q) *q = '\0';
    char *body = cp_malloc(clen + 1);
    memcpy(body, c->in.data + head, clen);
    body[clen] = '\0';
    size_t rest = c->in.len - head - clen;
    memmove(c->in.data, c->in.data + head + clen, rest);
    c->in.len = rest;
    c->in.data[rest] = '\0';
    answer(c, method, path, body, clen);
    free(body);
  }
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  (void)h;
  b->base = cp_malloc(size);
  b->len = size;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = s->data;
  if (n > 0 && !c->closing) {
    cp_buf_add(&c->in, b->base, (size_t)n);
    serve(c);
  } else if (n < 0) {
    conn_close(c);
  }
  free(b->base);
}

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  accepted++;
  conn *c = cp_calloc(1, sizeof *c);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) == 0)
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  else
    conn_close(c);
}

static void server_start(void) {
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(loop, &server);
  uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  uv_listen((uv_stream_t *)&server, 128, on_connection);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &len);
  port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- running calls ----------------------------------------------------------- */

typedef struct outcome {
  int done;
  cp_http_kind kind;
  long status;
  char body[256];
  char message[512];
  char x_test[16];
  int n_headers;
  int retryable, unknown, attempts;
  double elapsed;
  unsigned cred_gen;
  int cred_missing;
  char auth_seen[128]; /* the server's last Authorization when done */
} outcome;

static cp_http *client;

static void on_done(cp_http_call *c, const cp_http_result *r, void *data) {
  (void)c;
  outcome *o = data;
  o->done = 1;
  o->kind = r->kind;
  o->status = r->status;
  snprintf(o->body, sizeof o->body, "%.*s", (int)r->body_len, r->body);
  snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
  o->n_headers = (int)r->n_headers;
  for (size_t i = 0; i < r->n_headers; i++)
    if (strcmp(r->headers[i].name, "x-test") == 0)
      snprintf(o->x_test, sizeof o->x_test, "%s", r->headers[i].value);
  o->retryable = r->retryable;
  o->unknown = r->unknown;
  o->attempts = r->attempts;
  o->elapsed = r->elapsed;
  o->cred_gen = r->cred_gen;
  o->cred_missing = r->cred_missing;
  snprintf(o->auth_seen, sizeof o->auth_seen, "%s", last_auth);
}

static char *url(const char *path) {
  static char u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d%s", port, path);
  return u;
}

static void wait_for(outcome *os, int n) {
  for (;;) {
    int all = 1;
    for (int i = 0; i < n; i++) all &= os[i].done;
    if (all) return;
    uv_run(loop, UV_RUN_ONCE);
  }
}

static cp_http_call *fast_retry_call(const char *method, const char *path) {
  cp_http_call *c = cp_http_call_new(client, method, url(path));
  cp_retry_policy p;
  cp_retry_policy_default(&p);
  p.tries = 3;
  p.base = 0.01;
  p.cap = 0.05;
  cp_http_call_retry(c, &p);
  return c;
}

static void get_ok(void) {
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "GET", url("/ok?secret=abc"));
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_OK);
  CHECK_INT(o.status, 200);
  CHECK_STR(o.body, "{\"hello\":1}");
  CHECK_STR(o.x_test, "Yes"); /* names lower-cased, values kept */
  CHECK(o.n_headers >= 4);
  CHECK_INT(o.attempts, 1);
}

static void connection_reuse(void) {
  int before = accepted;
  for (int i = 0; i < 10; i++) {
    outcome o = {0};
    cp_http_call_start(cp_http_call_new(client, "GET", url("/ok")), on_done, &o);
    wait_for(&o, 1);
    CHECK_INT(o.status, 200);
  }
  /* one after another: every request after the first reuses a connection */
  CHECK(accepted - before <= 1);
}

static void post_body(void) {
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", url("/echo"));
  cp_http_call_header(c, "Content-Type: application/json");
  cp_http_call_body(c, cp_strdup("{\"text\":\"hi\"}"), 13);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.status, 200);
  CHECK_STR(o.body, "{\"text\":\"hi\"}");
}

static void retry_after_honoured(void) {
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", url("/flaky429"));
  cp_http_call_body(c, cp_strdup("x"), 1);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.status, 200);
  CHECK_INT(o.attempts, 2);
  CHECK(retry_429_at - first_429_at >= 1.0);
  CHECK(o.elapsed >= 1.0 && o.elapsed < 3.0);
}

/* A client of its own, for tests that close an origin's gate for long. */
static cp_http *other_client(void) {
  char err[300];
  cp_http *h = cp_http_new(loop, NULL, err, sizeof err);
  CHECK(h != NULL);
  return h;
}

static void free_client(cp_http *h) {
  cp_http_free(h);
  for (int i = 0; i < 5; i++) uv_run(loop, UV_RUN_NOWAIT);
}

static void retry_after_too_long(void) {
  cp_http *h = other_client();
  outcome o = {0}, later = {0};
  cp_http_call *c = cp_http_call_new(h, "GET", url("/longwait"));
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_STATUS);
  CHECK_INT(o.status, 429);
  CHECK_INT(o.attempts, 1);
  CHECK(o.retryable);
  CHECK(strstr(o.message, "max_wait") != NULL);
  /* the whole origin waits an hour: a later request fails unsent */
  CHECK(cp_http_origin_paused(h, url("/")) > 3000);
  int before = hits_total;
  cp_http_call_start(cp_http_call_new(h, "GET", url("/ok")), on_done, &later);
  wait_for(&later, 1);
  CHECK_INT(later.attempts, 0);
  CHECK_INT(hits_total, before);
  CHECK(strstr(later.message, "max_wait") != NULL);
  free_client(h);
}

/* A 429 with Retry-After closes the gate of the origin for every request
 * of the client, not only for the one answered. */
static void origin_gate(void) {
  cp_http *h = other_client();
  outcome o[2];
  memset(o, 0, sizeof o);
  hits_gate = 0;
  cp_http_call *c = cp_http_call_new(h, "POST", url("/gate"));
  cp_http_call_body(c, cp_strdup("x"), 1);
  cp_http_call_start(c, on_done, &o[0]);
  while (hits_gate == 0 || cp_http_origin_paused(h, url("/")) == 0)
    uv_run(loop, UV_RUN_ONCE);
  /* another request, started once the 429 is in: held until the window
   * ends, although it was never answered 429 itself */
  cp_http_call_start(cp_http_call_new(h, "GET", url("/ok")), on_done, &o[1]);
  wait_for(o, 2);
  CHECK_INT(o[0].status, 200);
  CHECK_INT(o[0].attempts, 2);
  CHECK_INT(o[1].status, 200);
  CHECK_INT(o[1].attempts, 1);
  CHECK(ok_at - gate_429_at >= 1.0);
  free_client(h);
}

/* Two limiters (two tenants) reaching one origin share its rate. */
static void origin_rate(void) {
  cp_http *h = other_client();
  CHECK_INT(cp_http_origin_limit(h, url("/"), 20, 2), 0);
  CHECK_INT(cp_http_origin_limit(h, "not a url ::", 1, 1), -1);
  cp_http_limiter *a = cp_http_limiter_new(1000, 1000, 0);
  cp_http_limiter *b = cp_http_limiter_new(1000, 1000, 0);
  outcome o[10];
  memset(o, 0, sizeof o);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < 10; i++) {
    cp_http_call *c = cp_http_call_new(h, "GET", url("/ok"));
    cp_http_call_limiter(c, i % 2 ? a : b);
    cp_http_call_start(c, on_done, &o[i]);
  }
  wait_for(o, 10);
  double took = (double)(uv_hrtime() - t0) / 1e9;
  CHECK(took >= 0.38); /* 2 at once, then 8 at 20/s */
  for (int i = 0; i < 10; i++) CHECK_INT(o[i].status, 200);
  cp_http_limiter_unref(a);
  cp_http_limiter_unref(b);
  free_client(h);
}

/* A credential is read when the request goes out: a value set while the
 * request waited behind its limiter is the one the server sees. */
static void credential_at_send_time(void) {
  cp_http_cred *cr = cp_http_cred_new("Authorization");
  cp_http_cred_set(cr, "Bearer stale", 0);
  cp_http_limiter *l = cp_http_limiter_new(2, 1, 0);
  outcome o[2];
  memset(o, 0, sizeof o);
  for (int i = 0; i < 2; i++) {
    cp_http_call *c = cp_http_call_new(client, "GET", url("/auth"));
    cp_http_call_limiter(c, l);
    cp_http_call_cred(c, cr);
    cp_http_call_start(c, on_done, &o[i]);
  }
  wait_for(&o[0], 1);
  CHECK_INT(o[0].status, 401);
  CHECK_INT(o[0].cred_gen, 1);
  cp_http_cred_state st;
  cp_http_cred_get(cr, &st);
  CHECK(!st.proven); /* a 401 proves nothing */
  cp_http_cred_invalidate(cr, 1);
  cp_http_cred_set(cr, "Bearer good", 0);
  wait_for(&o[1], 1); /* queued before the new value; sent with it */
  CHECK_INT(o[1].status, 200);
  CHECK_INT(o[1].cred_gen, 2);
  CHECK_STR(o[1].auth_seen, "Bearer good");
  cp_http_cred_get(cr, &st);
  CHECK(st.proven);
  /* no value now: the call ends unsent, saying so */
  cp_http_cred_invalidate(cr, 1); /* an older generation: kept */
  cp_http_cred_get(cr, &st);
  CHECK(st.has_value);
  cp_http_cred_invalidate(cr, 2);
  outcome m = {0};
  int before = hits_total;
  cp_http_call *c = cp_http_call_new(client, "GET", url("/auth"));
  cp_http_call_cred(c, cr);
  cp_http_call_start(c, on_done, &m);
  wait_for(&m, 1);
  CHECK_INT(m.kind, CP_HTTP_AUTH);
  CHECK(m.cred_missing);
  CHECK_INT(m.attempts, 0);
  CHECK_INT(hits_total, before);
  /* an expired value counts as none */
  cp_http_cred_set(cr, "Bearer good", cp_http_now() - 1);
  cp_http_cred_get(cr, &st);
  CHECK(!st.has_value);
  cp_http_limiter_unref(l);
  cp_http_cred_unref(cr);
}

/* A failed credential ends every waiting request at once, none sent. */
static void credential_failed(void) {
  cp_http_cred *cr = cp_http_cred_new("X-API-Key");
  cp_http_cred_set(cr, "k", 0);
  cp_http_limiter *l = cp_http_limiter_new(0.5, 1, 0);
  outcome o[5];
  memset(o, 0, sizeof o);
  for (int i = 0; i < 5; i++) {
    cp_http_call *c = cp_http_call_new(client, "GET", url("/ok"));
    cp_http_call_limiter(c, l);
    cp_http_call_cred(c, cr);
    cp_http_call_start(c, on_done, &o[i]);
  }
  wait_for(&o[0], 1);
  int before = hits_total;
  uint64_t t0 = uv_hrtime();
  cp_http_cred_fail(client, cr, "API key refused: 401");
  wait_for(o, 5);
  CHECK((double)(uv_hrtime() - t0) / 1e9 < 0.5); /* not each at its turn */
  CHECK_INT(hits_total, before);
  for (int i = 1; i < 5; i++) {
    CHECK_INT(o[i].kind, CP_HTTP_AUTH);
    CHECK(!o[i].cred_missing);
    CHECK_INT(o[i].attempts, 0);
    CHECK(strstr(o[i].message, "API key refused") != NULL);
  }
  CHECK_INT(cp_http_limiter_state(l)->in_flight, 0);
  cp_http_limiter_unref(l);
  cp_http_cred_unref(cr);
}

static void status_5xx(void) {
  outcome o[2] = {{0}, {0}};
  hits_503 = hits_post_503 = 0;
  cp_http_call_start(fast_retry_call("GET", "/503"), on_done, &o[0]);
  cp_http_call *p = fast_retry_call("POST", "/503");
  cp_http_call_body(p, cp_strdup("{}"), 2);
  cp_http_call_start(p, on_done, &o[1]);
  wait_for(o, 2);
  /* GET: retried until the tries ran out, still retryable */
  CHECK_INT(o[0].status, 503);
  CHECK_INT(o[0].attempts, 3);
  CHECK(o[0].retryable);
  CHECK(!o[0].unknown);
  /* POST: not resent, outcome unknown */
  CHECK_INT(o[1].status, 503);
  CHECK_INT(o[1].attempts, 1);
  CHECK_INT(hits_post_503, 1);
  CHECK(o[1].unknown);
  CHECK(!o[1].retryable);
  CHECK(strstr(o[1].message, "may have been applied") != NULL);
}

static void reset_after_body(void) {
  outcome o = {0};
  hits_reset = 0;
  cp_http_call *c = fast_retry_call("POST", "/reset");
  cp_http_call_body(c, cp_strdup("{\"text\":\"once\"}"), 15);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_NETWORK);
  CHECK_INT(o.status, 0);
  CHECK(o.unknown);
  CHECK_INT(o.attempts, 1);
  CHECK_INT(hits_reset, 1);
  /* an idempotent request is replayed instead */
  outcome g = {0};
  hits_reset = 0;
  cp_http_call_start(fast_retry_call("PUT", "/reset"), on_done, &g);
  wait_for(&g, 1);
  CHECK_INT(g.attempts, 3);
  CHECK_INT(hits_reset, 3);
  CHECK(!g.unknown);
  CHECK(g.retryable);
}

static void connect_refused(void) {
  /* a port nobody listens on: bind one, note it, close it */
  uv_tcp_t t;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(loop, &t);
  uv_tcp_bind(&t, (const struct sockaddr *)&addr, 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
  int dead = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/x", dead);
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", u);
  cp_retry_policy p;
  cp_retry_policy_default(&p);
  p.tries = 2;
  p.base = 0.01;
  cp_http_call_retry(c, &p);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  /* nothing was sent, so even a POST is retried */
  CHECK_INT(o.kind, CP_HTTP_CONNECT);
  CHECK_INT(o.attempts, 2);
  CHECK(!o.unknown);
  CHECK(o.retryable);
}

static void timeout_post_unknown(void) {
  outcome o = {0};
  cp_http_call *c = fast_retry_call("POST", "/hang");
  cp_http_call_body(c, cp_strdup("{}"), 2);
  cp_http_call_timeouts(c, 0.3, 0, 1);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_TIMEOUT);
  CHECK(o.unknown);
  CHECK_INT(o.attempts, 1);
  CHECK(o.elapsed >= 0.3 && o.elapsed < 2.0);
}

/* The call's timeout bounds its retries, and the error says so. */
static void total_bounds_retries(void) {
  outcome o = {0};
  hits_503 = 0;
  cp_http_call *c = cp_http_call_new(client, "GET", url("/503"));
  cp_retry_policy p;
  cp_retry_policy_default(&p);
  p.tries = 100;
  p.base = 0.02;
  p.cap = 0.05;
  cp_http_call_retry(c, &p);
  cp_http_call_timeouts(c, 0.5, 0, 1);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_STATUS);
  CHECK_INT(o.status, 503);
  CHECK(o.attempts > 3 && o.attempts < 100);
  CHECK_INT(hits_503, o.attempts);
  CHECK(o.retryable);
  CHECK(o.elapsed < 0.5);
  CHECK(strstr(o.message, "no time left to retry within the timeout of 0.5 s") !=
        NULL);
}

/* attempt_timeout ends each attempt; the retries go on within the total. */
static void attempt_timeout(void) {
  outcome o = {0};
  cp_http_call *c = fast_retry_call("GET", "/hang");
  cp_http_call_timeouts(c, 5, 0.2, 1);
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_TIMEOUT);
  CHECK_INT(o.attempts, 3);
  CHECK(o.elapsed >= 0.6 && o.elapsed < 2.0);
  CHECK(strstr(o.message, "the attempt timed out after 0.2 s (3 attempts)") !=
        NULL);
  /* the total cuts an attempt short: the message says the call's limit */
  outcome t = {0};
  c = fast_retry_call("GET", "/hang");
  cp_http_call_timeouts(c, 0.3, 0, 1);
  cp_http_call_start(c, on_done, &t);
  wait_for(&t, 1);
  CHECK_INT(t.kind, CP_HTTP_TIMEOUT);
  CHECK_INT(t.attempts, 1);
  CHECK(strstr(t.message, ": timed out after 0.3 s") != NULL);
}

/* A name under .invalid never resolves (RFC 6761): kind resolve, tried
 * twice, at once, whatever the policy's tries. */
static void resolve_failure(void) {
  outcome o = {0};
  cp_http_call *c =
      cp_http_call_new(client, "GET", "http://cogpipe-test.invalid/x");
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_STR(cp_http_kind_name(o.kind), "resolve");
  CHECK_INT(o.attempts, CP_RETRY_RESOLVE_TRIES);
  CHECK(o.retryable);
  CHECK(!o.unknown);
  CHECK(o.elapsed < 2.0);
  CHECK(strstr(o.message, "cogpipe-test.invalid") != NULL);
}

static void cognigy_error_message(void) {
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", url("/cognigy400?key=zzz"));
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_STATUS);
  CHECK_INT(o.status, 400);
  CHECK(strstr(o.message, "text must not be empty") != NULL);
  CHECK(strstr(o.message, "tr-42") != NULL);
  CHECK(strstr(o.message, "/cognigy400") != NULL);
  CHECK(strstr(o.message, "zzz") == NULL); /* the query stays out */
  CHECK(!o.retryable);
}

static void limiter_rate(void) {
  cp_http_limiter *l = cp_http_limiter_new(20, 2, 0);
  outcome o[10];
  memset(o, 0, sizeof o);
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < 10; i++) {
    cp_http_call *c = cp_http_call_new(client, "GET", url("/ok"));
    cp_http_call_limiter(c, l);
    cp_http_call_start(c, on_done, &o[i]);
  }
  CHECK(cp_http_limiter_waiting(l) >= 7);
  cp_http_limiter_unref(l); /* the calls keep it alive */
  wait_for(o, 10);
  double took = (double)(uv_hrtime() - t0) / 1e9;
  /* 2 at once, then 8 at 20/s: 0.4 s */
  CHECK(took >= 0.38);
  CHECK(took < 2.0);
  for (int i = 0; i < 10; i++) CHECK_INT(o[i].status, 200);
}

static void limiter_in_flight(void) {
  cp_http_limiter *l = cp_http_limiter_new(0, 1, 3);
  outcome o[12];
  memset(o, 0, sizeof o);
  slow_now = slow_max = 0;
  for (int i = 0; i < 12; i++) {
    cp_http_call *c = cp_http_call_new(client, "GET", url("/slow"));
    cp_http_call_limiter(c, l);
    cp_http_call_start(c, on_done, &o[i]);
  }
  wait_for(o, 12);
  CHECK_INT(slow_max, 3);
  CHECK_INT(cp_http_limiter_state(l)->in_flight, 0);
  cp_http_limiter_unref(l);
  /* without a limiter they all run at once */
  memset(o, 0, sizeof o);
  slow_now = slow_max = 0;
  for (int i = 0; i < 12; i++)
    cp_http_call_start(cp_http_call_new(client, "GET", url("/slow")), on_done,
                       &o[i]);
  wait_for(o, 12);
  CHECK_INT(slow_max, 12);
}

static void multipart_file(void) {
  char path[] = "/tmp/cp_test_http_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char *lines = "book a flight\nwhat is my balance\n";
  CHECK(write(fd, lines, strlen(lines)) == (ssize_t)strlen(lines));
  close(fd);
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", url("/echo"));
  curl_mime *m = cp_http_call_mime(c);
  curl_mimepart *p = curl_mime_addpart(m);
  curl_mime_name(p, "metadata");
  curl_mime_data(p, "{\"a\":1}", CURL_ZERO_TERMINATED);
  curl_mime_type(p, "application/json");
  p = curl_mime_addpart(m);
  curl_mime_name(p, "dataset");
  CHECK_INT(curl_mime_filedata(p, path), CURLE_OK);
  curl_mime_filename(p, "utterances.txt");
  cp_http_call_start(c, on_done, &o);
  wait_for(&o, 1);
  CHECK_INT(o.status, 200);
  CHECK(last_body.data && strstr(last_body.data, "what is my balance") != NULL);
  CHECK(strstr(last_body.data, "filename=\"utterances.txt\"") != NULL);
  CHECK(strstr(last_body.data, "name=\"metadata\"") != NULL);
  unlink(path);
}

static void failure_before_sending(void) {
  outcome o = {0};
  cp_http_call *c = cp_http_call_new(client, "POST", url("/echo"));
  cp_http_call_fail(c, CP_HTTP_IO, "cannot open part file");
  cp_http_call_start(c, on_done, &o);
  CHECK(!o.done); /* never from inside start */
  wait_for(&o, 1);
  CHECK_INT(o.kind, CP_HTTP_IO);
  CHECK_INT(o.attempts, 0);
  CHECK(strstr(o.message, "cannot open part file") != NULL);
  /* a scheme libcurl must not speak */
  outcome f = {0};
  cp_http_call_start(cp_http_call_new(client, "GET", "file:///etc/passwd"),
                     on_done, &f);
  wait_for(&f, 1);
  CHECK_INT(f.kind, CP_HTTP_USAGE);
}

static void cancel_in_every_state(void) {
  outcome o[4];
  memset(o, 0, sizeof o);
  /* active (server never answers), queued behind a limiter, backing off,
   * and never started */
  cp_http_call *active = cp_http_call_new(client, "GET", url("/hang"));
  cp_http_call_start(active, on_done, &o[0]);
  cp_http_limiter *l = cp_http_limiter_new(0.1, 1, 0);
  cp_http_call *first = cp_http_call_new(client, "GET", url("/hang"));
  cp_http_call_limiter(first, l);
  cp_http_call_start(first, on_done, &o[1]);
  cp_http_call *queued = cp_http_call_new(client, "GET", url("/ok"));
  cp_http_call_limiter(queued, l);
  cp_http_call_start(queued, on_done, &o[2]);
  CHECK_INT(cp_http_limiter_waiting(l), 1);
  cp_http_call *fresh = cp_http_call_new(client, "GET", url("/ok"));
  for (int i = 0; i < 5; i++) uv_run(loop, UV_RUN_NOWAIT);
  cp_http_call_cancel(queued);
  CHECK_INT(cp_http_limiter_waiting(l), 0);
  cp_http_call_cancel(active);
  cp_http_call_cancel(fresh);
  cp_http_call_cancel(first);
  CHECK_INT(cp_http_limiter_state(l)->in_flight, 0);
  cp_http_limiter_unref(l);
  for (int i = 0; i < 5; i++) uv_run(loop, UV_RUN_NOWAIT);
  for (int i = 0; i < 4; i++) CHECK(!o[i].done);
}

static void on_server_closed(uv_handle_t *h) { (void)h; }

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) {
    /* the server's connections; a delay timer closes with its conn */
    if (h->type == UV_TCP && h != (uv_handle_t *)&server) conn_close(h->data);
  }
}

static void teardown(void) {
  /* a call left running when the client goes is cancelled by it */
  outcome left = {0};
  cp_http_call_start(cp_http_call_new(client, "GET", url("/hang")), on_done,
                     &left);
  uv_run(loop, UV_RUN_NOWAIT);
  cp_http_free(client);
  uv_close((uv_handle_t *)&server, on_server_closed);
  uv_walk(loop, close_walk, NULL);
  while (uv_run(loop, UV_RUN_NOWAIT) != 0) {
  }
  CHECK(!left.done);
  CHECK_INT(uv_loop_close(loop), 0);
  cp_buf_free(&last_body);
  curl_global_cleanup();
}

/* Memory that runs out while a call is made or completes is a result of
 * kind "memory" (or no call at all), never a crash or a leak: each
 * allocation of making a POST is failed in turn, then each of reporting
 * a connection that was refused. */
static void out_of_memory(void) {
  int made = 0, failed = 0;
  for (long k = 1;; k++) {
    outcome o = {0};
    char *body = cp_strdup("{\"text\":\"hi\"}");
    cp_alloc_fail_at(k);
    cp_http_call *c = cp_http_call_new(client, "POST", url("/echo"));
    if (c) {
      cp_http_call_header(c, "Content-Type: application/json");
      cp_http_call_body(c, body, 13);
      cp_http_call_tls(c, "/nonexistent/ca.pem", 0);
      cp_http_call_start(c, on_done, &o);
    } else {
      free(body);
    }
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (!c) {
      CHECK(!pending);
      failed++;
      continue;
    }
    wait_for(&o, 1);
    if (pending) {
      CHECK_INT(o.kind, CP_HTTP_OK);
      CHECK_STR(o.body, "{\"text\":\"hi\"}");
      break;
    }
    CHECK_INT(o.kind, CP_HTTP_MEMORY);
    CHECK(strstr(o.message, "out of memory") != NULL);
    CHECK_INT(o.attempts, 0); /* it never went out */
    made++;
  }
  CHECK(made > 0 && failed > 0);
  for (long k = 1;; k++) {
    outcome o = {0};
    cp_http_call *c = cp_http_call_new(client, "GET", "http://127.0.0.1:1/refused");
    cp_retry_policy p;
    cp_retry_policy_default(&p);
    p.tries = 1;
    cp_http_call_retry(c, &p);
    cp_http_call_start(c, on_done, &o);
    cp_alloc_fail_at(k);
    wait_for(&o, 1);
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) {
      CHECK_INT(o.kind, CP_HTTP_CONNECT);
      break;
    }
    CHECK(o.kind == CP_HTTP_CONNECT || o.kind == CP_HTTP_MEMORY);
    CHECK(o.message[0] != '\0');
  }
}

int main(void) {
  uv_loop_t l;
  uv_loop_init(&l);
  loop = &l;
  server_start();
  char err[300];
  client = cp_http_new(loop, NULL, err, sizeof err);
  if (!client) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  RUN(get_ok);
  RUN(connection_reuse);
  RUN(post_body);
  RUN(retry_after_honoured);
  RUN(retry_after_too_long);
  RUN(origin_gate);
  RUN(origin_rate);
  RUN(credential_at_send_time);
  RUN(credential_failed);
  RUN(status_5xx);
  RUN(reset_after_body);
  RUN(connect_refused);
  RUN(timeout_post_unknown);
  RUN(total_bounds_retries);
  RUN(attempt_timeout);
  RUN(resolve_failure);
  RUN(cognigy_error_message);
  RUN(limiter_rate);
  RUN(limiter_in_flight);
  RUN(multipart_file);
  RUN(failure_before_sending);
  RUN(cancel_in_every_state);
  RUN(out_of_memory);
  RUN(teardown);
  DONE();
}
