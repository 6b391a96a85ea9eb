#!/usr/bin/env python3
"""Builds the labelled question set of the reference feedback loop over docs/.

    python3 scripts/make_loop_questions.py [--docs docs] [--out lua-pipelines/data]

writes loop_train.jsonl and loop_heldout.jsonl (lua-pipelines/data/README.md
says how the questions are made and what they are worth). Deterministic: the
same docs/ give the same files, byte for byte.
"""
import argparse
import hashlib
import json
import os
import random
import re

STOP = set("""a about above after again against all also always an and any are as at be because
been before being below between both but by can cannot could did do does doing done down during
each either else etc every few for from further get gets given gives had has have having here how
if in into is it its itself just less let like made make makes many may might more most much must
no nor not now of off on once one only or other others our out over own per same several shall
should so some such than that the their them then there these they this those through thus to
too under until up upon us use used uses using very via was way we well were what when where
whether which while who whom whose why will with within without would yet you your it's don't
instead rather first second new next last both each any""".split())

PER_FILE = 40        # questions drawn at most from one file
DROP_RAREST = 3      # the rarest words of a sentence a question leaves out
KEEP = 4             # words a question keeps at most
SEED = "trellis-loop-questions-1"


def clean(text):
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)   # links: their text
    text = re.sub(r"[`*_]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def sections(path):
    """(heading, [paragraph, ...]) of a markdown file, code blocks and tables left out."""
    out, heading, para, fence = [], "", [], False
    cur = []

    def flush():
        if para:
            cur.append(" ".join(para))
            para.clear()

    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.rstrip("\n")
            if s.lstrip().startswith("```"):
                fence = not fence
                flush()
                continue
            if fence:
                continue
            m = re.match(r"^(#{1,6})\s+(.*)$", s)
            if m:
                flush()
                if cur:
                    out.append((heading, cur))
                heading, cur = clean(m.group(2)), []
                continue
            if not s.strip() or s.lstrip().startswith("|"):
                flush()
                continue
            s = re.sub(r"^\s*([-*]|\d+\.)\s+", "", s)
            para.append(s.strip())
    flush()
    if cur:
        out.append((heading, cur))
    return out


def words(text):
    return [w for w in re.findall(r"[a-z][a-z0-9_]+", text.lower()) if len(w) >= 3 and w not in STOP]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--out", default="lua-pipelines/data")
    a = ap.parse_args()
    files = sorted(f for f in os.listdir(a.docs) if f.endswith(".md"))
    cands, df, nsec = {}, {}, 0
    for name in files:
        for heading, paras in sections(os.path.join(a.docs, name)):
            nsec += 1
            for w in set(words(" ".join(paras))):
                df[w] = df.get(w, 0) + 1
            for p in paras:
                for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z(])", clean(p)):
                    n = len(sent.split())
                    if 10 <= n <= 60 and sent.endswith((".", "!", "?", ":")):
                        cands.setdefault(name, []).append((heading, sent))
    rng = random.Random(SEED)
    train, held = [], []
    for name in files:
        pool = cands.get(name, [])
        rng.shuffle(pool)
        n = 0
        for heading, sent in pool:
            ws = list(dict.fromkeys(words(sent)))
            if len(ws) < 5:
                continue
            # Leave out the rarest words: a person asking seldom knows the
            # exact term the page uses, and a question made of the page's own
            # rarest words is found by any lexical search.
            rare = sorted(ws, key=lambda w: (df.get(w, 0), w))[:DROP_RAREST]
            kept = [w for w in ws if w not in rare][:KEEP]
            if len(kept) < 3:
                continue
            n += 1
            qid = "%s:%03d" % (name[:-3], n)
            q = {"id": qid, "question": " ".join(kept) + "?", "answer": sent,
                 "sources": [name], "sections": ["%s#%s" % (name, heading)]}
            # The split rule: a third held out, by a hash of the id.
            if int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) % 3 == 0:
                held.append(q)
            else:
                train.append(q)
            if n >= PER_FILE:
                break
    for fname, rows in (("loop_train.jsonl", train), ("loop_heldout.jsonl", held)):
        with open(os.path.join(a.out, fname), "w", encoding="utf-8") as f:
            for q in rows:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")
    print("%d train, %d held out, from %d files (%d sections)" % (len(train), len(held),
                                                                 len(files), nsec))


if __name__ == "__main__":
    main()
