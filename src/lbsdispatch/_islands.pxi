# Included by _dispatch.pxi: large batches served island by island.
#
# Why
# ---
# A batch must equal one ``assign`` after another in arrival order.  On a
# nation-sized event the orders of one night arrive from every city at once,
# so each search lands in another part of a tree that does not fit in the
# cache.  Served city by city, one city's leaders stay in cache (nation
# event, orders pre-sorted by island: 360 -> 244 ms in the core), and cities
# can be served on different threads; but only orders that cannot affect one
# another may change places.
#
# Islands
# -------
# Space is cut into cubes of side ``link`` (a chord); cubes holding leaders
# that touch are joined, and an island is a connected set of cubes.  Two
# leaders of different islands are more than ``link`` apart.  A group is a
# union of islands (union-find); groups only grow during a batch.
#
# Exactness
# ---------
# The answer for one order is a function of the loads of the leaders inside
# the ball it read: the pick's distance (every full leader nearer than the
# pick; with a tie tolerance everything within it of the best), or every
# leader in range when nothing had room; plus its chosen and bound leaders,
# and the binding left by the previous order of the same customer.  Orders
# are sorted by group, arrival order kept inside a group, and each is first
# decided; it takes its slot only if everything it read is of its group.  By
# induction over arrival order, a group's leaders are then written only by
# its own orders, in arrival order, so every order that fits saw the loads
# arrival order would have shown it.  An order that does not fit is a
# conflict: it takes nothing, the islands it read are joined into one group,
# and after the pass that group is served again from its first conflicting
# order on (the orders before it stand: they read only their own groups,
# which no conflict wrote).  A read without bound (nothing in range had
# room, no radius) joins everything: arrival order.
#
# The test of a read ball around order q with pick p (unit vectors): a leader
# x within the ball of squared radius r2 around q is within 2 sqrt(r2) of p,
# so if 4 r2 < link^2, x is on p's island; else a walk lists the islands.
#
# Threads
# -------
# With several workers each serves whole groups.  A worker writes only its
# groups' leaders (an order in conflict writes nothing); the per-node counts
# near the root, shared by all groups, change by atomic adds.  A search may
# read another group's leader mid-change: whatever it reads there either
# leaves its pick alone or puts that leader inside its ball, which fails the
# check.

# Trees smaller than this are served in arrival order (they sit in the cache:
# city event, 800 leaders, island order bought nothing).
cdef intp ISLAND_MIN_LEADERS = 16384
# Batches smaller than this are served in arrival order.
cdef intp ISLAND_MIN_ROWS = 4096
# Link distance between islands, metres.
cdef double ISLAND_LINK_M = 40000.0
# Rows per block (bounds the scratch: ~110 bytes a row); the first block is
# smaller, and each next one twice the last, up to ISLAND_BLOCK.
cdef intp ISLAND_BLOCK = 65536
cdef intp ISLAND_FIRST_BLOCK = 4096
# A block that needed this many passes gives up and is served in arrival order.
cdef int ISLAND_MAX_PASSES = 6
# A pass splits over workers only if each gets at least this many rows.
cdef intp ISLAND_MIN_ROWS_PER_WORKER = 1024
# Tests: serve every island batch with this many workers (0: as asked).
cdef int ISLAND_FORCE_WORKERS = 0


# What the island path did (for tests and tuning): blocks served by island,
# extra passes, rows that conflicted, rows served again, blocks given up.
cdef intp[5] ISLAND_STATS


def _island_stats(reset=False):
    """Counters of the island path since the last reset: dict."""
    out = dict(zip(("blocks", "passes", "conflicts", "served_again", "gave_up"),
                   [ISLAND_STATS[i] for i in range(5)]))
    if reset:
        for i in range(5):
            ISLAND_STATS[i] = 0
    return out


