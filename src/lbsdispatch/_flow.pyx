# cython: language_level=3
"""Compiled solver of lbsdispatch's optimal mode: min-cost b-matching of orders to leaders.

The problem
-----------
Orders (supply 1 each) go to leaders (capacity ``cap[j]``) along the edges of
a sparse bipartite graph, given as CSR over the orders: the edges of order i
are ``indptr[i] .. indptr[i+1]``, edge e goes to leader ``col[e]`` at cost
``cost[e]`` (int64, >= 0).  The objective is lexicographic: first the most
orders assigned, then the least total cost.  In LP terms that is the
transportation problem with a dummy leader of unbounded capacity reached from
every order at a cost BIG larger than any path of the graph; BIG never appears
in the code, the two passes below handle it structurally.

Pass 1: successive shortest paths from the orders
-------------------------------------------------
Orders are taken one by one in input order.  Each runs Dijkstra on reduced
costs (potentials ``p``, so that every residual edge has ``c + p[u] - p[v] >=
0``) through the residual graph: order -> candidate leader (forward edge),
full leader -> each order it holds (reverse edge, tight), and stops at the
first leader with room that it pops.  Augmenting along that path keeps the
flow of minimum cost for the set of orders placed so far; potentials move by
``dist - delta`` on the popped nodes only, so nothing is touched per leader
that the search did not reach, and every leader with room keeps potential 0.

A search that empties its heap without meeting a leader with room marks every
node it popped *dead*: that set is closed (an order reaches all its candidates,
a leader reaches the orders it holds) and holds no leader with room.  Leaders
only ever gain load in this pass, so no later augmenting path can enter a dead
set and leave it again; later searches skip edges into dead leaders, and every
node dies at most once.  The count of assigned orders at the end of the pass
is therefore maximal (the classical result that an exposed vertex with no
augmenting path never gets one later).

Pass 2: the dead regions, from the leaders' side
------------------------------------------------
Inside a dead region every leader is full, and no order of the region can go
anywhere else, so the max-cardinality plans fill exactly the same leader slots
there; the only question is *which* orders fill them, which pass 1 (first come,
first placed) does not answer at minimum cost.  The region is re-solved as a
min-cost flow whose sources are the leader slots and whose sinks are the
orders: successive shortest paths from each leader slot to the first order
without a leader.  Edges from live orders into dead leaders never help: a plan
that used one would either lose an order in the region or need a path out of
it, and there is none.

Certificate
-----------
The solver returns, for every live order, its dual value ``u = -p[i]`` (the
cost of its leader plus that leader's congestion price, ``>= 0`` for every
leader).  An edge that is not in the graph, of cost ``c``, cannot improve the
plan if ``u[i] <= c``: that is how the Python layer proves that the k nearest
candidates were enough.  Dead orders carry no such bound (their value is BIG):
their candidate lists must be complete.

All loops run without the GIL on raw arrays; there is no Python object per
order or per edge.
"""
cimport cython
from libc.stdint cimport int64_t, int32_t, uint8_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free

import numpy as np

ctypedef Py_ssize_t intp

# Larger than any distance a search can reach (costs are bounded by the caller
# so that path sums stay below 2**61), small enough that adding a cost to it
# cannot overflow.
cdef int64_t INF = INT64_MAX // 4


# ----------------------------------------------------------------------------
# a binary min-heap of (key, node) with lazy deletion: a node is pushed again
# when its distance improves and stale entries are skipped when popped, which
# is cheaper than decrease-key bookkeeping on these short searches
# ----------------------------------------------------------------------------
cdef struct Heap:
    int64_t* key
    intp* node
    intp size
    intp cap


