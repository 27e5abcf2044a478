#!/usr/bin/env python3
"""Writes the body of an upgrade script from two generated install scripts.

    cargo pgrx schema pg15 -o /tmp/new.sql        # the new version's install script
    python3 scripts/upgrade_script.py tests/upgrade/pg_platform--OLD.sql /tmp/new.sql > draft.sql

Every generated block (pgrx's "connected objects") of the new script whose text is not in
the old one is printed, then the GRANTs of the new finalize block that the old one lacks,
preceded by REVOKEs from PUBLIC for the functions they name. The draft is reviewed by
hand; tests/e2e/upgrade.sh proves the result equals a fresh install.
"""
import re
import sys

old, new = (open(p).read() for p in sys.argv[1:3])
strip = lambda b: "\n".join(l for l in b.splitlines() if not l.startswith("-- src/")).strip()
old_blocks = {strip(b) for b in old.split("/* <begin connected objects> */")}
out = []
finalize = ""
for block in new.split("/* <begin connected objects> */"):
    body = strip(block.replace("/* </end connected objects> */", ""))
    if "pg_platform finalize" in block:
        finalize = body
    elif body and strip(block) not in old_blocks:
        out.append(body)
uncomment = lambda g: "\n".join(l for l in g.splitlines() if not l.strip().startswith("--")).strip()
grants = [uncomment(g) + ";" for g in finalize.split(";") if uncomment(g).startswith("GRANT EXECUTE") and uncomment(g) + ";" not in old]
for g in grants:
    funcs = re.search(r"ON FUNCTION (.*) TO", g, re.S).group(1)
    out.append(f"REVOKE EXECUTE ON FUNCTION {funcs.strip()} FROM PUBLIC;\n{g}")
print("\n\n".join(out))