def _set_island_params(min_leaders=None, min_rows=None, link_m=None, block=None,
                       first_block=None, min_rows_per_worker=None, workers=None):
    """Set when and how batches are served island by island (for tests and
    benchmarks); ``workers`` > 0 serves every island batch with that many
    threads whatever the caller asked.  Returns the old values as a dict."""
    global ISLAND_MIN_LEADERS, ISLAND_MIN_ROWS, ISLAND_LINK_M, ISLAND_BLOCK
    global ISLAND_FIRST_BLOCK, ISLAND_MIN_ROWS_PER_WORKER, ISLAND_FORCE_WORKERS
    old = dict(min_leaders=ISLAND_MIN_LEADERS, min_rows=ISLAND_MIN_ROWS,
               link_m=ISLAND_LINK_M, block=ISLAND_BLOCK, first_block=ISLAND_FIRST_BLOCK,
               min_rows_per_worker=ISLAND_MIN_ROWS_PER_WORKER, workers=ISLAND_FORCE_WORKERS)
    if first_block is not None:
        if first_block < 1:
            raise ValueError("first_block must be >= 1")
        ISLAND_FIRST_BLOCK = first_block
    if min_rows_per_worker is not None:
        ISLAND_MIN_ROWS_PER_WORKER = min_rows_per_worker
    if workers is not None:
        ISLAND_FORCE_WORKERS = workers
    if min_leaders is not None:
        ISLAND_MIN_LEADERS = min_leaders
    if min_rows is not None:
        ISLAND_MIN_ROWS = min_rows
    if link_m is not None:
        ISLAND_LINK_M = link_m
    if block is not None:
        if block < 1:
            raise ValueError("block must be >= 1")
        ISLAND_BLOCK = block
    return old


# node_island markers: a node whose leaders lie on several islands, or none
DEF MIXED = -1
DEF EMPTY = -2


cdef inline int32_t uf_find(int32_t* parent, int32_t x) noexcept nogil:
    cdef int32_t r = x, nx
    while parent[r] != r:
        r = parent[r]
    while parent[x] != r:           # path compression
        nx = parent[x]
        parent[x] = r
        x = nx
    return r