cdef int heap_push(Heap* h, int64_t k, intp v) noexcept nogil:
    cdef intp i, parent, ncap
    cdef void* a
    cdef void* b
    if h.size == h.cap:
        ncap = 2 * h.cap + 64
        a = realloc(h.key, ncap * sizeof(int64_t))
        if a == NULL:
            return -1
        h.key = <int64_t*>a
        b = realloc(h.node, ncap * sizeof(intp))
        if b == NULL:
            return -1
        h.node = <intp*>b
        h.cap = ncap
    i = h.size
    h.size += 1
    while i > 0:
        parent = (i - 1) >> 1
        # ties by node number: the pop order, and with it the plan, never
        # depends on the heap's history
        if h.key[parent] < k or (h.key[parent] == k and h.node[parent] <= v):
            break
        h.key[i] = h.key[parent]
        h.node[i] = h.node[parent]
        i = parent
    h.key[i] = k
    h.node[i] = v
    return 0


cdef void heap_pop(Heap* h, int64_t* k, intp* v) noexcept nogil:
    cdef intp i = 0, c, n
    cdef int64_t lk
    cdef intp lv
    k[0] = h.key[0]
    v[0] = h.node[0]
    h.size -= 1
    n = h.size
    if n == 0:
        return
    lk = h.key[n]
    lv = h.node[n]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (h.key[c + 1] < h.key[c] or
                          (h.key[c + 1] == h.key[c] and h.node[c + 1] < h.node[c])):
            c += 1
        if lk < h.key[c] or (lk == h.key[c] and lv <= h.node[c]):
            break
        h.key[i] = h.key[c]
        h.node[i] = h.node[c]
        i = c
    h.key[i] = lk
    h.node[i] = lv


# ----------------------------------------------------------------------------
# an indexed binary min-heap over leaders (decrease-key): pass 1 keeps only
# leaders in its heap (see order_search), at most one entry each, so the heap
# stays as small as the number of leaders a search reaches
# ----------------------------------------------------------------------------
cdef struct IHeap:
    int64_t* key        # key of each heap slot
    intp* item          # leader in each heap slot
    intp* pos           # heap slot of each leader, -1 when absent
    intp size


cdef inline bint ih_less(const IHeap* h, int64_t ka, intp a, int64_t kb, intp b) noexcept nogil:
    # ties by leader number (= tie rank): the plan never depends on heap history
    return ka < kb or (ka == kb and a < b)


cdef void ih_up(IHeap* h, intp i, int64_t k, intp v) noexcept nogil:
    cdef intp parent
    while i > 0:
        parent = (i - 1) >> 1
        if not ih_less(h, k, v, h.key[parent], h.item[parent]):
            break
        h.key[i] = h.key[parent]
        h.item[i] = h.item[parent]
        h.pos[h.item[i]] = i
        i = parent
    h.key[i] = k
    h.item[i] = v
    h.pos[v] = i


cdef inline void ih_set(IHeap* h, int64_t k, intp v) noexcept nogil:
    """Insert v with key k, or lower its key to k (callers only ever lower it)."""
    cdef intp i = h.pos[v]
    if i < 0:
        i = h.size
        h.size += 1
    ih_up(h, i, k, v)


cdef void ih_pop(IHeap* h, int64_t* k, intp* v) noexcept nogil:
    cdef intp i = 0, c, n
    cdef int64_t lk
    cdef intp lv
    k[0] = h.key[0]
    v[0] = h.item[0]
    h.pos[v[0]] = -1
    h.size -= 1
    n = h.size
    if n == 0:
        return
    lk = h.key[n]
    lv = h.item[n]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and ih_less(h, h.key[c + 1], h.item[c + 1], h.key[c], h.item[c]):
            c += 1
        if not ih_less(h, h.key[c], h.item[c], lk, lv):
            break
        h.key[i] = h.key[c]
        h.item[i] = h.item[c]
        h.pos[h.item[i]] = i
        i = c
    h.key[i] = lk
    h.item[i] = lv
    h.pos[lv] = i


