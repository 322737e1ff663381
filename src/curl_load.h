/*
 * curl_load.h -- libcurl, loaded on first use. libcogpipe is not linked
 * against libcurl: cp_curl_load() dlopen()s it (by the SONAME the build
 * found, CP_CURL_SONAME) and fills cp_curl with its functions. Linked,
 * libcurl and the thirty-odd libraries it pulls in (TLS, Kerberos, LDAP,
 * SSH, IDN) would be loaded and initialised by every command, which costs
 * a command that never goes on the network, such as `cogpipe check`, two
 * thirds of its start-up. Owns the handle on the library, never unloads it
 * and never makes a request itself.
 *
 *   if (cp_curl_load(err, sizeof err)) ... libcurl cannot be used ...
 *   CURL *e = cp_curl.easy_init();
 */
#ifndef CP_CURL_LOAD_H
#define CP_CURL_LOAD_H

#include <curl/curl.h>
#include <stddef.h>

/* The libcurl functions libcogpipe calls, as curl_<name>. */
#define CP_CURL_FUNCTIONS(X)                                                 \
  X(global_init)                                                             \
  X(global_cleanup)                                                          \
  X(free)                                                                    \
  X(getdate)                                                                 \
  X(easy_init)                                                               \
  X(easy_cleanup)                                                            \
  X(easy_setopt)                                                             \
  X(easy_getinfo)                                                            \
  X(easy_strerror)                                                           \
  X(multi_init)                                                              \
  X(multi_cleanup)                                                           \
  X(multi_setopt)                                                            \
  X(multi_add_handle)                                                        \
  X(multi_remove_handle)                                                     \
  X(multi_socket_action)                                                     \
  X(multi_assign)                                                            \
  X(multi_info_read)                                                         \
  X(multi_strerror)                                                          \
  X(slist_append)                                                            \
  X(slist_free_all)                                                          \
  X(url)                                                                     \
  X(url_set)                                                                 \
  X(url_get)                                                                 \
  X(url_cleanup)                                                             \
  X(mime_init)                                                               \
  X(mime_free)                                                               \
  X(mime_addpart)                                                            \
  X(mime_name)                                                               \
  X(mime_data)                                                               \
  X(mime_filedata)                                                           \
  X(mime_filename)                                                           \
  X(mime_type)

/* cp_curl.easy_setopt is curl_easy_setopt, and so on. (Named without the
 * parentheses, curl's type-checking macros of the same names stay out of
 * the way.) */
typedef struct cp_curl_api {
#define CP_CURL_MEMBER(name) __typeof__(curl_##name) *name;
  CP_CURL_FUNCTIONS(CP_CURL_MEMBER)
#undef CP_CURL_MEMBER
} cp_curl_api;

/* Filled by the first successful cp_curl_load(); read-only afterwards. */
extern cp_curl_api cp_curl;

/* Loads libcurl and runs its global initialisation, once per process and
 * from any thread. Returns 0 when cp_curl may be used; otherwise -1 with
 * the reason in err (when errlen > 0), and a later call tries again (the
 * reason may have been a lack of memory). */
int cp_curl_load(char *err, size_t errlen);

#endif
