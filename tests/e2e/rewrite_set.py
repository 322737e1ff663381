#!/usr/bin/env python3
"""The near-duplicate evaluation set: real utterances from CLINC150 (read
from ../shared, never copied into the tree) and rewrites of them of the
kinds people make when they write "the same example" again, generated here
deterministically. Used by tests/e2e/test_near_quality.py (which pins the
precision and recall) and bench/neardup/quality.py (which prints the table
of docs/near-and-semantic-dedupe.md).

Two sets, each self-contained:
  single   700 true pairs (source, one rewrite), 100 of each kind
  stacked  700 true pairs (source, 2 or 3 rewrites of different kinds)
Each set also holds 700 negative pairs: two different utterances of the
same CLINC150 intent. Every two texts of a set that are not a (source,
rewrite) pair are different examples (see distinct), so a pair found
among them is a false positive.

Rewrite kinds: contraction (either way, sometimes without the apostrophe),
typo (a swap, a dropped, doubled, wrong or extra letter), punctuation and
case, polite prefix or suffix, dropped word, synonym swap, clause order.

usage: rewrite_set.py OUT_DIR [--shared DIR] [--seed 18]
  writes OUT_DIR/single.jsonl, OUT_DIR/stacked.jsonl (one {"id", "text",
  "intent"} a line) and OUT_DIR/truth.json ({set: {"pairs": [[id, id,
  kind], ...], "negatives": [[id, id], ...]}}).
"""
import argparse
import json
import os
import random
import re

KINDS = ["contraction", "typo", "punctuation", "polite", "drop", "synonym", "clause"]
PER_KIND = 100
NEGATIVES = 700

# expanded form -> contracted form; the contracted form loses its
# apostrophe only where that leaves no other English word ("its", "ill",
# "were" and "well" are words of their own)
CONTRACTIONS = [
    ("what is", "what's"), ("it is", "it's"), ("that is", "that's"), ("there is", "there's"),
    ("where is", "where's"), ("who is", "who's"), ("how is", "how's"), ("i am", "i'm"),
    ("you are", "you're"), ("we are", "we're"), ("they are", "they're"), ("i have", "i've"),
    ("i would", "i'd"), ("i will", "i'll"), ("you will", "you'll"), ("do not", "don't"),
    ("does not", "doesn't"), ("did not", "didn't"), ("can not", "can't"), ("cannot", "can't"),
    ("is not", "isn't"), ("are not", "aren't"), ("was not", "wasn't"), ("will not", "won't"),
    ("would not", "wouldn't"), ("should not", "shouldn't"), ("could not", "couldn't"),
    ("have not", "haven't"), ("has not", "hasn't"), ("let us", "let's"),
]
KEEP_APOSTROPHE = {"it's", "i'd", "i'll", "we're", "we'll", "he'll", "she'll", "let's", "who's"}

POLITE_PREFIX = ["please", "please,", "can you", "could you", "could you please", "would you please",
                 "can you please", "hey,", "hi,", "hello,", "excuse me,", "quick question,", "hey there,",
                 "i was wondering,", "ok so", "um,"]
POLITE_SUFFIX = ["please", ", please", "thanks", "thank you", "thanks a lot", "thx", "if you can",
                 "for me please", "thank you so much", "please and thank you", "if possible", "pls"]

# a word or phrase -> what people write instead
SYNONYMS = {
    "tell me": "let me know", "want": "would like", "need": "want", "buy": "purchase",
    "purchase": "buy", "find": "locate", "show": "display", "help": "assist", "car": "vehicle",
    "start": "begin", "begin": "start", "stop": "end", "cancel": "call off", "book": "reserve",
    "phone": "cell", "quick": "fast", "big": "large", "get": "obtain", "how much": "what amount",
    "money": "cash", "current": "present", "change": "modify", "update": "change", "remove": "delete",
    "delete": "remove", "add": "put", "call": "ring", "song": "track", "movie": "film", "trip": "journey",
    "vacation": "holiday", "holiday": "vacation", "meeting": "appointment", "appointment": "meeting",
    "reminder": "alert", "alarm": "alert", "price": "cost", "cost": "price", "know": "find out",
    "right now": "now", "amount": "sum", "bill": "invoice", "pay": "settle", "account": "acct",
    "lost": "misplaced", "reservation": "booking", "flight": "plane ticket", "make": "create",
    "give": "provide", "see": "view", "list": "rundown", "search": "look", "say": "tell",
    "please": "kindly", "what": "which", "tomorrow": "tmrw", "tonight": "this evening", "today": "now",
    "use": "utilize", "go": "head", "fix": "repair", "check": "look at", "send": "transfer",
    "rate": "ratio", "job": "work", "restaurant": "place to eat", "number": "digits", "is": "'s",
}

FUNCTION_WORDS = {"the", "a", "an", "my", "me", "please", "just", "for", "of", "to", "that", "really",
                  "you", "can", "i", "do", "is", "some", "any", "your", "now", "so", "up", "it"}