cdef inline void uf_union(int32_t* parent, int32_t a, int32_t b) noexcept nogil:
    a = uf_find(parent, a)
    b = uf_find(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


# The island of every cube that holds a leader: open addressing, key 0 empty.
cdef struct CubeMap:
    uint64_t* key
    int32_t* island
    intp mask              # slots - 1 (a power of two)
    double per_side        # 1 / the cube side (a chord)


cdef inline uint64_t cube_key(const double* v, double per_side) noexcept nogil:
    """Key of the cube of unit vector v (``per_side``: 1 / the cube side): 21
    bits an axis, each coordinate >= 1."""
    return ((<uint64_t>(<int64_t>((v[0] + 1.0) * per_side) + 1) << 42)
            | (<uint64_t>(<int64_t>((v[1] + 1.0) * per_side) + 1) << 21)
            | <uint64_t>(<int64_t>((v[2] + 1.0) * per_side) + 1))


cdef inline intp cube_slot(uint64_t key, intp mask) noexcept nogil:
    return <intp>((key * 0x9E3779B97F4A7C15ULL) >> 24) & mask


cdef inline int32_t cube_island(const CubeMap* cm, const double* q) noexcept nogil:
    """Island of the cube holding q, or -1 when no leader is in that cube."""
    cdef uint64_t k = cube_key(q, cm.per_side)
    cdef intp i = cube_slot(k, cm.mask)
    while cm.key[i] != 0:
        if cm.key[i] == k:
            return cm.island[i]
        i = (i + 1) & cm.mask
    return -1


cdef intp find_islands(const Tree* t, double link, int32_t* pt_island,
                       int32_t* node_island, CubeMap* cm) noexcept nogil:
    """Fill ``pt_island`` (each leader, tree order) and ``node_island`` (each
    node: the island of every leader below it, MIXED when they differ, EMPTY
    when it holds none); returns the number of islands, or -1 when memory runs
    out.  Islands are numbered in tree order.  ``cm`` receives the island of
    every cube that holds a leader (its arrays are the caller's to free).

    Space is cut into cubes of side ``link`` (a chord); cubes that hold leaders
    and touch (26 neighbours) are joined.  Leaders in cubes that do not touch
    are more than ``link`` apart, so leaders of different islands are too.
    (Leaders up to ~3.5 link apart may share an island: that only costs
    locality, never exactness.)
    """
    cdef intp n = t.n, n_nodes = 2 * t.first_leaf + 1
    cdef intp p, i, j, lo, hi, mid, n_cells = 0, n_isl = 0, node
    cdef int dx, dy, dz
    cdef int32_t a, b
    cdef uint64_t want
    cdef uint64_t* key = <uint64_t*>malloc(n * sizeof(uint64_t) + 1)
    cdef intp* idx = <intp*>malloc(n * sizeof(intp) + 1)
    cdef intp* cell_of = <intp*>malloc(n * sizeof(intp) + 1)
    cdef uint64_t* cells = <uint64_t*>malloc(n * sizeof(uint64_t) + 1)
    cdef int32_t* parent = <int32_t*>malloc(n * sizeof(int32_t) + 1)
    cdef int32_t* label = <int32_t*>malloc(n * sizeof(int32_t) + 1)
    if (key == NULL or idx == NULL or cell_of == NULL or cells == NULL or parent == NULL
            or label == NULL or not (link > 2.0 / 2097000.0)):
        free(key); free(idx); free(cell_of); free(cells); free(parent); free(label)
        return -1
    # cube of each leader: 21 bits an axis (unit vectors lie in [-1, 1])
    for p in range(n):
        key[p] = cube_key(t.pts + 3 * p, 1.0 / link)   # coordinates >= 1: room for -1
        idx[p] = p
    if sort_keys(key, idx, n, 0, 63) != 0:
        free(key); free(idx); free(cell_of); free(cells); free(parent); free(label)
        return -1
    for i in range(n):
        if i == 0 or key[i] != key[i - 1]:
            cells[n_cells] = key[i]
            parent[n_cells] = <int32_t>n_cells
            n_cells += 1
        cell_of[idx[i]] = n_cells - 1
    # join each cube with its touching neighbours (binary search in the cubes)
    for i in range(n_cells):
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    want = cells[i] + ((<uint64_t>(dx + 1) << 42) + (<uint64_t>(dy + 1) << 21)
                                       + <uint64_t>(dz + 1)) - ((1ULL << 42) + (1ULL << 21) + 1)
                    if want <= cells[i]:
                        continue        # each pair once, from its smaller cube
                    lo = i + 1
                    hi = n_cells
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if cells[mid] < want:
                            lo = mid + 1
                        else:
                            hi = mid
                    if lo < n_cells and cells[lo] == want:
                        uf_union(parent, <int32_t>i, <int32_t>lo)
    for i in range(n_cells):
        label[i] = -1
    for p in range(n):
        a = uf_find(parent, <int32_t>cell_of[p])
        if label[a] < 0:
            label[a] = <int32_t>n_isl
            n_isl += 1
        pt_island[p] = label[a]
    cm.per_side = 1.0 / link
    cm.mask = 1
    while cm.mask < 2 * n_cells:
        cm.mask *= 2
    cm.key = <uint64_t*>calloc(cm.mask, sizeof(uint64_t))
    cm.island = <int32_t*>malloc(cm.mask * sizeof(int32_t))
    cm.mask -= 1
    if cm.key == NULL or cm.island == NULL:
        free(cm.key); free(cm.island)
        cm.key = NULL
        cm.island = NULL
        n_isl = -1
    else:
        for i in range(n_cells):
            j = cube_slot(cells[i], cm.mask)
            while cm.key[j] != 0:
                j = (j + 1) & cm.mask
            cm.key[j] = cells[i]
            cm.island[j] = label[uf_find(parent, <int32_t>i)]
    free(key); free(idx); free(cell_of); free(cells); free(parent); free(label)
    if n_isl < 0:
        return -1
    for node in range(n_nodes - 1, -1, -1):
        if node >= t.first_leaf:
            a = EMPTY
            for p in range(t.start[node], t.end[node]):
                a = pt_island[p] if a == EMPTY or a == pt_island[p] else MIXED
            node_island[node] = a
        else:
            a = node_island[2 * node + 1]
            b = node_island[2 * node + 2]
            node_island[node] = (b if a == EMPTY else a if b == EMPTY
                                 else a if a == b else MIXED)
    return n_isl


cdef struct Islands:
    const CubeMap* cubes
    const int32_t* node_island
    const int32_t* pt_island
    int32_t* parent        # union-find over islands: the groups (changed between passes only)
    int32_t* root0         # each island's group as the pass began
    intp* first            # per group root: its first row in conflict (m: none)
    intp n_isl
    double link2           # link distance, squared chord
    bint merge_all         # a read set without bound: one group from now on
    bint one_group         # every island is in group 0


# What one worker of a pass found: islands to join once the pass is over (a
# pass never changes the groups it serves), and how many rows conflicted.
cdef struct Joins:
    int32_t* pair          # 2 * n: island pairs
    intp n
    intp cap
    intp n_bad
    bint failed            # out of memory: join everything


cdef inline void join(Joins* J, int32_t a, int32_t b) noexcept nogil:
    cdef intp ncap
    cdef void* grown
    if a == b or J.failed:
        return
    if J.n == J.cap:
        ncap = 2 * J.cap + 64
        grown = realloc(J.pair, 2 * ncap * sizeof(int32_t))
        if grown == NULL:
            J.failed = True
            return
        J.pair = <int32_t*>grown
        J.cap = ncap
    J.pair[2 * J.n] = a
    J.pair[2 * J.n + 1] = b
    J.n += 1


cdef inline int32_t cell_island(const Tree* t, const Islands* I, const double* q) noexcept nogil:
    """The island of the first node of one island on q's path down the tree."""
    cdef intp node = 0
    while node < t.first_leaf and I.node_island[node] == MIXED:
        node = 2 * node + 1 + (q[t.dim[node]] > t.split[node])
    return I.node_island[node] if I.node_island[node] >= 0 else 0


cdef inline intp nearest_leader(const Tree* t, const double* q, double* d2) noexcept nogil:
    """Tree position of q's nearest leader, full or not (-1: no leader); its
    squared chord into d2."""
    cdef Best1 nb
    nb.d2 = INFINITY
    nb.bound = INFINITY
    nb.rank = 0
    nb.pos = -1
    nn1(t, q, &nb)
    d2[0] = nb.d2
    return nb.pos


cdef int32_t nearest_island(const Tree* t, const Islands* I, const double* q) noexcept nogil:
    """The island of q's nearest leader (for an order far from every leader)."""
    cdef double d2
    cdef intp p = nearest_leader(t, q, &d2)
    return I.pt_island[p] if p >= 0 else cell_island(t, I, q)


cdef inline void touch(const Islands* I, int32_t x, int32_t g, int32_t* home, bint* outside,
                       Joins* J) noexcept nogil:
    """Note that a row of group g read island x: join x to the first island the
    row read (``home``), and flag it when x is not in g."""
    if home[0] < 0:
        home[0] = x
    else:
        join(J, home[0], x)
    if I.root0[x] != g:
        outside[0] = True


cdef void touch_ball(const State* s, const Islands* I, const double* q, double r2, int32_t g,
                     int32_t* home, bint* outside, Joins* J) noexcept nogil:
    """``touch`` every island with a leader within squared chord r2 of q.

    A node of one island already in the row's home group is not descended;
    any other node is descended to its leaders, since a cell may reach far
    beyond them."""
    cdef const Tree* t = s.t
    cdef Frame stack[MAX_DEPTH]
    cdef intp top = 0, node = 0, near, p
    cdef int32_t d, x
    cdef double diff, rd = 0.0, nrd, old, dx, dy, dz
    cdef double off[3]
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    while True:
        x = I.node_island[node]
        while node < t.first_leaf and not (x >= 0 and home[0] >= 0
                                           and I.root0[x] == I.root0[home[0]]):
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            old = off[d]
            nrd = rd - old * old + diff * diff
            if nrd <= r2:
                push_frame(&stack[top], 4 * node + 3 - near, nrd, off, d, diff)
                top += 1
            node = near
            x = I.node_island[node]
        if node >= t.first_leaf:
            for p in range(t.start[node], t.end[node]):
                dx = q[0] - t.pts[3 * p]
                dy = q[1] - t.pts[3 * p + 1]
                dz = q[2] - t.pts[3 * p + 2]
                if dx * dx + dy * dy + dz * dz <= r2:
                    touch(I, I.pt_island[p], g, home, outside, J)
        if top == 0:
            return
        top -= 1
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


cdef bint fits(const State* s, Islands* I, int32_t g, const double* q, intp c, intp b,
               const Result* r, int32_t* home, Joins* J) noexcept nogil:
    """Did the row decided at q read only leaders of its group g?  (c, b: its
    chosen and bound leaders as tree positions or markers.)

    If not, the islands it read are to be joined into one group (not with g:
    the row neither read nor wrote g's leaders) and ``home`` is one of them:
    where the row is to be served again.  A read without bound sets
    ``merge_all``.
    """
    cdef bint outside = False
    cdef intp anchor
    cdef double a2, rr, d2
    home[0] = -1
    if c >= 0:
        touch(I, I.pt_island[c], g, home, &outside, J)
    if b >= 0:
        touch(I, I.pt_island[b], g, home, &outside, J)
    if r.read2 >= 0.0:
        if r.read2 == INFINITY:
            I.merge_all = True      # "nothing anywhere had room": a global read
            return False
        if r.pos >= 0:
            anchor = r.pos          # |x - pick| <= |x - q| + |q - pick| <= 2 sqrt(read2)
            a2 = 4.0 * r.read2
        else:
            anchor = nearest_leader(s.t, q, &d2)    # full or not
            rr = sqrt(r.read2) + sqrt(d2)
            a2 = rr * rr
        if anchor >= 0 and a2 * (1.0 + 1e-9) < I.link2:
            touch(I, I.pt_island[anchor], g, home, &outside, J)
        else:
            touch_ball(s, I, q, r.read2, g, home, &outside, J)
    return not outside


cdef void sort_by_group(const int32_t* grp, const uint8_t* use, intp m, intp n_groups,
                        intp* cnt, intp* order) noexcept nogil:
    """order <- the rows k < m with use[k], by grp[k] (0 .. n_groups-1), k
    ascending inside a group (a counting sort; cnt has n_groups + 1 slots)."""
    cdef intp k, x
    for x in range(n_groups + 1):
        cnt[x] = 0
    for k in range(m):
        if use[k]:
            cnt[grp[k] + 1] += 1
    for x in range(n_groups):
        cnt[x + 1] += cnt[x]
    for k in range(m):
        if use[k]:
            order[cnt[grp[k]]] = k
            cnt[grp[k]] += 1


# Scratch of the island path, for one block of rows (allocated once a batch).
# k: a row's place in the block (arrival order); j: its place in a pass.
cdef struct Scratch:
    double* qv             # k: unit vectors
    double* qs             # j: the same, gathered in serving order
    int32_t* g0            # k: island it is served on, -1 skipped
    int32_t* grp           # k: group in this pass
    int32_t* gj            # j: group
    intp* order            # j -> k
    intp* took             # k: tree position taken, -1 none
    intp* src              # k: row whose binding it sees, -1 none
    intp* bfix             # k: else this binding
    intp* sj               # j: src
    intp* bj               # j: bfix
    uint8_t* redo          # k: served in this pass
    uint8_t* bad           # k: conflicted in this pass
    intp* cnt              # per island + 1: counting sort
    intp* cut              # per worker + 1: where its rows of a pass begin
    Joins* joins           # per worker
    int workers


cdef int scratch_open(Scratch* w, intp m, intp n_isl, int workers) noexcept nogil:
    """Allocate scratch for blocks of m rows; -1 (nothing held) when memory runs out."""
    cdef int i
    w.workers = workers
    w.qv = <double*>malloc(3 * m * sizeof(double) + 1)
    w.qs = <double*>malloc(3 * m * sizeof(double) + 1)
    w.g0 = <int32_t*>malloc(m * sizeof(int32_t) + 1)
    w.grp = <int32_t*>malloc(m * sizeof(int32_t) + 1)
    w.gj = <int32_t*>malloc(m * sizeof(int32_t) + 1)
    w.order = <intp*>malloc(m * sizeof(intp) + 1)
    w.took = <intp*>malloc(m * sizeof(intp) + 1)
    w.src = <intp*>malloc(m * sizeof(intp) + 1)
    w.bfix = <intp*>malloc(m * sizeof(intp) + 1)
    w.sj = <intp*>malloc(m * sizeof(intp) + 1)
    w.bj = <intp*>malloc(m * sizeof(intp) + 1)
    w.redo = <uint8_t*>malloc(m + 1)
    w.bad = <uint8_t*>malloc(m + 1)
    w.cnt = <intp*>malloc((n_isl + 1) * sizeof(intp))
    w.cut = <intp*>malloc((workers + 1) * sizeof(intp))
    w.joins = <Joins*>calloc(workers, sizeof(Joins))
    if (w.qv == NULL or w.qs == NULL or w.g0 == NULL or w.grp == NULL or w.gj == NULL
            or w.order == NULL or w.took == NULL or w.src == NULL or w.bfix == NULL
            or w.sj == NULL or w.bj == NULL or w.redo == NULL or w.bad == NULL
            or w.cnt == NULL or w.cut == NULL or w.joins == NULL):
        scratch_close(w)
        return -1
    return 0


cdef void scratch_close(Scratch* w) noexcept nogil:
    cdef int i
    if w.joins != NULL:
        for i in range(w.workers):
            free(w.joins[i].pair)
    free(w.qv); free(w.qs); free(w.g0); free(w.grp); free(w.gj); free(w.order)
    free(w.took); free(w.src); free(w.bfix); free(w.sj); free(w.bj); free(w.redo)
    free(w.bad); free(w.cnt); free(w.cut); free(w.joins)
    w.qv = w.qs = NULL
    w.g0 = w.grp = w.gj = NULL
    w.order = w.took = w.src = w.bfix = w.sj = w.bj = w.cnt = w.cut = NULL
    w.redo = w.bad = NULL
    w.joins = NULL


cdef void serve_groups(State* s, Islands* I, Rows* R, Scratch* w, intp s0, intp jlo,
                       intp jhi, Joins* J) noexcept nogil:
    """Serve the rows of a pass from place jlo to jhi (whole groups): decide each,
    and take its slot only if it read inside its group; else mark it bad and
    note the islands to join.  Writes only leaders of these groups, so workers
    with disjoint groups may run at once."""
    cdef intp j, k, i, c, b, src
    cdef int32_t home
    cdef Result r
    cdef bint ok
    for j in range(jlo, jhi):
        k = w.order[j]
        i = s0 + k
        w.bad[k] = 0
        w.took[k] = -1
        src = w.sj[j]
        if src >= 0 and w.redo[src - s0] and (w.grp[src - s0] != w.gj[j] or w.bad[src - s0]):
            # the row whose binding it sees is served in another group of
            # this pass (maybe later), or is itself in conflict: so is this
            # one, not decided now, and it follows that row
            join(J, w.g0[k], w.g0[src - s0])
            w.bad[k] = 1
            J.n_bad += 1
            if R.left != NULL:
                R.left[i] = NO_LEADER   # never read as an answer: keeps readers safe
            continue
        b = R.left[src] if src >= 0 else w.bj[j]
        serve(s, R, i, w.qs + 3 * j, b, &r)
        if I.one_group:
            ok = True
        else:
            c = R.chosen[i] if R.chosen != NULL else NO_LEADER
            ok = fits(s, I, w.gj[j], w.qs + 3 * j, R.inv[c] if c >= 0 else c,
                      R.inv[b] if b >= 0 else b, &r, &home, J)
            if not ok and home >= 0:
                w.g0[k] = home          # served again where it read
            if (src >= 0 and ok and not w.redo[src - s0]
                    and I.root0[w.g0[src - s0]] != w.gj[j]):
                # it saw the binding of a final row of another group: be
                # served with that group (which may yet be served again)
                join(J, w.g0[k], w.g0[src - s0])
                ok = False
        if ok:
            if r.pos >= 0:
                take(s, r.pos)
            w.took[k] = r.pos
            put(&R.out, R.perm, i, &r)
        else:
            w.bad[k] = 1
            J.n_bad += 1


cdef inline void locate(const Tree* t, const Islands* I, const Rows* R, Scratch* w,
                        intp s0, intp k) noexcept nogil:
    """Row k's unit vector, and the island it is first served on: that of its
    cube (far from every leader: of its nearest leader), a guess which the
    checks make exact."""
    cdef intp i = s0 + k
    if not w.redo[k]:
        return                      # skipped row
    tree_vector(t, R.lat[i], R.lon[i], w.qv + 3 * k)
    w.g0[k] = cube_island(I.cubes, w.qv + 3 * k)
    if w.g0[k] < 0:
        w.g0[k] = nearest_island(t, I, w.qv + 3 * k)


cdef inline void gather(Scratch* w, intp j) noexcept nogil:
    """What the row served j-th in a pass reads, into place j."""
    cdef intp k = w.order[j]
    w.qs[3 * j] = w.qv[3 * k]
    w.qs[3 * j + 1] = w.qv[3 * k + 1]
    w.qs[3 * j + 2] = w.qv[3 * k + 2]
    w.gj[j] = w.grp[k]
    w.sj[j] = w.src[k]
    w.bj[j] = w.bfix[k]


cdef void serve_block_by_island(State* s, Islands* I, Rows* R, Scratch* w, intp s0,
                                intp m) noexcept nogil:
    """Serve rows s0 .. s0+m-1 island by island, with exactly the answers of
    arrival order (see the top of this file).

    A pass gathers what its rows read in serving order, so the serving loop
    reads memory one row after another and keeps a group's leaders in cache;
    with several workers, each serves whole groups of its own.
    """
    cdef const Tree* t = s.t
    cdef intp k, i, j, n_rows = 0, n_redo, n_bad, pos, per, a
    cdef int32_t x
    cdef int passes = 0, wk, nw
    for k in range(m):
        i = s0 + k
        w.took[k] = -1
        w.bad[k] = 0
        # the binding row i sees: that left by the customer's previous row in
        # this block (through skipped rows), else a final one
        w.src[k] = -1
        w.bfix[k] = R.bound_to[i] if R.bound_to != NULL else NO_LEADER
        if R.prev != NULL:
            j = R.prev[i]
            if j >= s0:
                if R.skip != NULL and R.skip[j]:
                    w.src[k] = w.src[j - s0]
                    w.bfix[k] = w.bfix[j - s0]
                else:
                    w.src[k] = j
            elif j >= 0:
                w.bfix[k] = R.left[j]
        w.redo[k] = not (R.skip != NULL and R.skip[i])
        w.g0[k] = -1
        n_rows += w.redo[k]
    # every row's unit vector and first island: independent rows, so on the
    # workers too
    nw = w.workers if m >= w.workers * ISLAND_MIN_ROWS_PER_WORKER else 1
    if nw == 1:
        for k in range(m):
            locate(t, I, R, w, s0, k)
    else:
        for k in prange(m, num_threads=nw, schedule="static"):
            locate(t, I, R, w, s0, k)
    n_redo = n_rows
    ISLAND_STATS[0] += 1
    while n_redo > 0:
        for x in range(I.n_isl):
            I.root0[x] = uf_find(I.parent, x)
            I.first[x] = m
        # rows of this pass grouped, arrival order inside a group
        for k in range(m):
            if w.redo[k]:
                w.grp[k] = I.root0[w.g0[k]]
        sort_by_group(w.grp, w.redo, m, I.n_isl, w.cnt, w.order)
        # workers: about equal shares of the rows, cut between groups
        nw = w.workers if not I.one_group and n_redo >= w.workers * ISLAND_MIN_ROWS_PER_WORKER else 1
        if nw == 1:
            for j in range(n_redo):
                gather(w, j)
        else:
            for j in prange(n_redo, num_threads=nw, schedule="static"):
                gather(w, j)
        per = (n_redo + nw - 1) // nw
        w.cut[0] = 0
        for wk in range(1, nw + 1):
            a = min(w.cut[wk - 1] + per, n_redo)
            while a < n_redo and a > 0 and w.gj[a] == w.gj[a - 1]:
                a += 1
            w.cut[wk] = a
        for wk in range(nw):
            w.joins[wk].n = 0
            w.joins[wk].n_bad = 0
        if nw == 1:
            serve_groups(s, I, R, w, s0, 0, n_redo, &w.joins[0])
        else:
            s.atomic = True
            for wk in prange(nw, num_threads=nw, schedule="static", chunksize=1):
                serve_groups(s, I, R, w, s0, w.cut[wk], w.cut[wk + 1], &w.joins[wk])
            s.atomic = False
        n_bad = 0
        for wk in range(nw):
            n_bad += w.joins[wk].n_bad
            if w.joins[wk].failed:
                I.merge_all = True
            for a in range(w.joins[wk].n):
                uf_union(I.parent, w.joins[wk].pair[2 * a], w.joins[wk].pair[2 * a + 1])
        if n_bad == 0:
            break
        # A group touched by a conflict (as joined now) is served again from
        # its first conflicting row on.  Every row before it read inside its
        # own group a state that only earlier rows of that group had written
        # (a row in conflict takes no slot), so what they did stands.
        passes += 1
        ISLAND_STATS[1] += 1
        ISLAND_STATS[2] += n_bad
        for k in range(m):
            if w.bad[k]:
                x = uf_find(I.parent, w.g0[k])
                I.first[x] = k if k < I.first[x] else I.first[x]
        n_redo = 0
        for k in range(m):
            w.redo[k] = w.g0[k] >= 0 and k >= I.first[uf_find(I.parent, w.g0[k])]
            n_redo += w.redo[k]
        if I.merge_all or passes >= ISLAND_MAX_PASSES:
            # give up on islands: one group, served in arrival order
            for x in range(I.n_isl):
                I.parent[x] = 0
            I.one_group = True
            ISLAND_STATS[4] += 1
            n_redo = n_rows
            for k in range(m):
                w.redo[k] = w.g0[k] >= 0
        ISLAND_STATS[3] += n_redo
        # give back what the rows to serve again took
        for k in range(m):
            if w.redo[k] and w.took[k] >= 0:
                pos = w.took[k]
                set_state(s, pos, s.active[pos], s.load[pos] - 1, s.cap[pos])
                w.took[k] = -1
    for k in range(m):
        if w.g0[k] < 0:
            i = s0 + k
            skip_row(R, i)
            if R.left != NULL:
                R.left[i] = R.left[w.src[k]] if w.src[k] >= 0 else w.bfix[k]
