#!/usr/bin/env python3
"""Turns a pgbench script of bench/pgbench into input for `postgres --single` (bench/instructions):
one PREPARE of its statement, with each `\\set NAME random(A, B)` a parameter, then N EXECUTEs
with the random values pgbench would draw (a fixed seed, so every run counts the same calls).
The refresh interval the scripts pass (60 s) is raised so that no call slides its session.

usage: instructions.py SCRIPT N
"""
import random
import re
import sys

path, calls = sys.argv[1], int(sys.argv[2])
random.seed(13)
params, body = [], []
for line in open(path):
    text = line.strip()
    if text.startswith("\\set"):
        _, name, expr = text.split(None, 2)
        low, high = map(int, re.fullmatch(r"random\((\d+),\s*(\d+)\)", expr).groups())
        params.append((name, low, high))
    elif text and not text.startswith("--"):
        body.append(re.sub(r"\s--.*$", "", text))
statement = " ".join(body).rstrip(";")
# The longest names first, so that :d never rewrites part of :dd.
for index, (name, _, _) in sorted(enumerate(params), key=lambda p: -len(p[1][0])):
    statement = re.sub(r":%s\b" % name, "$%d::int" % (index + 1), statement)
statement = re.sub(r"(?<!\d)60::bigint", "1000000000::bigint", statement, count=1)
types = ",".join("int" for _ in params)
print(f"PREPARE q({types}) AS {statement};")
for _ in range(calls):
    values = ",".join(str(random.randint(low, high)) for _, low, high in params)
    print(f"EXECUTE q({values});")