CLAUSE_SPLIT = [", ", " and ", " but ", " because ", " so ", " if ", " when ", " since ", " while "]
MOVABLE = {"in", "on", "for", "at", "from", "with", "by", "before", "after", "during", "tomorrow", "today",
           "tonight", "around", "near", "without", "within"}

KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def neighbours(c):
    for r, row in enumerate(KEYBOARD):
        i = row.find(c)
        if i >= 0:
            out = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            for rr in (r - 1, r + 1):
                if 0 <= rr < len(KEYBOARD) and i < len(KEYBOARD[rr]):
                    out.append(KEYBOARD[rr][i])
            return out
    return [c]


def canonical(text):
    """The key under which two sources count as one text: lowercase,
    contractions expanded, numbers alike ("timer for 5 minutes" and "timer
    for 35 minutes" teach a model the same thing), punctuation gone."""
    t = text.lower().replace("\u2019", "'")
    for full, short in CONTRACTIONS:
        t = re.sub(r"\b%s\b" % re.escape(short), full, t)
        if short not in KEEP_APOSTROPHE:
            t = re.sub(r"\b%s\b" % short.replace("'", ""), full, t)
    t = re.sub(r"n't\b", " not", t)
    for short, full in (("'re", " are"), ("'m", " am"), ("'ve", " have"), ("'ll", " will"), ("'d", " would")):
        t = t.replace(short, full)
    t = re.sub(r"[0-9]+", "0", t)
    return " ".join(re.findall(r"[a-z0-9]+", t))