# ----------------------------------------------------------------------------
# min-cost b-matching
# ----------------------------------------------------------------------------
cdef struct Work:
    # graph (orders 0..n-1, leaders n..n+m-1 as search nodes)
    intp n
    intp m
    const intp* indptr
    const int32_t* col
    const int64_t* cost
    const int64_t* cap
    # plan
    intp* match          # edge of each order, -1: none
    int64_t* load
    intp* slot_start     # leader j holds orders slots[slot_start[j] .. + load[j]]
    intp* slots
    intp* slot_of        # position of an order in slots
    # potentials, dead flags
    int64_t* po
    int64_t* pl
    uint8_t* dead_o
    uint8_t* dead_l
    # search scratch
    int64_t* dist        # n + m, INF outside a search
    intp* pred_o         # leader -> order it was reached from (pass 1)
    intp* pred_e         # node -> edge it was reached by
    intp* touched
    intp n_touched
    intp* popped
    intp n_popped
    int64_t bound        # pass 1: distance of the nearest leader with room seen
    Heap heap            # pass 2 (orders)
    IHeap lheap          # pass 1 (leaders)


cdef inline void reach(Work* w, intp v, int64_t d) noexcept nogil:
    if w.dist[v] == INF:
        w.touched[w.n_touched] = v
        w.n_touched += 1
    w.dist[v] = d


cdef inline void clear_search(Work* w) noexcept nogil:
    cdef intp t
    for t in range(w.lheap.size):
        w.lheap.pos[w.lheap.item[t]] = -1
    w.lheap.size = 0
    for t in range(w.n_touched):
        w.dist[w.touched[t]] = INF
    w.n_touched = 0
    w.n_popped = 0
    w.heap.size = 0


cdef inline void expand_order(Work* w, intp o, int64_t dk) noexcept nogil:
    """Relax the forward edges of order o (reached at distance dk)."""
    cdef intp e, j, n = w.n
    cdef int64_t nd, base = dk + w.po[o]
    for e in range(w.indptr[o], w.indptr[o + 1]):
        # Rows are sorted by cost and every leader's price -pl is >= 0, so
        # base + cost bounds this edge and all the rest of the row from
        # below: past the nearest leader with room seen so far they can only
        # reach nodes at or beyond the distance where the search will stop,
        # whose potentials the update leaves unchanged.
        if base + w.cost[e] > w.bound:
            break
        if e == w.match[o]:
            continue              # its own leader: that edge is saturated
        j = w.col[e]
        if w.dead_l[j]:
            continue
        nd = base + w.cost[e] - w.pl[j]
        if nd < w.dist[n + j]:
            reach(w, n + j, nd)
            w.pred_o[j] = o
            w.pred_e[j] = e
            ih_set(&w.lheap, nd, j)
            if nd < w.bound and w.load[j] < w.cap[j]:
                w.bound = nd


cdef void order_search(Work* w, intp s, intp* target, int64_t* delta) noexcept nogil:
    """Dijkstra from order s to the first leader with room (target -1: none).

    Only leaders enter the heap.  An order is reached through one edge only,
    the reverse edge from the leader that holds it, and that edge is tight
    (reduced cost 0), so the order's distance is its leader's: it is settled
    the moment its leader is popped and expanded at once.
    """
    cdef intp n = w.n, j, o, t, a
    cdef int64_t dk, nd, pj
    target[0] = -1
    w.bound = INF
    reach(w, s, 0)
    w.popped[w.n_popped] = s
    w.n_popped += 1
    expand_order(w, s, 0)
    while w.lheap.size > 0:
        ih_pop(&w.lheap, &dk, &j)
        if w.load[j] < w.cap[j]:
            target[0] = j
            delta[0] = dk
            return
        w.popped[w.n_popped] = n + j
        w.n_popped += 1
        pj = w.pl[j]
        a = w.slot_start[j]
        for t in range(a, a + w.load[j]):
            o = w.slots[t]
            nd = dk - w.cost[w.match[o]] + pj - w.po[o]      # == dk: tight
            if nd < w.dist[o]:
                reach(w, o, nd)
                w.popped[w.n_popped] = o
                w.n_popped += 1
                expand_order(w, o, nd)


