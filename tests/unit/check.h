/*
 * check.h -- the assertion helpers of the C unit tests. Each test program
 * defines test functions, runs them with RUN(), and ends with DONE(), which
 * prints "N passed, N failed" and returns the exit status.
 */
#ifndef CP_CHECK_H
#define CP_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures_;
static int check_passed_;
static int check_failed_;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,    \
              #cond);                                                     \
      check_failures_++;                                                  \
    }                                                                     \
  } while (0)

#define CHECK_INT(a, b)                                                   \
  do {                                                                    \
    long long a_ = (long long)(a), b_ = (long long)(b);                   \
    if (a_ != b_) {                                                       \
      fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__,     \
              __LINE__, #a, a_, b_);                                      \
      check_failures_++;                                                  \
    }                                                                     \
  } while (0)

#define CHECK_STR(a, b)                                                   \
  do {                                                                    \
    const char *a_ = (a), *b_ = (b);                                      \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                              \
      fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, \
              __LINE__, #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");      \
      check_failures_++;                                                  \
    }                                                                     \
  } while (0)

#define RUN(fn)                                                           \
  do {                                                                    \
    int before_ = check_failures_;                                        \
    fn();                                                                 \
    if (check_failures_ == before_) {                                     \
      check_passed_++;                                                    \
      printf("ok - %s\n", #fn);                                           \
    } else {                                                              \
      check_failed_++;                                                    \
      printf("not ok - %s\n", #fn);                                       \
    }                                                                     \
  } while (0)

#define DONE()                                                            \
  do {                                                                    \
    printf("%d passed, %d failed\n", check_passed_, check_failed_);       \
    return check_failed_ ? 1 : 0;                                         \
  } while (0)

#endif