def word_distance(a, b):
    """Edits of whole words (insert, delete, replace) from a to b."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def distinct(key, others):
    """Whether a text is a different example from each of others (canonical
    keys): they share fewer than two thirds of their distinct words, and
    the words of one in order differ from the other's in more than a third
    of them (counting whole words put in, left out or replaced). That is
    farther apart than one rewrite of this set takes a text. CLINC150 has
    near copies of its own ("i lost my card, what do i do" / "my card is
    lost what do i do", "set a timer for 35 minutes" / "timer for 5
    minutes"): a set that held both would count finding them as a false
    positive."""
    w = key.split()
    ws = set(w)
    for o in others:
        ow = o.split()
        os_ = set(ow)
        if len(ws & os_) * 3 >= 2 * len(ws | os_):
            return False
        most = max(1, len(w), len(ow)) / 3
        if abs(len(w) - len(ow)) <= most and word_distance(w, ow) <= most:
            return False
    return True


def sub_once(text, phrase, by, rng):
    spots = [m.start() for m in re.finditer(r"(?<![\w'])%s(?![\w'])" % re.escape(phrase), text)]
    if not spots:
        return None
    at = rng.choice(spots)
    return text[:at] + by + text[at + len(phrase):]


def contraction(text, rng):
    options = []
    for full, short in CONTRACTIONS:
        for a, b in ((full, short), (short, full)):
            if re.search(r"(?<![\w'])%s(?![\w'])" % re.escape(a), text):
                if b == short and short not in KEEP_APOSTROPHE and rng.random() < 0.4:
                    b = short.replace("'", "")
                options.append((a, b))
    if not options:
        return None
    a, b = rng.choice(options)
    return sub_once(text, a, b, rng)


def typo(text, rng):
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not spots:
        return None
    i = rng.choice(spots)
    w = words[i]
    k = rng.randrange(1, len(w) - 1)
    op = rng.randrange(5)
    if op == 0:
        w = w[:k] + w[k + 1] + w[k] + w[k + 2:]
    elif op == 1:
        w = w[:k] + w[k + 1:]
    elif op == 2:
        w = w[:k] + w[k] + w[k:]
    elif op == 3:
        w = w[:k] + rng.choice(neighbours(w[k])) + w[k + 1:]
    else:
        w = w[:k] + rng.choice(neighbours(w[k])) + w[k:]
    if w == words[i]:
        return None
    words[i] = w
    return " ".join(words)


def punctuation(text, rng):
    t = text
    if rng.random() < 0.7:
        t = t[:1].upper() + t[1:]
    if rng.random() < 0.3:
        t = re.sub(r"\bi\b", "I", t)
    for sep in (" and ", " but ", " because ", " so "):
        if sep in t and rng.random() < 0.5:
            t = t.replace(sep, "," + sep, 1)
            break
    t = t.rstrip("?.!")
    q = re.match(r"(what|how|when|where|who|why|which|can|could|is|are|do|does|will|would|should)\b",
                 t, re.I)
    t += rng.choice(["?", "??", "?!"] if q else [".", "!", "!!", " ..."])
    return t if t != text else None


def polite(text, rng):
    first = text.split(" ", 1)[0]
    last = text.rsplit(" ", 1)[-1]
    if rng.random() < 0.5 and first not in ("please", "can", "could", "would"):
        return rng.choice(POLITE_PREFIX) + " " + text
    if last in ("please", "thanks"):
        return None
    sfx = rng.choice(POLITE_SUFFIX)
    return text + ("" if sfx.startswith(",") else " ") + sfx


def drop(text, rng):
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w in FUNCTION_WORDS]
    if len(words) >= 7 and (not spots or rng.random() < 0.3):
        spots = list(range(1, len(words)))
    if len(words) < 4 or not spots:
        return None
    del words[rng.choice(spots)]
    return " ".join(words)


def synonym(text, rng):
    options = [(a, b) for a, b in SYNONYMS.items()
               if re.search(r"(?<![\w'])%s(?![\w'])" % re.escape(a), text)]
    if not options:
        return None
    a, b = rng.choice(options)
    t = sub_once(text, a, b, rng)
    return t.replace(" 's", "'s") if t else None


def clause(text, rng):
    for sep in CLAUSE_SPLIT:
        if sep in text:
            a, b = text.split(sep, 1)
            if len(a.split()) < 2 or len(b.split()) < 2:
                continue
            if sep.strip() in ("and", "but", ","):
                return b + sep + a
            return sep.strip() + " " + b + ", " + a
    words = text.split(" ")
    for i in range(len(words) - 1, 2, -1):
        if words[i] in MOVABLE and len(words) - i <= 4:
            return " ".join(words[i:]) + " " + " ".join(words[:i])
    return None


REWRITE = {"contraction": contraction, "typo": typo, "punctuation": punctuation, "polite": polite,
           "drop": drop, "synonym": synonym, "clause": clause}


def stacked(text, rng):
    kinds = rng.sample(KINDS, rng.choice((2, 3)))
    # punctuation last: the other rewrites read lowercase text
    kinds.sort(key=lambda k: k == "punctuation")
    t = text
    for k in kinds:
        r = REWRITE[k](t, rng)
        if r is None:
            return None, None
        t = r
    return t, "+".join(kinds)


def load(shared):
    with open(os.path.join(shared, "data", "clinc150", "data_full.json"), encoding="utf-8") as f:
        data = json.load(f)
    return sorted({(u, i) for u, i in data["train"]})


def build_set(utterances, rng, kind_of):
    """kind_of(text, rng, need) -> (rewrite, kind) or (None, None), need
    being the rewrites still wanted of each kind; returns the records and
    the truth of one set."""
    pool = utterances[:]
    rng.shuffle(pool)
    keys, records = set(), []
    chosen = {}  # intent -> canonical keys of the texts taken
    pairs, negatives = [], []
    need = {k: PER_KIND for k in KINDS}

    def record(text, intent):
        records.append({"id": len(records) + 1, "text": text, "intent": intent})
        return len(records)

    waiting = {}  # intent -> a text waiting for the other half of a negative pair
    for text, intent in pool:
        if len(negatives) == NEGATIVES:
            break
        if len(text.split()) < 3:
            continue
        key = canonical(text)
        taken = chosen.setdefault(intent, [])
        if key in keys or not distinct(key, taken):
            continue
        if len(pairs) < PER_KIND * len(KINDS):
            rewrite, kind = kind_of(text, rng, need)
            if rewrite is None or rewrite == text:
                continue
            rkey = canonical(rewrite)
            if rkey != key and (rkey in keys or not distinct(rkey, taken)):
                continue
            keys.update((key, rkey))
            taken.extend((key, rkey))
            pairs.append([record(text, intent), record(rewrite, intent), kind])
            if kind in need:
                need[kind] -= 1
        else:
            keys.add(key)
            taken.append(key)
            if intent in waiting:
                negatives.append([record(waiting.pop(intent), intent), record(text, intent)])
            else:
                waiting[intent] = text
    order = list(range(len(records)))
    rng.shuffle(order)
    return [records[i] for i in order], {"pairs": pairs, "negatives": negatives}


def single_kind(text, rng, need):
    for k in sorted(need, key=lambda k: (-need[k], KINDS.index(k))):
        if need[k] == 0:
            break
        r = REWRITE[k](text, rng)
        if r is not None and r != text:
            return r, k
    return None, None


def stacked_kind(text, rng, need):
    return stacked(text, rng)


def build(shared, seed=18):
    utterances = load(shared)
    single = build_set(utterances, random.Random(seed), single_kind)
    stack = build_set(utterances, random.Random(seed + 1), stacked_kind)
    return {"single": single, "stacked": stack}


def write(out_dir, sets):
    os.makedirs(out_dir, exist_ok=True)
    truth = {}
    for name, (records, t) in sets.items():
        with open(os.path.join(out_dir, name + ".jsonl"), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        truth[name] = t
    with open(os.path.join(out_dir, "truth.json"), "w", encoding="utf-8") as f:
        json.dump(truth, f)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.environ.get("COGPIPE_SOURCE_DIR", os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--shared", default=os.environ.get("COGPIPE_SHARED_DIR", os.path.join(src, "..", "shared")))
    ap.add_argument("--seed", type=int, default=18)
    a = ap.parse_args()
    write(a.out, build(a.shared, a.seed))


if __name__ == "__main__":
    main()
