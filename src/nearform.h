/*
 * nearform.h -- the "near form" of a text: what near-duplicate detection
 * (minhash.h) compares instead of the text itself, so that the differences
 * people make when they write the same example again -- case, punctuation,
 * contractions, numbers, letters held down -- are gone before shingling.
 * Pure text in, text out: knows nothing of shingles, indexes or Lua.
 *
 * The form of a text is its `casefold` normalisation (normalize.h) cut into
 * words -- runs of letters, marks and digits; every other character only
 * separates them -- and each word then:
 *  - English contractions are written out: "what's" and "whats" are "what
 *    is", "don't" and "dont" "do not", "can't" "can not", "won't" "will
 *    not", "i'm" "i am", "you're" "you are", "i've", "i'll", "i'd" (would),
 *    "let's" "let us", "gonna", "wanna", "gotta" "going to", "want to",
 *    "got to". A word that is also an English word of its own ("its",
 *    "ill", "were", "well", "id", "lets") is left alone; any other
 *    apostrophe separates words ("steve's" is "steve s", "l'eau" "l eau");
 *  - every run of digits is "0": "set an alarm for 7 am" and "... 8 am",
 *    or "order #1234" and "order #5678", teach a model the same thing;
 *  - every run of one repeated character is one character: "pleeease" is
 *    "please", and "adress" and "address" meet as "adres".
 * The words are joined by single spaces; a text with no letter or digit
 * has the empty form.
 */
#ifndef CP_NEARFORM_H
#define CP_NEARFORM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Writes the near form of s[0..len) (UTF-8; ill-formed bytes are kept as
 * word characters of their own) to out, which is reset first; scratch is
 * working space. Both buffers are the caller's. When memory runs out, out
 * is left failed (cp_buf_ok) and must not be used. */
void cp_nearform(const char *s, size_t len, cp_buf *scratch, cp_buf *out);

/* cp_nearform_next for a first byte beyond ASCII. */
size_t cp_nearform_next_utf8(const char *s, size_t len, uint32_t *cp);

/* Decodes the character at s (len > 0) into *cp and returns its length. An
 * ill-formed byte comes back alone as 0x110000 + its value, a number no
 * real code point has, so that such text still has a form and shingles.
 * Inline for ASCII: it is called for every character the index reads. */
static inline size_t cp_nearform_next(const char *s, size_t len, uint32_t *cp) {
  if ((unsigned char)s[0] < 0x80) {
    *cp = (unsigned char)s[0];
    return 1;
  }
  return cp_nearform_next_utf8(s, len, cp);
}

#endif