cdef void slot_add(Work* w, intp j, intp o) noexcept nogil:
    cdef intp t = w.slot_start[j] + w.load[j]
    w.slots[t] = o
    w.slot_of[o] = t
    w.load[j] += 1


cdef void slot_remove(Work* w, intp j, intp o) noexcept nogil:
    cdef intp t = w.slot_of[o]
    cdef intp last = w.slot_start[j] + w.load[j] - 1
    cdef intp x = w.slots[last]
    w.slots[t] = x
    w.slot_of[x] = t
    w.load[j] -= 1


cdef int pass_orders(Work* w) noexcept nogil:
    """Pass 1: every order in turn, shortest augmenting path or death."""
    cdef intp s, j, o, e, old, t, v
    cdef int64_t delta
    for s in range(w.n):
        w.po[s] = 0
        order_search(w, s, &j, &delta)
        if j < 0:
            for t in range(w.n_popped):
                v = w.popped[t]
                if v >= w.n:
                    w.dead_l[v - w.n] = 1
                else:
                    w.dead_o[v] = 1
            clear_search(w)
            continue
        for t in range(w.n_popped):
            v = w.popped[t]
            if v >= w.n:
                w.pl[v - w.n] += w.dist[v] - delta
            else:
                w.po[v] += w.dist[v] - delta
        # walk back from the leader with room: each order on the path moves
        # to the leader it reached, the last one (s) takes its first leader
        while True:
            o = w.pred_o[j]
            e = w.pred_e[j]
            old = w.match[o]
            if old >= 0:
                slot_remove(w, w.col[old], o)
            slot_add(w, j, o)
            w.match[o] = e
            if old < 0:
                break
            j = w.col[old]
        clear_search(w)
    return 0


