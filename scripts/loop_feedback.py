#!/usr/bin/env python3
"""The people of the reference feedback loop, played by a labelled question set.

    loop_feedback.py rate RUN_ID QUESTIONS.jsonl   rates the answers of a rag_answer run and
                                                   labels the items its run queued
    loop_feedback.py export PIPELINE               prints the training set built from the
                                                   pipeline's feedback and labels (JSON)

A STAND-IN FOR PEOPLE: `rate` knows the right source of each question from the
labelled file (lua-pipelines/data/README.md says how it was made). For each
answer it posts what a person who knows the docs would: thumbs up when the
answer's first source is the right file, thumbs down with the right file as
the feedback's label otherwise; and it labels every queued item of the run
with the right file. Everything goes through the API (POST /v1/feedback,
POST /v1/labels/{id}), with user "stand-in:labelled-set".

`export` reads back GET /v1/feedback and GET /v1/labels (labelled) of the
pipeline and turns them into [{question, sources}]: the file a label names,
or the one a piece of feedback says is right (its label; for a thumbs up,
the answer's first source). It knows nothing of the labelled file.

The API is $TRELLIS_API (http://127.0.0.1:8420 by default).
"""
import json
import os
import sys
import urllib.request

API = os.environ.get("TRELLIS_API", "http://127.0.0.1:8420").rstrip("/")
USER = "stand-in:labelled-set"


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    tok = os.environ.get("TRELLIS_TOKEN")
    if tok:
        req.add_header("Authorization", "Bearer " + tok)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def answers_of(run_id):
    return call("GET", "/v1/runs/%s" % run_id)["output"]["answer"]


def rate(run_id, qfile):
    truth = {}
    for line in open(qfile, encoding="utf-8"):
        if line.strip():
            q = json.loads(line)
            truth[q["question"]] = q["sources"]
    up = down = labelled = 0
    # The queue first: a trigger on the feedback that fires meanwhile then
    # finds the labels already given.
    items = call("GET", "/v1/labels?pipeline=rag_answer&state=queued&limit=10000")["items"]
    for it in items:
        q = it["item"].get("question") if isinstance(it["item"], dict) else None
        if it.get("run_id") == run_id and q in truth:
            call("POST", "/v1/labels/%s" % it["item_id"],
                 {"label": {"sources": truth[q]}, "user": USER})
            labelled += 1
    for i, a in enumerate(answers_of(run_id), 1):
        right = truth.get(a["question"])
        if not right:
            continue
        first = a["sources"][0]["source"] if a["sources"] else None
        good = first in right
        call("POST", "/v1/feedback", {
            "run_id": run_id, "task": "answer", "index": i, "score": 1 if good else -1,
            "label": right[0], "user": USER,
            "comment": "stand-in for a person: the right file from the labelled question set"})
        up += good
        down += not good
    print("feedback: %d up, %d down; %d queued items labelled (by %s)" % (up, down, labelled,
                                                                          USER))


def export(pipeline):
    out, questions = {}, {}
    fb = call("GET", "/v1/feedback?pipeline=%s&limit=10000" % pipeline)["feedback"]
    for f in reversed(fb):  # oldest first: newer feedback on a question wins
        run, idx = f["run_id"], f.get("index") or 0
        if run not in questions:
            try:
                questions[run] = answers_of(run)
            except Exception:  # a run that is gone: its feedback cannot say which question
                questions[run] = []
        ans = questions[run]
        if not 1 <= idx <= len(ans):
            continue
        a = ans[idx - 1]
        src = f.get("label") if f["score"] < 0 or f["score"] in (1, 2) and f.get("label") else None
        if f["score"] > 0 and not src:
            src = a["sources"][0]["source"] if a["sources"] else None
        if f.get("label") and f["score"] > 0:
            src = f["label"]
        if src:
            out[a["question"]] = {"question": a["question"], "sources": [src], "from": "feedback"}
    items = call("GET", "/v1/labels?pipeline=%s&state=labelled&limit=10000" % pipeline)["items"]
    for it in items:
        item, label = it["item"], it.get("label")
        if isinstance(item, dict) and isinstance(label, dict) and label.get("sources"):
            out[item["question"]] = {"question": item["question"], "sources": label["sources"],
                                     "from": "label"}
    json.dump(list(out.values()), sys.stdout)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "rate":
        rate(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "export":
        export(sys.argv[2])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
