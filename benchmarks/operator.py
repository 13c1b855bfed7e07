"""The tet-mesh diffusion operator alone, against SciPy's CSR matvec, under three node orderings.

A pass is y = L c for one factor (the operator `simulate` applies inside every stage); each
program applies it `passes` times inside one compiled loop, so dispatch is excluded. The mesh
is the unit cube as a Kuhn tetrahedral mesh (59^3 = 205,379 nodes at full size). Orderings:

* natural    the lattice's lexicographic numbering (the best case: a banded matrix);
* shuffled   a random permutation, as meshes from generators or files may come;
* rcm        reverse Cuthill-McKee (scipy.sparse.csgraph) of the shuffled numbering.

Both JAX layouts (`csr`: sorted edges and `segment_sum`; `padded`: a dense neighbour table) and
SciPy's CSR matvec run side by side in one process on the same matrix. The record goes to
benchmarks/results/operator-<device>-<threads>t-<time>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, pin_threads, timeit, write_record  # noqa: E402


def reordered(mesh, perm):
    """The same mesh with node i renumbered perm_inv[i] (new node k is old node perm[k])."""
    import numpy as np

    from paracrine import geometry

    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return geometry.Mesh(mesh.points[perm], inv[mesh.cells], mesh.cell_regions, mesh.region_names)


def bandwidth_of(disc) -> int:
    import numpy as np

    i, j = np.asarray(disc.edges).T
    return int(np.max(np.abs(i - j)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 16^3-node mesh, seconds")
    ap.add_argument("--n", type=int, default=None, help="nodes per edge (default 59; quick 16)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    from paracrine import geometry, solver

    n = args.n or (16 if args.quick else 59)
    base = geometry.box_mesh([0, 0, 0], [1, 1, 1], n - 1)
    rng = np.random.default_rng(0)
    shuffle = rng.permutation(base.n_nodes)
    shuffled = reordered(base, shuffle)
    d0 = geometry.discretise(shuffled)
    i, j = np.asarray(d0.edges).T
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(base.n_nodes,) * 2).tocsr()
    rcm = np.asarray(reverse_cuthill_mckee(graph + graph.T, symmetric_mode=True))
    meshes = {"natural": base, "shuffled": shuffled, "rcm": reordered(shuffled, rcm)}
    rows = []
    print(f"tet mesh {base.n_nodes} nodes, {base.n_cells} cells, {args.passes} passes per program, float32")
    for name, mesh in meshes.items():
        disc = geometry.discretise(mesh)
        bw = bandwidth_of(disc)
        x = np.cos(3.0 * mesh.points[:, 0]) * np.cos(2.0 * mesh.points[:, 1])
        for layout in ("csr", "padded"):
            model = solver.Model(disc, layout=layout)
            space = model.space
            g = space.conductances(jnp.full((1, 1), 1e-3, jnp.float32))
            c = jnp.asarray(x[None], jnp.float32)
            prog = jax.jit(lambda u: jax.lax.fori_loop(0, args.passes, lambda k, v: v + 0.1 * space.apply(v, g), u))
            first, t = timeit(lambda: prog(c).block_until_ready(), repeat=args.repeat)
            rows.append({"ordering": name, "impl": f"jax {layout}", "bandwidth": bw, "ms_per_pass": 1e3 * t / args.passes,
                         "compile_s": first - t})
            print(f"  {name:<9} bandwidth {bw:>7}  jax {layout:<7} {rows[-1]['ms_per_pass']:7.3f} ms per pass", flush=True)
        # SciPy: the same operator as a CSR matrix L = -M^-1 K, same update, float32
        e_i, e_j = np.asarray(disc.edges).T
        w = np.asarray(disc.couplings).sum(axis=1) * 1e-3 / np.asarray(disc.mass)[e_i]
        wj = np.asarray(disc.couplings).sum(axis=1) * 1e-3 / np.asarray(disc.mass)[e_j]
        N = base.n_nodes
        off = sp.coo_matrix((np.concatenate([w, wj]), (np.concatenate([e_i, e_j]), np.concatenate([e_j, e_i]))), shape=(N, N))
        L = (off - sp.diags(np.asarray(off.sum(axis=1)).ravel())).tocsr().astype(np.float32)
        L.sort_indices()
        v0 = x.astype(np.float32)

        def scipy_loop():
            v = v0.copy()
            for _ in range(args.passes):
                v += 0.1 * (L @ v)
            return v

        first, t = timeit(scipy_loop, repeat=args.repeat)
        rows.append({"ordering": name, "impl": "scipy csr", "bandwidth": bw, "ms_per_pass": 1e3 * t / args.passes})
        print(f"  {name:<9} bandwidth {bw:>7}  scipy csr   {rows[-1]['ms_per_pass']:7.3f} ms per pass", flush=True)
        # the two give the same result (the JAX csr program against SciPy's loop)
        model = solver.Model(disc, layout="csr")
        g = model.space.conductances(jnp.full((1, 1), 1e-3, jnp.float32))
        ref = scipy_loop()
        got = np.asarray(jax.jit(lambda u: jax.lax.fori_loop(0, args.passes, lambda k, v: v + 0.1 * model.space.apply(v, g), u))(
            jnp.asarray(x[None], jnp.float32)))[0]
        rows[-1]["max_rel_diff_vs_jax"] = float(np.abs(got - ref).max() / np.abs(ref).max())
    by = {(r["ordering"], r["impl"]): r["ms_per_pass"] for r in rows}
    ratio = {o: by[(o, "scipy csr")] / min(by[(o, "jax csr")], by[(o, "jax padded")]) for o in meshes}
    for o, r in ratio.items():
        print(f"  {o:<9} best JAX layout is {r:.2f}x SciPy's speed")
    write_record("operator", {"quick": args.quick, "environment": environment(), "nodes": base.n_nodes,
                              "cells": base.n_cells, "passes": args.passes, "rows": rows,
                              "jax_speed_relative_to_scipy": ratio}, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