cdef int pass_dead(Work* w) noexcept nogil:
    """Pass 2: refill the slots of dead leaders at minimum cost, from the leaders."""
    cdef intp n = w.n, m = w.m, i, e, j, t, v, o, k, src, x
    cdef int64_t dk, nd, pj, delta, slots_j
    cdef intp* tptr = <intp*>calloc(m + 1, sizeof(intp))
    cdef intp* tedge = NULL
    cdef intp n_dead = 0
    cdef int rc = 0
    if tptr == NULL:
        return -1
    # transpose of the edges of dead orders (all of them end at dead leaders)
    for i in range(n):
        if w.dead_o[i]:
            n_dead += 1
            for e in range(w.indptr[i], w.indptr[i + 1]):
                tptr[w.col[e] + 1] += 1
    if n_dead == 0:
        free(tptr)
        return 0
    for j in range(m):
        tptr[j + 1] += tptr[j]
    tedge = <intp*>malloc((tptr[m] + 1) * sizeof(intp))
    if tedge == NULL:
        free(tptr)
        return -1
    for i in range(n):
        if w.dead_o[i]:
            for e in range(w.indptr[i], w.indptr[i + 1]):
                j = w.col[e]
                tedge[tptr[j]] = e
                tptr[j] += 1
    for j in range(m, 0, -1):
        tptr[j] = tptr[j - 1]
    tptr[0] = 0
    # the order of each edge, for the transpose walk
    cdef intp* erow = <intp*>malloc((w.indptr[n] + 1) * sizeof(intp))
    if erow == NULL:
        free(tptr)
        free(tedge)
        return -1
    for i in range(n):
        for e in range(w.indptr[i], w.indptr[i + 1]):
            erow[e] = i
    # start from scratch inside the dead region: potentials 0 are feasible
    # (costs >= 0) and every order without a leader keeps potential 0
    for i in range(n):
        if w.dead_o[i]:
            w.match[i] = -1
            w.po[i] = 0
    for j in range(m):
        if w.dead_l[j]:
            slots_j = w.load[j]
            w.load[j] = 0
            w.pl[j] = 0
            # pred_o doubles as "slots still to fill" before the searches
            w.pred_o[j] = slots_j
    for src in range(m):
        if not w.dead_l[src]:
            continue
        slots_j = w.pred_o[src]
        for k in range(slots_j):
            x = -1
            reach(w, n + src, 0)
            if heap_push(&w.heap, 0, n + src) != 0:
                rc = -1
                break
            while w.heap.size > 0:
                heap_pop(&w.heap, &dk, &v)
                if dk > w.dist[v]:
                    continue
                if v < n:
                    if w.match[v] < 0:
                        x = v
                        delta = dk
                        break
                    w.popped[w.n_popped] = v
                    w.n_popped += 1
                    e = w.match[v]
                    j = w.col[e]
                    # order v -> the leader holding it (reverse, tight)
                    nd = dk - w.cost[e] + w.po[v] - w.pl[j]
                    if nd < w.dist[n + j]:
                        reach(w, n + j, nd)
                        w.pred_e[n + j] = v          # reached through order v
                        if heap_push(&w.heap, nd, n + j) != 0:
                            rc = -1
                            break
                else:
                    j = v - n
                    w.popped[w.n_popped] = v
                    w.n_popped += 1
                    pj = w.pl[j]
                    for t in range(tptr[j], tptr[j + 1]):
                        e = tedge[t]
                        o = erow[e]
                        if w.match[o] == e:
                            continue
                        nd = dk + w.cost[e] + pj - w.po[o]
                        if nd < w.dist[o]:
                            reach(w, o, nd)
                            w.pred_e[o] = e
                            if heap_push(&w.heap, nd, o) != 0:
                                rc = -1
                                break
                    if rc != 0:
                        break
            if rc != 0:
                break
            if x < 0:
                # cannot happen: pass 1 filled this slot with an order of the
                # region, so a path to a free order exists
                rc = -2
                break
            for t in range(w.n_popped):
                v = w.popped[t]
                if v >= n:
                    w.pl[v - n] += w.dist[v] - delta
                else:
                    w.po[v] += w.dist[v] - delta
            o = x
            while True:
                e = w.pred_e[o]
                w.match[o] = e
                j = w.col[e]
                if j == src:
                    break
                o = w.pred_e[n + j]
            clear_search(w)
        if rc != 0:
            break
    # loads of dead leaders are back to what they were (every slot refilled)
    for i in range(n):
        if w.dead_o[i] and w.match[i] >= 0:
            w.load[w.col[w.match[i]]] += 1
    free(tptr)
    free(tedge)
    free(erow)
    return rc


cdef str _check_graph(const intp[::1] indptr, const int32_t[::1] col,
                      const int64_t[::1] cost, const int64_t[::1] cap):
    """What is wrong with the solver's input, or '' (one pass, without the GIL)."""
    cdef intp n = indptr.shape[0] - 1, m = cap.shape[0], i, e, bad = -1, what = 0
    if col.shape[0] != cost.shape[0] or indptr[0] != 0 or indptr[n] != col.shape[0]:
        return "indptr, col and cost do not describe one CSR graph"
    with nogil:
        for i in range(m):
            if cap[i] < 0:
                bad = i
                what = 1
                break
        for i in range(n if bad < 0 else 0):
            if indptr[i + 1] < indptr[i]:
                bad = i
                what = 2
                break
            for e in range(indptr[i], indptr[i + 1]):
                if col[e] < 0 or col[e] >= m:
                    what = 3
                elif cost[e] < 0:
                    what = 4
                elif e > indptr[i] and cost[e] < cost[e - 1]:
                    what = 5
                if what:
                    bad = e
                    break
            if bad >= 0:
                break
    if what == 1:
        return f"cap[{bad}] = {cap[bad]}: capacities must be >= 0"
    if what == 2:
        return f"indptr[{bad + 1}] < indptr[{bad}]: row pointers must not decrease"
    if what == 3:
        return f"col[{bad}] = {col[bad]}: leaders must be in 0..{m - 1}"
    if what == 4:
        return f"cost[{bad}] = {cost[bad]}: costs must be >= 0"
    if what == 5:
        return f"cost[{bad}] = {cost[bad]} < cost[{bad - 1}]: each row must be sorted by cost"
    return ""


