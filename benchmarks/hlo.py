"""Operations per step: the compiled program of `paracrine run`'s time loop on the default scenario,
counted from XLA's optimised HLO (`jax.jit(...).lower(...).compile().as_text()`).

    python benchmarks/hlo.py [--quick] [--out DIR] [--json-only]

A step's cost on a small mesh is dominated by how many kernels it launches (dispatch), not by
arithmetic. This counts, in each `while` loop of the program (the loop over steps, RKL2's stage loop,
TR-BDF2's CG loops), the kernel-level instructions of its body: fusions, reductions, gathers,
scatters, custom calls, copies and other non-fused operations, not parameters, constants, tuples,
bitcasts or get-tuple-element (which launch nothing). Nested loops are counted apart, with their trip
counts where XLA knows them; a step then launches its body's kernels plus, for each nested loop,
trips x that loop's kernels.

Programs counted, each STEPS fixed steps of 60 s in one save interval with the budget and the exposure
accumulator on, as in `paracrine run`:
  rkl2    fixed 60 s RKL2 steps (the default before error control),
  trbdf2  one TR-BDF2 step (the error-controlled default uses it with its embedded estimate).
The same script runs on earlier versions of the code (it uses only `simulate`'s keywords that have
not changed), which is how the before / after counts in benchmarks/README.md were taken.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_record  # noqa: E402

#: fixed steps in the counted program: a loop of this trip count is the step loop (factor and stage loops
#: have other counts here: 2 factors, RKL2's s - 1 stages)
STEPS = 5
TRIVIAL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier",
           "partition-id", "replica-id", "iota"}
_COMP = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_OP = re.compile(r"[\]\}\)] ([a-z][\w\-]*)\(")


def parse(text: str) -> dict:
    """{computation: [(opcode, line)]} of an HLO module's text."""
    comps, cur = {}, None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m and not line[:1].isspace():
            cur = m.group(2)
            comps[cur] = []
            continue
        if line.strip() == "}":
            cur = None
            continue
        if cur is None or "=" not in line:
            continue
        rhs = line.split("=", 1)[1]
        op = _OP.search(rhs)
        if op:
            comps[cur].append((op.group(1), line))
    return comps


def loops(text: str) -> list[dict]:
    """Each while loop: its body's kernel count (nested loops and conditionals counted as one
    instruction, their own kernels apart), opcode histogram, trip count, and nesting depth."""
    comps = parse(text)
    bodies, children = {}, defaultdict(list)
    for name, instrs in comps.items():
        for op, line in instrs:
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                trip = re.search(r'known_trip_count[^0-9]*"?n"?\s*:\s*"?(\d+)', line)
                bodies[body] = int(trip.group(1)) if trip else None
                children[name].append(body)
            elif op in ("conditional", "call"):
                for callee in re.findall(r"(?:branch_computations=\{|true_computation=|false_computation=|"
                                         r"to_apply=)%?([\w.\-]+)", line):
                    children[name].append(callee)
                for callee in re.findall(r"branch_computations=\{([^}]*)\}", line):
                    children[name] += [c.strip().lstrip("%") for c in callee.split(",")]

    def kernels(name, seen=()):
        """Kernel instructions of a computation, through conditionals and calls but not nested loops."""
        hist = Counter(op for op, _ in comps.get(name, ()) if op not in TRIVIAL)
        for callee in children.get(name, ()):
            if callee not in bodies and callee not in seen and callee in comps:
                hist += kernels(callee, seen + (name,))
        return hist

    parent = {b: p for p, cs in children.items() for b in cs}

    def depth(name):
        d, n = 0, name
        while n in parent:
            n = parent[n]
            d += n in bodies
        return d

    out = []
    for body, trip in bodies.items():
        hist = kernels(body)
        nested = [b for b in _descendant_loops(body, children, bodies)]
        out.append({"body": body, "depth": depth(body), "trip_count": trip, "kernels": int(sum(hist.values())),
                    "by_opcode": dict(hist.most_common()), "nested_loops": nested})
    return sorted(out, key=lambda r: (r["depth"], r["body"]))


def _descendant_loops(name, children, bodies, seen=()):
    for c in children.get(name, ()):
        if c in seen:
            continue
        if c in bodies:
            yield c
        else:
            yield from _descendant_loops(c, children, bodies, seen + (name,))


def program(method: str, quick: bool):
    import jax
    import numpy as np

    from paracrine import solver
    from paracrine import scenario as sc
    from paracrine.build import _region_share, build

    text = sc.default_text()
    if quick:
        text = text.replace('mesh_size = "0.4 mm"', 'mesh_size = "0.9 mm"')
    built = build(sc.loads(text))
    model, params = built.model, built.params
    W = _region_share(built.disc) * np.asarray(built.disc.mass)[:, None]
    exposure = solver.Exposure(W, np.full(model.n_factors, 1.0))
    dt = 60.0
    stepper = solver.plan(model, params, dt=dt, method=method) if method == "rkl2" else method

    def run(p):
        sol = solver.simulate(model, p, t_end=STEPS * dt, dt=dt, save_at=[STEPS * dt], method=stepper, budget=True,
                              metrics=exposure)
        return sol.final, sol.budget, sol.metrics

    compiled = jax.jit(run).lower(params).compile()
    return compiled.as_text(), int(np.prod(model.state_shape)), repr(stepper)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a coarse mesh (the counts do not depend on its size)")
    ap.add_argument("--methods", default="rkl2,trbdf2")
    ap.add_argument("--label", default="", help="a label for the record (e.g. the code version counted)")
    ap.add_argument("--out", help="folder for the JSON record (default benchmarks/results)")
    args = ap.parse_args(argv)
    rows = {}
    for method in args.methods.split(","):
        text, size, stepper = program(method, args.quick)
        ls = loops(text)
        by_body = {r["body"]: r for r in ls}

        def per_step(r):
            """Kernels a pass of this loop body launches, its nested loops with known trips included."""
            total, unknown = r["kernels"], []
            for b in r["nested_loops"]:
                sub, unk = per_step(by_body[b])
                trips = by_body[b]["trip_count"]
                if trips is None:
                    unknown.append((b, sub))
                else:
                    total += trips * sub
                unknown += unk
            return total, unknown

        step_loop = next((r for r in ls if r["trip_count"] == STEPS and r["depth"] == 0), None)
        total, unknown = per_step(step_loop) if step_loop else (None, [])
        rows[method] = {"stepper": stepper, "state_size": size, "loops": ls,
                        "step_loop": None if step_loop is None else step_loop["body"],
                        "kernels_per_step": total,
                        "kernels_per_iteration_of_data_dependent_loops": {b: k for b, k in unknown},
                        "program_instructions": sum(1 for line in text.splitlines() if " = " in line)}
        print(f"{method}: {stepper}")
        for r in ls:
            trip = "?" if r["trip_count"] is None else r["trip_count"]
            top = ", ".join(f"{k} {v}" for k, v in list(r["by_opcode"].items())[:5])
            print(f"  {'  ' * r['depth']}loop {r['body']} (trips {trip}): {r['kernels']} kernels ({top})")
        print(f"  kernels per step: {total}" + (f" + per CG iteration {[k for _, k in unknown]}" if unknown else ""))
    record = {"benchmark": "hlo", "label": args.label, "quick": args.quick, "environment": environment(),
              "rows": rows}
    path = write_record("hlo", record, args.out)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
