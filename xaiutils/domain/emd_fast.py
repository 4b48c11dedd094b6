"""Fast exact EMD on a pixel grid, with a per-map optimality certificate (POT remains the fallback).

The problem: sources are the ``n`` pixels holding map mass ``a``, sinks the ``m`` pixels holding mask mass ``b``
(``m`` is a few hundred, ``n`` up to H·W), the ground cost is the Euclidean pixel distance. Because all pixels lie on
an integer grid, every cost ``c_ij`` is one entry of a small table indexed by the offset (Δrow, Δcol), computed
with :func:`scipy.spatial.distance.cdist` (the same formula, and the same bits, as the supports' cost matrix that
POT is given); the ``n × m`` cost matrix is never stored.

Solver: successive shortest paths (a primal–dual method) on the bipartite transport graph.

1. Sink prices ``v`` come from the same solve on the grid pooled 2×2 (recursively, down to a small grid), lifted to
   the fine sinks. Source prices are their c-transform ``u_i = min_j (c_ij − v_j)``, which makes every reduced
   cost ``c_ij − u_i − v_j`` non-negative, and each source sends all its mass to a sink where its reduced cost is
   zero. Sources are then balanced; sinks hold excesses and deficits.
2. Repeatedly, Dijkstra on the residual graph (reduced costs; arcs back along positive flows cost zero) from all
   sinks with excess finds a shortest path to a sink with a deficit; the prices of the nodes it settled are
   updated (keeping every reduced cost non-negative and those on positive flows zero) and flow is pushed along
   the path. When no excess is left the flow is optimal.
3. Certificate, over **all** source × sink pairs, from the final prices: the smallest reduced cost
   ``min_ij (c_ij − u_i − v_j)`` must be at least ``−1e-12 · max c``, the flow must meet both marginals, and the
   primal–dual gap ``Σ x c − (Σ a u + Σ b v)`` must be at most ``1e-9``, both for the solver's ``u`` and for the
   c-transform of ``v`` (which is dual feasible by construction, so its gap bounds the error of the cost
   rigorously). Only a certified solve is reported as exact; anything else goes back to POT.

numba compiles the loops; without numba this module reports itself unavailable and the caller uses POT.

One module of about 500 lines, on purpose: it is one algorithm whose compiled kernels (heap, solver, certificate)
call each other and are compiled together; it is opt-in (numba is not pinned) and documented in issue 13's note.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

try:  # pragma: no cover - exercised through AVAILABLE
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover
    AVAILABLE = False

    def njit(*args, **kwargs):
        def wrap(function):
            return function
        return wrap if not args or not callable(args[0]) else args[0]

REDUCED_COST_TOLERANCE = 1e-12  # relative to the largest cost
GAP_TOLERANCE = 1e-9  # absolute, in pixels of the grid
MARGINAL_TOLERANCE = 1e-12  # absolute, on masses that sum to 1
COARSEST_PIXELS = 16 * 16  # below this many pixels the multiscale start stops and starts from zero prices
STATUS = {0: "optimal", 1: "iteration limit reached", 2: "no augmenting path (numerical trouble)",
          3: "pricing rounds exhausted"}


def offset_cost_table(height: int, width: int) -> np.ndarray:
    """``T[dr + H − 1, dc + W − 1]`` = Euclidean length of the offset (dr, dc), via ``cdist`` like the supports."""
    rows, cols = np.meshgrid(np.arange(-(height - 1), height), np.arange(-(width - 1), width), indexing="ij")
    offsets = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    return np.ascontiguousarray(cdist(offsets, np.zeros((1, 2))).reshape(2 * height - 1, 2 * width - 1))


@njit(cache=True)
def _grow(array, size):
    bigger = np.empty(size, array.dtype)
    bigger[:array.size] = array
    return bigger


@njit(cache=True)
def _place(heap, position, at, node):
    """Put ``node`` at heap slot ``at`` and record where it is."""
    heap[at] = node
    position[node] = at


@njit(cache=True)
def _heap_push(heap, position, size, key, node):
    """Insert ``node`` or lower its key in the indexed binary heap (``position[node]`` = −1 when absent)."""
    at = position[node]
    if at == -1:
        at = size
        size += 1
    while at > 0 and key[heap[(at - 1) // 2]] > key[node]:  # sift up: parents with larger keys move down
        _place(heap, position, at, heap[(at - 1) // 2])
        at = (at - 1) // 2
    _place(heap, position, at, node)
    return size


@njit(cache=True)
def _heap_pop(heap, position, size, key):
    top = heap[0]
    position[top] = -1
    size -= 1
    if size > 0:
        last = heap[size]
        at = 0
        while True:
            child = 2 * at + 1
            if child >= size:
                break
            if child + 1 < size and key[heap[child + 1]] < key[heap[child]]:
                child += 1
            if key[heap[child]] >= key[last]:
                break
            _place(heap, position, at, heap[child])  # sift down: the smaller child moves up
            at = child
        _place(heap, position, at, last)
    return top, size


@njit(cache=True)
def _solve(sr, sc, a, tr, tc, b, table, height, width, v_start, max_paths, window, max_candidates):
    """Successive shortest paths from sink prices ``v_start`` on candidate arcs, priced over all pairs.

    Candidate arcs of a source: the sinks within ``window`` of its smallest reduced cost (at most
    ``max_candidates``). After the restricted problem is solved, every pair is priced; sources with a negative
    reduced cost get those arcs, their price lowered and their mass moved to the new best sink, and the paths
    resume. Returns ``(status, paths, dense_searches, rounds, u, v, arc_src, arc_snk, arc_flow)``: status 0
    optimal, 1 path limit reached, 2 no augmenting path found (rounding trouble; the certificate decides),
    3 pricing rounds exhausted.
    """
    n, m = a.size, b.size
    oh, ow = height - 1, width - 1
    max_cost = np.sqrt(oh * oh + ow * ow)
    v = v_start.copy()
    u = np.empty(n)
    capacity = n * 4 + 16
    arc_src, arc_snk = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
    arc_flow = np.zeros(capacity, np.float64)
    arc_nsnk, arc_nsrc = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
    in_sink_list = np.zeros(capacity, np.bool_)
    head_src, head_snk = -np.ones(n, np.int64), -np.ones(m, np.int64)
    count = 0
    excess = -b.copy()
    reduced_row = np.empty(m)
    chosen = np.empty(m, np.int64)
    stack = np.empty(m, np.int64)
    on_stack = np.zeros(m, np.bool_)
    n_stack = 0
    violation = -1e-13 * max(max_cost, 1.0)
    rounds = 0
    first = True
    status, paths, dense_searches = 0, 0, 0
    tiny = 1e-17
    residue = 1e-14
    dist_snk, dist_src = np.full(m, np.inf), np.empty(n)
    settled, labelled = np.zeros(m, np.bool_), np.zeros(n, np.bool_)
    pred_snk, pred_arc = np.empty(m, np.int64), np.empty(n, np.int64)
    touched_list, labelled_list = np.empty(m, np.int64), np.empty(n, np.int64)
    heap, position = np.empty(m, np.int64), -np.ones(m, np.int64)
    while True:
        # ---- pricing over all pairs (the first round builds the candidate arcs and the start flow)
        violated = 0
        for i in range(n):
            ri, ci = sr[i] + oh, sc[i] + ow
            best, best_j = np.inf, -1
            for j in range(m):
                reduced = table[ri - tr[j], ci - tc[j]] - v[j]
                reduced_row[j] = reduced
                if reduced < best:
                    best, best_j = reduced, j
            if not first and best - u[i] >= violation:
                continue
            violated += 1
            # candidate sinks: within the window of the best, the closest max_candidates of them
            chosen[0] = best_j  # always a candidate: it receives the source's mass below
            n_chosen = 1
            for j in range(m):
                if j != best_j and reduced_row[j] - best <= window:
                    chosen[n_chosen] = j
                    n_chosen += 1
            if n_chosen > max_candidates:
                keys = np.empty(n_chosen - 1)
                for q in range(1, n_chosen):
                    keys[q - 1] = reduced_row[chosen[q]]
                order = np.argsort(keys)[:max_candidates - 1]
                picked = chosen[1:n_chosen][order].copy()
                n_chosen = max_candidates
                chosen[1:n_chosen] = picked
            for q in range(n_chosen):
                j = chosen[q]
                present = False
                arc = head_src[i]
                while arc != -1:
                    if arc_snk[arc] == j:
                        present = True
                        break
                    arc = arc_nsrc[arc]
                if present:
                    continue
                if count == arc_src.size:
                    size = 2 * count
                    arc_src, arc_snk, arc_flow = _grow(arc_src, size), _grow(arc_snk, size), _grow(arc_flow, size)
                    arc_nsnk, arc_nsrc = _grow(arc_nsnk, size), _grow(arc_nsrc, size)
                    in_sink_list = _grow(in_sink_list, size)
                arc_src[count], arc_snk[count], arc_flow[count] = i, j, 0.0
                in_sink_list[count] = False
                arc_nsrc[count], head_src[i] = head_src[i], count
                count += 1
            # the source's price drops to its best reduced cost; all its mass moves to that sink
            u[i] = best
            arc = head_src[i]
            target_arc = -1
            while arc != -1:
                j = arc_snk[arc]
                if j == best_j:
                    target_arc = arc
                elif arc_flow[arc] > 0.0:
                    excess[j] -= arc_flow[arc]
                    arc_flow[arc] = 0.0
                arc = arc_nsrc[arc]
            moved = a[i] - arc_flow[target_arc]
            arc_flow[target_arc] = a[i]
            excess[best_j] += moved
            if not in_sink_list[target_arc]:
                in_sink_list[target_arc] = True
                arc_nsnk[target_arc], head_snk[best_j] = head_snk[best_j], target_arc
        first = False
        if violated == 0:
            break
        rounds += 1
        if rounds > 50:
            status = 3
            break
        for j in range(m):
            if excess[j] > tiny and not on_stack[j]:
                on_stack[j] = True
                stack[n_stack] = j
                n_stack += 1
        # ---- successive shortest paths on the candidate arcs
        while n_stack > 0:
            origin = stack[n_stack - 1]
            if excess[origin] <= tiny:
                n_stack -= 1
                on_stack[origin] = False
                continue
            if paths >= max_paths:
                status = 1
                break
            target = -1
            for dense in (False, True):  # candidate arcs first; all arcs when those hold no path
                n_touched, n_labelled, heap_size = 1, 0, 0
                dist_snk[origin] = 0.0
                pred_snk[origin] = -1
                touched_list[0] = origin
                heap_size = _heap_push(heap, position, heap_size, dist_snk, origin)
                while heap_size > 0:
                    k, heap_size = _heap_pop(heap, position, heap_size, dist_snk)
                    settled[k] = True
                    if excess[k] < 0.0:
                        target = k
                        break
                    here = dist_snk[k]
                    arc = head_snk[k]
                    while arc != -1:
                        if arc_flow[arc] > 0.0:
                            i = arc_src[arc]
                            if not labelled[i]:
                                labelled[i] = True
                                labelled_list[n_labelled] = i
                                n_labelled += 1
                                dist_src[i] = here
                                pred_arc[i] = arc
                                ri, ci, ui = sr[i] + oh, sc[i] + ow, u[i]
                                forward = head_src[i]
                                q = 0
                                while True:
                                    if dense:
                                        if q == m:
                                            break
                                        j = q
                                        q += 1
                                    else:
                                        if forward == -1:
                                            break
                                        j = arc_snk[forward]
                                        forward = arc_nsrc[forward]
                                    if not settled[j]:
                                        reduced = table[ri - tr[j], ci - tc[j]] - ui - v[j]
                                        candidate = here + reduced if reduced > 0.0 else here
                                        if candidate < dist_snk[j]:
                                            if dist_snk[j] == np.inf:
                                                touched_list[n_touched] = j
                                                n_touched += 1
                                            dist_snk[j] = candidate
                                            pred_snk[j] = i
                                            heap_size = _heap_push(heap, position, heap_size, dist_snk, j)
                        arc = arc_nsnk[arc]
                for q in range(heap_size):
                    position[heap[q]] = -1
                if target != -1:
                    break
                dense_searches += 1
                for q in range(n_touched):
                    settled[touched_list[q]] = False
                    dist_snk[touched_list[q]] = np.inf
                for q in range(n_labelled):
                    labelled[labelled_list[q]] = False
            if target == -1:
                if excess[origin] <= residue:  # rounding residue with no deficit left to absorb it
                    excess[origin] = 0.0
                    continue
                status = 2
                break
            reach = dist_snk[target]
            for q in range(n_touched):
                j = touched_list[q]
                if settled[j]:
                    v[j] -= reach - dist_snk[j]
                    settled[j] = False
            for q in range(n_labelled):
                i = labelled_list[q]
                u[i] += reach - dist_src[i]
                labelled[i] = False
            # bottleneck along the path target <- i <- k <- ... <- origin
            delta = min(-excess[target], excess[origin])
            j = target
            while j != origin:
                back = pred_arc[pred_snk[j]]
                if arc_flow[back] < delta:
                    delta = arc_flow[back]
                j = arc_snk[back]
            j = target
            while j != origin:
                i = pred_snk[j]
                arc = head_src[i]
                while arc != -1 and arc_snk[arc] != j:
                    arc = arc_nsrc[arc]
                if arc == -1:  # found by a dense search
                    if count == arc_src.size:
                        size = 2 * count
                        arc_src, arc_snk, arc_flow = _grow(arc_src, size), _grow(arc_snk, size), _grow(arc_flow, size)
                        arc_nsnk, arc_nsrc = _grow(arc_nsnk, size), _grow(arc_nsrc, size)
                        in_sink_list = _grow(in_sink_list, size)
                    arc = count
                    arc_src[arc], arc_snk[arc], arc_flow[arc] = i, j, 0.0
                    in_sink_list[arc] = False
                    arc_nsrc[arc], head_src[i] = head_src[i], arc
                    count += 1
                arc_flow[arc] += delta
                if not in_sink_list[arc]:
                    in_sink_list[arc] = True
                    arc_nsnk[arc], head_snk[j] = head_snk[j], arc
                back = pred_arc[i]
                arc_flow[back] = arc_flow[back] - delta if arc_flow[back] > delta else 0.0
                j = arc_snk[back]
            excess[target] = excess[target] + delta if -excess[target] > delta else 0.0
            excess[origin] = excess[origin] - delta if excess[origin] > delta else 0.0
            for q in range(n_touched):
                dist_snk[touched_list[q]] = np.inf
            paths += 1
        if status != 0:
            break
    return status, paths, dense_searches, rounds, u, v, arc_src[:count], arc_snk[:count], arc_flow[:count]


@njit(cache=True)
def _certify(sr, sc, a, tr, tc, b, table, height, width, u, v, arc_src, arc_snk, arc_flow):
    """Over all pairs: ``(min reduced cost of (u, v), gap with u, gap with the c-transform of v, primal cost,
    largest marginal error)``."""
    n, m = a.size, b.size
    oh, ow = height - 1, width - 1
    min_reduced = np.inf
    dual_u, dual_c = 0.0, 0.0
    for i in range(n):
        best = np.inf
        ri, ci = sr[i] + oh, sc[i] + ow
        for j in range(m):
            reduced = table[ri - tr[j], ci - tc[j]] - v[j]
            if reduced < best:
                best = reduced
        if best - u[i] < min_reduced:
            min_reduced = best - u[i]
        dual_u += a[i] * u[i]
        dual_c += a[i] * best
    for j in range(m):
        dual_u += b[j] * v[j]
        dual_c += b[j] * v[j]
    primal = 0.0
    out_src, in_snk = np.zeros(n), np.zeros(m)
    worst_negative = 0.0
    for q in range(arc_src.size):
        i, j, x = arc_src[q], arc_snk[q], arc_flow[q]
        if x < worst_negative:
            worst_negative = x
        primal += x * table[sr[i] - tr[j] + oh, sc[i] - tc[j] + ow]
        out_src[i] += x
        in_snk[j] += x
    marginal = -worst_negative
    for i in range(n):
        marginal = max(marginal, abs(out_src[i] - a[i]))
    for j in range(m):
        marginal = max(marginal, abs(in_snk[j] - b[j]))
    return min_reduced, primal - dual_u, primal - dual_c, primal, marginal


def _pool2(mass: np.ndarray) -> np.ndarray:
    height, width = mass.shape
    padded = np.zeros((height + height % 2, width + width % 2))
    padded[:height, :width] = mass
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).sum(axis=(1, 3))


def _supports(source: np.ndarray, target: np.ndarray):
    width = source.shape[1]
    source_pixels, target_pixels = np.flatnonzero(source), np.flatnonzero(target)
    sr, sc = np.divmod(source_pixels, width)
    tr, tc = np.divmod(target_pixels, width)
    a, b = source.ravel()[source_pixels], target.ravel()[target_pixels]
    return sr.astype(np.int64), sc.astype(np.int64), a / a.sum(), tr.astype(np.int64), tc.astype(np.int64), b / b.sum()


def _sink_prices(source: np.ndarray, target: np.ndarray, max_paths: int) -> np.ndarray:
    """Start prices for the sinks of ``target``: the final prices of the 2×2-pooled problem, lifted (×2)."""
    height, width = source.shape
    _, _, _, tr, tc, _ = _supports(source, target)
    if height * width <= COARSEST_PIXELS or min(height, width) < 4:
        return np.zeros(tr.size)
    coarse_source, coarse_target = _pool2(source), _pool2(target)
    coarse = _run(coarse_source, coarse_target, max_paths)
    return 2.0 * _interpolate(coarse["v"], coarse_target > 0, tr, tc)


def _interpolate(values: np.ndarray, where: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of coarse-sink ``values`` (on the coarse pixels ``where``) at fine pixels.

    Fine pixel r sits at coarse coordinate (r − 0.5)/2; coarse neighbours without a value are left out and the
    remaining weights renormalised; a fine pixel with none keeps its parent's value.
    """
    grid = np.zeros(where.shape)
    grid[where] = values
    y, x = (rows - 0.5) / 2, (cols - 0.5) / 2
    r0, c0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - r0, x - c0
    total, weight = np.zeros(rows.size), np.zeros(rows.size)
    for dr, wr in ((0, 1 - fy), (1, fy)):
        for dc, wc in ((0, 1 - fx), (1, fx)):
            rr, cc = r0 + dr, c0 + dc
            inside = (rr >= 0) & (rr < where.shape[0]) & (cc >= 0) & (cc < where.shape[1])
            rr, cc = np.clip(rr, 0, where.shape[0] - 1), np.clip(cc, 0, where.shape[1] - 1)
            w = wr * wc * (inside & where[rr, cc])
            total += w * grid[rr, cc]
            weight += w
    parent = grid[rows // 2, cols // 2]
    return np.where(weight > 0, total / np.maximum(weight, 1e-300), parent)


WINDOW = 3.0  # candidate arcs: reduced cost within this many pixels of a source's best
MAX_CANDIDATES = 32


def _run(source: np.ndarray, target: np.ndarray, max_paths: int) -> dict:
    v_start = _sink_prices(source, target, max_paths)
    sr, sc, a, tr, tc, b = _supports(source, target)
    height, width = source.shape
    table = offset_cost_table(height, width)
    status, paths, dense, rounds, u, v, arc_src, arc_snk, arc_flow = _solve(
        sr, sc, a, tr, tc, b, table, height, width, v_start, int(max_paths), WINDOW, MAX_CANDIDATES)
    return dict(status=int(status), paths=int(paths), dense_searches=int(dense), rounds=int(rounds), u=u, v=v,
                arc_src=arc_src,
                arc_snk=arc_snk,
                arc_flow=arc_flow, supports=(sr, sc, a, tr, tc, b), table=table)


class Certificate(dict):
    """What :func:`solve` checked: ``certified``, ``distance``, ``min_reduced``, ``gap``, ``gap_ctransform``,
    ``marginal``, ``max_cost``, ``status``, ``paths``, ``reason``."""


def certify(run: dict, height: int, width: int, corrupt_dual: float = 0.0) -> Certificate:
    """Check the run's flow and prices over all source × sink pairs (see the module docstring)."""
    sr, sc, a, tr, tc, b = run["supports"]
    v = run["v"].copy()
    u = run["u"].copy()
    if corrupt_dual:  # tests: a wrong price must fail the certificate
        u = u + corrupt_dual
    min_reduced, gap, gap_c, primal, marginal = _certify(sr, sc, a, tr, tc, b, run["table"], height, width,
                                                         u, v, run["arc_src"], run["arc_snk"], run["arc_flow"])
    max_cost = float(np.hypot(height - 1, width - 1))
    problems = []
    if run["status"] != 0:
        problems.append(f"solver status {run['status']} ({STATUS.get(run['status'], '?')})")
    if min_reduced < -REDUCED_COST_TOLERANCE * max(max_cost, 1.0):
        problems.append(f"dual infeasible: reduced cost {min_reduced:.3g}")
    if abs(gap) > GAP_TOLERANCE or abs(gap_c) > GAP_TOLERANCE:
        problems.append(f"primal-dual gap {gap:.3g} (c-transform {gap_c:.3g})")
    if marginal > MARGINAL_TOLERANCE:
        problems.append(f"marginal error {marginal:.3g}")
    return Certificate(certified=not problems, distance=float(primal), min_reduced=float(min_reduced),
                       gap=float(gap), gap_ctransform=float(gap_c), marginal=float(marginal), max_cost=max_cost,
                       status=run["status"], paths=run["paths"], rounds=run["rounds"],
                       dense_searches=run["dense_searches"], reason="; ".join(problems))


def solve(source: np.ndarray, target: np.ndarray, max_paths: int, corrupt_dual: float = 0.0) -> Certificate:
    """Exact EMD between two normalised, non-negative 2-D arrays of one shape, with its certificate."""
    run = _run(np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64), max_paths)
    return certify(run, *source.shape, corrupt_dual=corrupt_dual)