def min_cost_bmatching(const intp[::1] indptr, const int32_t[::1] col,
                       const int64_t[::1] cost, const int64_t[::1] cap):
    """Most orders assigned, then least total cost, on a sparse bipartite graph.

    Parameters
    ----------
    indptr : ndarray of intp, shape (n_orders + 1,)
        CSR row pointers: the edges of order i are ``indptr[i]:indptr[i+1]``.
    col : ndarray of int32, shape (n_edges,)
        Leader of each edge, in ``0 .. n_leaders - 1``; no leader twice in a row.
    cost : ndarray of int64, shape (n_edges,)
        Cost of each edge, ``>= 0``, ascending within each row (the search
        stops reading a row where it can no longer matter); the caller keeps
        path sums below 2**61.
    cap : ndarray of int64, shape (n_leaders,)
        Capacity of each leader, ``>= 0``.

    Returns
    -------
    match : ndarray of intp, shape (n_orders,)
        Edge used by each order, -1 for none.
    dual : ndarray of int64, shape (n_orders,)
        For orders outside dead regions, the LP dual value: any edge (i, j)
        not in the graph with cost ``>= dual[i]`` cannot improve the plan.
        0 for dead orders (meaningless there).
    dead : ndarray of bool, shape (n_orders,)
        Orders of the dead regions (all leaders they reach are full); every
        unassigned order is dead.

    Notes
    -----
    Exact, deterministic (the same arrays give the same plan).  The input is
    checked in one pass (ValueError naming the first bad entry).
    """
    cdef intp n = indptr.shape[0] - 1
    cdef intp m = cap.shape[0]
    cdef intp i, j, e, total
    cdef Work w
    cdef int rc = 0
    match = np.full(n, -1, dtype=np.intp)
    dual = np.zeros(n, dtype=np.int64)
    dead = np.zeros(n, dtype=np.uint8)
    load = np.zeros(m, dtype=np.int64)
    po = np.zeros(n, dtype=np.int64)
    pl = np.zeros(m, dtype=np.int64)
    dead_l = np.zeros(m, dtype=np.uint8)
    cdef intp[::1] mv = match
    cdef int64_t[::1] dv = dual
    cdef uint8_t[::1] deadv = dead
    cdef int64_t[::1] lv = load
    cdef int64_t[::1] pov = po
    cdef int64_t[::1] plv = pl
    cdef uint8_t[::1] dlv = dead_l
    if n == 0:
        return match, dual, dead.astype(bool)
    bad = _check_graph(indptr, col, cost, cap)
    if bad:
        raise ValueError(bad)
    # slots per leader: it can never hold more than its capacity nor more
    # orders than have an edge to it
    indeg = np.bincount(np.asarray(col), minlength=m)[:m] if col.shape[0] else np.zeros(m, np.intp)
    nslot = np.minimum(indeg, np.asarray(cap)).astype(np.intp)
    slot_start = np.zeros(m + 1, dtype=np.intp)
    np.cumsum(nslot, out=slot_start[1:])
    slots = np.empty(max(int(slot_start[m]), 1), dtype=np.intp)
    slot_of = np.empty(n, dtype=np.intp)
    dist = np.full(n + m, INF, dtype=np.int64)
    pred_o = np.empty(m, dtype=np.intp)
    pred_e = np.empty(n + m, dtype=np.intp)
    touched = np.empty(n + m, dtype=np.intp)
    popped = np.empty(n + m, dtype=np.intp)
    lh_key = np.empty(max(m, 1), dtype=np.int64)
    lh_item = np.empty(max(m, 1), dtype=np.intp)
    lh_pos = np.full(max(m, 1), -1, dtype=np.intp)
    cdef int64_t[::1] lhk = lh_key
    cdef intp[::1] lhi = lh_item
    cdef intp[::1] lhp = lh_pos
    cdef intp[::1] ssv = slot_start
    cdef intp[::1] slv = slots
    cdef intp[::1] sov = slot_of
    cdef int64_t[::1] distv = dist
    cdef intp[::1] pov_ = pred_o
    cdef intp[::1] pev = pred_e
    cdef intp[::1] tv = touched
    cdef intp[::1] ppv = popped
    w.n = n
    w.m = m
    w.indptr = &indptr[0]
    w.col = &col[0] if col.shape[0] else NULL
    w.cost = &cost[0] if cost.shape[0] else NULL
    w.cap = &cap[0] if m else NULL
    w.match = &mv[0]
    w.load = &lv[0] if m else NULL
    w.slot_start = &ssv[0]
    w.slots = &slv[0]
    w.slot_of = &sov[0]
    w.po = &pov[0]
    w.pl = &plv[0] if m else NULL
    w.dead_o = &deadv[0]
    w.dead_l = &dlv[0] if m else NULL
    w.dist = &distv[0]
    w.pred_o = &pov_[0] if m else NULL
    w.pred_e = &pev[0]
    w.touched = &tv[0]
    w.n_touched = 0
    w.popped = &ppv[0]
    w.n_popped = 0
    w.heap.key = NULL
    w.heap.node = NULL
    w.heap.size = 0
    w.heap.cap = 0
    w.lheap.key = &lhk[0]
    w.lheap.item = &lhi[0]
    w.lheap.pos = &lhp[0]
    w.lheap.size = 0
    try:
        with nogil:
            rc = pass_orders(&w)
            if rc == 0:
                rc = pass_dead(&w)
            if rc == 0:
                for i in range(n):
                    if not w.dead_o[i]:
                        dv[i] = -w.po[i]
        if rc == -2:
            raise RuntimeError("min_cost_bmatching: a dead region could not be refilled "
                               "(internal error)")
        if rc != 0:
            raise MemoryError("min_cost_bmatching: out of memory in the search heap")
    finally:
        free(w.heap.key)
        free(w.heap.node)
    return match, dual, dead.astype(bool)


