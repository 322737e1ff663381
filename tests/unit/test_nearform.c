/*
 * test_nearform.c -- the near form of a text: what differences between two
 * writings of the same example it removes (case, punctuation, spacing,
 * contractions, numbers, letters held down), and what it keeps apart.
 */
#include <string.h>

#include "check.h"
#include "nearform.h"

static cp_buf scratch_, out_;

static const char *form(const char *s) {
  cp_nearform(s, strlen(s), &scratch_, &out_);
  return out_.data ? out_.data : "";
}

static void test_words_case_punctuation(void) {
  CHECK_STR(form("  Update MY credit-card   details!! "),
            "update my credit card details");
  CHECK_STR(form("STRASSE"), form("Straße"));
  CHECK_STR(form(""), "");
  CHECK_STR(form("?! ... --"), "");
  CHECK_STR(form("\"quoted\" 'single'"), "quoted single");
  /* ill-formed UTF-8 is kept, a word character of its own */
  CHECK_STR(form("caf\xe9 au lait"), "caf\xe9 au lait");
}

static void test_contractions(void) {
  CHECK_STR(form("What's up"), "what is up");
  CHECK_STR(form("whats up"), "what is up");
  CHECK_STR(form("what\xE2\x80\x99s up"), "what is up");
  CHECK_STR(form("I don't know"), "i do not know");
  CHECK_STR(form("i dont know"), "i do not know");
  CHECK_STR(form("can't, cannot, cant"), "can not can not can not");
  CHECK_STR(form("won't wont"), "wil not wil not");
  CHECK_STR(form("isn't it"), "is not it");
  CHECK_STR(form("I'm, you're, we've, they'll, I'd"),
            "i am you are we have they wil i would");
  CHECK_STR(form("im ive youre"), "i am i have you are");
  CHECK_STR(form("let's go"), "let us go");
  CHECK_STR(form("it's here, there's one, who's that"),
            "it is here there is one who is that");
  CHECK_STR(form("gonna wanna gotta"), "going to want to got to");
  /* words of their own stay what they are */
  CHECK_STR(form("its ill were well id lets"), "its il were wel id lets");
  /* any other apostrophe separates: possessives, elisions */
  CHECK_STR(form("steve's card"), "steve s card");
  CHECK_STR(form("l'eau d'Italie"), "l eau d italie");
  CHECK_STR(form("rock'n'roll"), "rock n rol");
  CHECK_STR(form("n't"), "n t");
  CHECK_STR(form("a'b'c'd'e'f'g'h'i'j"), "a b c d e f g h i j");
  /* an apostrophe at a word's edge is punctuation */
  CHECK_STR(form("'tis the dogs' toys'"), "tis the dogs toys");
}

static void test_numbers(void) {
  CHECK_STR(form("set an alarm for 7 am"), "set an alarm for 0 am");
  CHECK_STR(form("set an alarm for 18 am"), "set an alarm for 0 am");
  CHECK_STR(form("call 555-1234 at 7:30"), "cal 0 0 at 0 0");
  CHECK_STR(form("4pm on the 21st"), "0pm on the 0st");
  /* other digits: full width (NFKC makes them ASCII), Arabic-Indic */
  CHECK_STR(form("\xEF\xBC\x91\xEF\xBC\x92 apples"), "0 aples");
  CHECK_STR(form("\xD9\xA3\xD9\xA4 tickets"), "0 tickets");
}

static void test_repeated_letters(void) {
  CHECK_STR(form("pleeeease"), "please");
  CHECK_STR(form("address"), form("adress"));
  CHECK_STR(form("cooool!!!"), "col");
  CHECK_STR(form("bookkeeper"), "bokeper");
  /* only a character repeated next to itself */
  CHECK_STR(form("banana"), "banana");
}

int main(void) {
  RUN(test_words_case_punctuation);
  RUN(test_contractions);
  RUN(test_numbers);
  RUN(test_repeated_letters);
  cp_buf_free(&scratch_);
  cp_buf_free(&out_);
  DONE();
}
