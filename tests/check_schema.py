#!/usr/bin/env python3
"""The graph schema: the committed graphs/weft.schema.json is what `weft schema` prints, every
graph in graphs/ names it and validates against it (the plugin's graph against the schema
made with its plugin), and mistakes the loader refuses are refused by the schema too.

Usage: check_schema.py WEFT_BINARY SOURCE_DIR EXAMPLE_PLUGIN"""
import glob
import json
import os
import subprocess
import sys

import jsonschema

weft, source, plugin = sys.argv[1:4]
failures = []


def schema(*args):
    return json.loads(subprocess.run([weft, "schema", *args], check=True,
                                     capture_output=True, text=True).stdout)


printed = schema()
committed_path = os.path.join(source, "graphs", "weft.schema.json")
with open(committed_path) as f:
    if json.load(f) != printed:
        failures.append("graphs/weft.schema.json differs from what `weft schema` prints: "
                        "run `weft schema > graphs/weft.schema.json`")

jsonschema.Draft202012Validator.check_schema(printed)
plain = jsonschema.Draft202012Validator(printed)
with_plugin = jsonschema.Draft202012Validator(schema("--plugin", plugin))

graphs = sorted(glob.glob(os.path.join(source, "graphs", "*.json")) +
                glob.glob(os.path.join(source, "graphs", "sources", "*.json")))
graphs = [g for g in graphs if not g.endswith("weft.schema.json")]
assert len(graphs) > 40, graphs
for path in graphs:
    with open(path) as f:
        g = json.load(f)
    name = os.path.relpath(path, source)
    want = "../weft.schema.json" if "/sources/" in path else "weft.schema.json"
    if g.get("$schema") != want:
        failures.append(f"{name}: \"$schema\" should be \"{want}\"")
    v = with_plugin if g.get("requires") else plain
    for e in v.iter_errors(g):
        failures.append(f"{name}: /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}")

# Mistakes: each must be refused by the schema as by the loader.
with open(os.path.join(source, "graphs", "mlp_gan.json")) as f:
    good = json.load(f)


def mutated(change):
    g = json.loads(json.dumps(good))
    change(g)
    return g


mistakes = {
    "an unknown top-level key": lambda g: g.update(trian={}),
    "an unknown op": lambda g: g["nets"]["G"]["layers"][0].update(op="linaer"),
    "an unknown attribute": lambda g: g["nets"]["G"]["layers"][0].update(unit=3),
    "an attribute of the wrong type": lambda g: g["nets"]["G"]["layers"][0].update(units="many"),
    "a negative size": lambda g: g["nets"]["G"]["layers"][0].update(units=-2),
    "a choice not offered": lambda g: g["train"]["phases"][0]["optimizer"].update(adamw={}),
    "a phase without a loss": lambda g: g["train"]["phases"][0].pop("minimize"),
    "an unknown noise setting": lambda g: g["inputs"]["z"]["from"]["normal"].update(sd=1),
}
for what, change in mistakes.items():
    if plain.is_valid(mutated(change)):
        failures.append(f"the schema accepts {what}")

for f in failures:
    print("FAIL", f)
print(f"{len(graphs)} graphs, {len(mistakes)} mistakes checked; {len(failures)} failures")
sys.exit(1 if failures else 0)