# ----------------------------------------------------------------------------
# max-cardinality b-matching under a cost threshold (the bottleneck objective)
# ----------------------------------------------------------------------------
def max_bmatching(const intp[::1] indptr, const int32_t[::1] col, const int64_t[::1] w,
                  int64_t wmax, const int64_t[::1] cap):
    """Most orders assigned using only edges with ``w[e] <= wmax``.

    Breadth-first augmenting paths from each order in turn; a search that
    fails marks what it visited dead (closed, no leader with room, never
    entered again), exactly as pass 1 of :func:`min_cost_bmatching`.

    Returns
    -------
    count : int
        Orders assigned.
    dead : ndarray of bool, shape (n_orders,)
        Orders visited by failed searches; the count is maximal on any graph
        that adds no edge of cost ``<= wmax`` at a dead order.
    """
    cdef intp n = indptr.shape[0] - 1
    cdef intp m = cap.shape[0]
    cdef intp s, qh, qt, v, e, j, o, t, x, found, old, count = 0
    dead = np.zeros(max(n, 0), dtype=np.uint8)
    if n <= 0:
        return 0, dead.astype(bool)
    indeg = np.bincount(np.asarray(col), minlength=m)[:m] if col.shape[0] else np.zeros(m, np.intp)
    nslot = np.minimum(indeg, np.asarray(cap)).astype(np.intp)
    slot_start_a = np.zeros(m + 1, dtype=np.intp)
    np.cumsum(nslot, out=slot_start_a[1:])
    slots_a = np.empty(max(int(slot_start_a[m]), 1), dtype=np.intp)
    arrays = [np.full(n, -1, dtype=np.intp),      # match
              np.zeros(m, dtype=np.int64),        # load
              np.empty(n, dtype=np.intp),         # slot_of
              np.zeros(m, dtype=np.uint8),        # dead leaders
              np.zeros(n + m, dtype=np.int64),    # visit stamp
              np.empty(n + m, dtype=np.intp),     # queue
              np.empty(m, dtype=np.intp),         # leader -> order it was reached from
              np.empty(m, dtype=np.intp)]         # leader -> edge it was reached by
    cdef intp[::1] match = arrays[0]
    cdef int64_t[::1] load = arrays[1]
    cdef intp[::1] slot_of = arrays[2]
    cdef uint8_t[::1] dead_l = arrays[3]
    cdef int64_t[::1] stamp = arrays[4]
    cdef intp[::1] queue = arrays[5]
    cdef intp[::1] pred_o = arrays[6]
    cdef intp[::1] pred_e = arrays[7]
    cdef intp[::1] sst = slot_start_a
    cdef intp[::1] slots = slots_a
    cdef uint8_t[::1] dead_o = dead
    with nogil:
        for s in range(n):
            # a visit stamp per search: no clearing between searches
            qh = 0
            qt = 1
            queue[0] = s
            stamp[s] = s + 1
            found = -1
            while qh < qt and found < 0:
                v = queue[qh]
                qh += 1
                if v < n:
                    for e in range(indptr[v], indptr[v + 1]):
                        if e == match[v] or w[e] > wmax:
                            continue
                        j = col[e]
                        if dead_l[j] or stamp[n + j] == s + 1:
                            continue
                        stamp[n + j] = s + 1
                        pred_o[j] = v
                        pred_e[j] = e
                        if load[j] < cap[j]:
                            found = j
                            break
                        queue[qt] = n + j
                        qt += 1
                else:
                    j = v - n
                    for t in range(sst[j], sst[j] + load[j]):
                        o = slots[t]
                        if stamp[o] != s + 1:
                            stamp[o] = s + 1
                            queue[qt] = o
                            qt += 1
            if found < 0:
                for t in range(qt):
                    v = queue[t]
                    if v < n:
                        dead_o[v] = 1
                    else:
                        dead_l[v - n] = 1
                continue
            count += 1
            j = found
            while True:
                o = pred_o[j]
                e = pred_e[j]
                old = match[o]
                if old >= 0:
                    # out of its old leader first (slot_of[o] is rewritten below)
                    x = col[old]
                    t = slot_of[o]
                    v = slots[sst[x] + load[x] - 1]
                    slots[t] = v
                    slot_of[v] = t
                    load[x] -= 1
                t = sst[j] + load[j]
                slots[t] = o
                slot_of[o] = t
                load[j] += 1
                match[o] = e
                if old < 0:
                    break
                j = col[old]
    return count, dead.astype(bool)


def sort_rows(const intp[::1] indptr, const int64_t[::1] key):
    """Permutation that sorts each CSR row by ``key`` (stable).

    Rows arrive nearly sorted (by float distance from the tree), so an
    insertion sort per row is linear in practice and needs no scratch.
    """
    cdef intp n = indptr.shape[0] - 1
    cdef intp i, a, b, p, q, x
    cdef int64_t kx
    perm = np.arange(indptr[n] if n >= 0 else 0, dtype=np.intp)
    cdef intp[::1] pv = perm
    with nogil:
        for i in range(n):
            a = indptr[i]
            b = indptr[i + 1]
            for p in range(a + 1, b):
                x = pv[p]
                kx = key[x]
                q = p
                while q > a and key[pv[q - 1]] > kx:
                    pv[q] = pv[q - 1]
                    q -= 1
                pv[q] = x
    return perm
