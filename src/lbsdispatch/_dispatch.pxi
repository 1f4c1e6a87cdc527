# Included by _kdtree.pyx: the capacity-aware dispatch core.
#
# State lives in tree order next to the tree's points.  Each node counts the
# leaders below it that can take an order (``avail``: active and below
# capacity) and those that are active but full (``full``); when a leader fills
# up or frees a slot, the counts on its path to the root change.  The search
# for the nearest leader with room skips every subtree whose ``avail`` is zero,
# so an event where most leaders are full stays as fast as an empty one, and
# a subtree whose largest service radius is below the lower bound is skipped
# as well.
#
# Ordering of candidates (the tie rule of dispatch): by squared chord; leaders
# whose distance is within ``tie_tol`` metres of the best one are tied and
# ordered by the tie keys (load ratio, then priority, then id rank, in the
# order the Rules give), the id rank always last.  With ``tie_tol == 0`` only
# exactly equal distances tie.

DEF KEY_LOAD = 0
DEF KEY_PRIORITY = 1
DEF KEY_ID = 2

# Outcome codes (mirrored by lbsdispatch.dispatch.Outcome).
DEF O_NEAREST = 0
DEF O_SPILLOVER = 1
DEF O_STICKY = 2
DEF O_CHOSEN = 3
DEF O_OUT_OF_RANGE = 4
DEF O_ALL_FULL = 5
DEF O_INVALID = 6

# Why a chosen or bound leader was not used (mirrored by dispatch.Refusal).
DEF R_NONE = 0
DEF R_CHOSEN_UNKNOWN = 1
DEF R_CHOSEN_INACTIVE = 2
DEF R_CHOSEN_OUT_OF_RANGE = 3
DEF R_CHOSEN_FULL = 4
DEF R_BOUND_UNKNOWN = 5
DEF R_BOUND_INACTIVE = 6
DEF R_BOUND_OUT_OF_RANGE = 7
DEF R_BOUND_FULL = 8

# Markers in the chosen / bound arrays (otherwise a leader's original index).
DEF NO_LEADER = -1
DEF UNKNOWN_LEADER = -2


cdef struct State:
    const Tree* t
    int64_t* cap           # capacity, tree order
    int64_t* load          # live load, tree order
    uint8_t* active
    uint8_t* ok            # active and load < cap
    uint8_t* st            # ok + 2 * active: 3 room, 2 full, 0 inactive (see PEN_OK)
    const double* r2       # own service radius as squared chord (inf: none)
    const double* rm       # own service radius in metres (inf: none)
    const int64_t* prio
    const double* maxr2    # per node: largest r2 below it
    int32_t* avail         # per node: leaders with room below it
    int32_t* full          # per node: active leaders without room below it
    int32_t* live          # per node: active leaders below it (avail + full)
    const intp* leaf_of    # tree position -> leaf node
    double g2              # global max distance as squared chord (inf: none)
    double gm              # global max distance in metres (inf: none)
    double tie_tol         # tie tolerance in metres
    bint plain             # no radius at all (global or own): every leader is in range
    bint no_own_r          # no leader has a radius of its own (a global one may be set)
    int keys[3]
    int nkeys
    bint strict            # capacity enforced
    bint atomic            # several workers write at once (see counts_add)


cdef inline bint within(const State* s, intp p, double d2, const double* q) noexcept nogil:
    """Is leader p (at squared chord d2 from q) inside the global and its own radius?

    Decided on the squared chord when it is clearly in or out; in the thin band
    where rounding could matter, on the metres that the result reports.
    """
    cdef double lim = s.r2[p] if s.r2[p] < s.g2 else s.g2
    cdef double m
    if d2 < lim * (1.0 - 1e-11):
        return True
    if d2 > lim * (1.0 + 1e-11) + 1e-300:
        return False
    m = chord2_to_m(d2, q, s.t.pts + 3 * p)
    return m <= s.rm[p] and m <= s.gm


cdef inline bint tie_less(const State* s, intp a, intp b) noexcept nogil:
    """Does leader a come before leader b among tied leaders?"""
    cdef int i
    cdef int64_t x, y
    for i in range(s.nkeys):
        if s.keys[i] == KEY_LOAD:
            # load / cap compared exactly: loads and capacities are < 2^31.  A
            # capacity of 0 (possible with capacity="unlimited") is an infinite
            # ratio, which keeps the order transitive.
            if s.cap[a] == 0 or s.cap[b] == 0:
                if (s.cap[a] == 0) != (s.cap[b] == 0):
                    return s.cap[b] == 0
                continue
            x = s.load[a] * s.cap[b]
            y = s.load[b] * s.cap[a]
            if x != y:
                return x < y
        elif s.keys[i] == KEY_PRIORITY:
            if s.prio[a] != s.prio[b]:
                return s.prio[a] > s.prio[b]
        else:
            break
    return s.t.rank[a] < s.t.rank[b]


cdef inline bint ahead(const State* s, const double* q, double d2a, intp a, double d2b,
                       intp b) noexcept nogil:
    """Does leader a (at d2a) come before leader b (at d2b) for an order at q?
    By distance (see ``by_distance``); equal distances are ordered by the tie keys."""
    cdef int c = by_distance(s.t, q, d2a, a, d2b, b)
    return c < 0 or (c == 0 and tie_less(s, a, b))


# Addends to a distance by leader state (State.st): the leaf scans take the
# least distance among leaders with room, and among full ones, without a branch.
cdef double PEN_OK[4]
cdef double PEN_FULL[4]
PEN_OK[:] = [INFINITY, INFINITY, INFINITY, 0.0]
PEN_FULL[:] = [INFINITY, INFINITY, 0.0, INFINITY]


cdef inline void set_ok(State* s, intp p, uint8_t v) noexcept nogil:
    s.ok[p] = v
    s.st[p] = (v != 0) + 2 * (s.active[p] != 0)     # an index into PEN_OK / PEN_FULL


cdef extern from *:
    """
    static inline void lbs_atomic_add(int32_t* p, int32_t v) {
        __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    }
    """
    void lbs_atomic_add(int32_t* p, int32_t v) noexcept nogil


cdef inline void counts_add(State* s, intp p, int32_t davail, int32_t dfull) noexcept nogil:
    # Atomic while several workers serve islands (they share the nodes near the
    # root; a search reading a count mid-change only visits a node in vain, or
    # prunes one whose leaders it would not pick: the island checks see to it).
    cdef intp node = s.leaf_of[p]
    cdef int32_t dlive = davail + dfull       # 0 when a leader fills up
    while True:
        if s.atomic:
            lbs_atomic_add(&s.avail[node], davail)
            lbs_atomic_add(&s.full[node], dfull)
            if dlive != 0:
                lbs_atomic_add(&s.live[node], dlive)
        else:
            s.avail[node] += davail
            s.full[node] += dfull
            s.live[node] += dlive
        if node == 0:
            return
        node = (node - 1) >> 1


cdef void set_state(State* s, intp p, uint8_t active, int64_t load, int64_t cap) noexcept nogil:
    """Change one leader's active flag, load and capacity, keeping node counts exact."""
    cdef uint8_t was_ok = s.ok[p]
    cdef uint8_t was_full = s.active[p] and not was_ok
    cdef uint8_t now_ok, now_full
    s.active[p] = active
    s.load[p] = load
    s.cap[p] = cap
    now_ok = active and (load < cap or not s.strict)
    now_full = active and not now_ok
    set_ok(s, p, now_ok)
    if was_ok != now_ok or was_full != now_full:
        counts_add(s, p, <int32_t>now_ok - <int32_t>was_ok, <int32_t>now_full - <int32_t>was_full)


DEF FULLBUF = 128
DEF DEFER = 32


cdef struct Pick:
    double d2
    intp pos
    intp n_full            # active full leaders strictly nearer than pos, in range
    bint overflow          # more full leaders seen than the buffer holds: recount


DEF TIEBUF = 64


cdef struct Ties:
    # With a tie tolerance, the leaders with room a walk meets within the tie
    # ball of its nearest pick so far (the ball only shrinks as the pick
    # improves): at the end, the first of them by tie keys is the answer.
    double read2           # out: the tie ball of the nearest, squared chord (with slack)
    intp n
    bint overflow          # more than TIEBUF met: the caller walks the ball again
    intp pos[TIEBUF]
    double d2[TIEBUF]


cdef inline double tie_bound(double d2, double tol_c, double cap) noexcept nogil:
    """A squared chord that every leader within the tolerance of the nearest
    (at d2) lies within: chord(a + t) <= chord(a) + t (``tol_c``: the
    tolerance as an angle, tol / R), with a margin for rounding; the exact
    ball is worked out once, at the end."""
    cdef double c = sqrt(d2) + tol_c
    c = c * c * (1.0 + 1e-9) + 1e-300
    return c if c < cap else cap


cdef inline double scan_plain(const State* s, const double* q, intp p0, intp n, Pick* b,
                              double* bnd) noexcept nogil:
    """Scan leaders p0 .. p0+n-1 (no leader with a radius of its own) for ``nearest_ok``;
    returns the least distance of a full leader among them (inf: none).

    Which leaders are full, and which distance beats the bound, are coin flips
    for the branch predictor, so the pass over the leaders has no branch: it
    keeps the least and second least distance among leaders with room and
    where the least is, and the least among full ones (``PEN_OK`` and
    ``PEN_FULL`` add infinity to the others).  Then one comparison with the
    pick; only two leaders within rounding of each other need the tie rule on
    the whole run.
    """
    cdef const double* x = s.t.pts + 3 * p0
    cdef const uint8_t* st = s.st + p0
    cdef const uint8_t* ok = s.ok + p0
    cdef double dx, dy, dz, d2, fd, thr
    cdef double m = INFINITY, m2 = INFINITY, mf = INFINITY
    cdef intp j, jm = 0
    for j in range(n):
        dx = q[0] - x[3 * j]
        dy = q[1] - x[3 * j + 1]
        dz = q[2] - x[3 * j + 2]
        d2 = dx * dx + dy * dy + dz * dz
        fd = d2 + PEN_FULL[st[j]]
        mf = fd if fd < mf else mf
        fold_least(d2 + PEN_OK[st[j]], j, &m, &m2, &jm)
    if m > bnd[0]:
        return mf
    thr = with_slack(m)
    if m2 > thr:
        # with a global radius, the bound may let in a leader just past it (the
        # rounding band): then every farther one here is past it too
        if ((s.plain or within(s, p0 + jm, m, q))
                and (b.pos < 0 or ahead(s, q, m, p0 + jm, b.d2, b.pos))):
            b.d2 = m
            b.pos = p0 + jm
            bnd[0] = thr
        return mf
    for j in range(n):          # near-equal distances: the tie rule decides
        dx = q[0] - x[3 * j]
        dy = q[1] - x[3 * j + 1]
        dz = q[2] - x[3 * j + 2]
        d2 = dx * dx + dy * dy + dz * dz
        if d2 <= thr and ok[j] and (s.plain or within(s, p0 + j, d2, q)):
            if b.pos < 0 or ahead(s, q, d2, p0 + j, b.d2, b.pos):
                b.d2 = d2
                b.pos = p0 + j
                bnd[0] = with_slack(d2)
    return mf


cdef inline intp full_below(const State* s, const double* q, intp p0, intp n,
                            double below) noexcept nogil:
    """Full leaders among p0 .. p0+n-1 strictly nearer than squared chord ``below``."""
    cdef const double* x = s.t.pts + 3 * p0
    cdef const uint8_t* st = s.st + p0
    cdef double dx, dy, dz
    cdef intp j, c = 0
    for j in range(n):
        dx = q[0] - x[3 * j]
        dy = q[1] - x[3 * j + 1]
        dz = q[2] - x[3 * j + 2]
        c += dx * dx + dy * dy + dz * dz + PEN_FULL[st[j]] < below
    return c


cdef void tie_pick(const State* s, const double* q, Ties* tie, Pick* b) noexcept nogil:
    """From the nearest (in b): the tie ball, and unless the walk met too many
    leaders with room to keep them all, the first of them in it by tie keys."""
    cdef intp i
    tie.read2 = with_slack(m_to_chord2(chord2_to_m(b.d2, q, s.t.pts + 3 * b.pos) + s.tie_tol))
    if tie.overflow:
        return
    for i in range(tie.n):
        if tie.d2[i] <= tie.read2 and tie_less(s, tie.pos[i], b.pos):
            b.pos = tie.pos[i]
            b.d2 = tie.d2[i]


cdef void nearest_ok(const State* s, const double* q, double bound, Pick* b,
                     bint count, Ties* tie) noexcept nogil:
    """Nearest leader with room inside its own and the global radius, into ``b``.

    Equal distances are ordered by the tie keys.  With ``count``, the same walk
    also visits subtrees holding only full leaders (they cannot take the order
    but may be nearer) and counts the full leaders strictly nearer than the
    pick, so a spill is recognised without a second search.  Until a leader
    with room is found, such subtrees wait on a stack of their own: visited
    only once there is a pick, within its distance (with no leader with room
    in range, an order would otherwise walk every full leader in range; nation
    event at 0.8x capacity and 5 km: 5.7 s).  ``b.pos`` stays -1 if no leader
    qualifies.

    With ``tie`` (a tie tolerance), the walk keeps going out to the tie ball
    of its nearest pick, and ``b`` ends as the first leader by tie keys in the
    ball of the nearest (``tie.read2``); the full leaders are counted against
    that pick.  Unless ``tie.overflow``: then ``b`` is the nearest and the
    caller picks among the tied (``best_tied``).
    """
    cdef const Tree* t = s.t
    cdef Frame stack[MAX_DEPTH + DEFER]
    cdef Frame later[DEFER]       # subtrees of full leaders met before any pick
    cdef intp n_later = 0
    cdef double fd2[FULLBUF]      # distances of full leaders seen (radius rules)
    cdef intp nf = 0
    cdef intp fleaf[FULLBUF]      # leaves with a full leader within the bound (no radius)
    cdef double fmin[FULLBUF]     # and the least distance of one
    cdef intp nl = 0
    cdef double lb, mf
    cdef intp top = 0, node = 0, p, end, near, far, i
    cdef int32_t d
    cdef double dx, dy, dz, d2, diff, rd = 0.0, nrd, old
    cdef double off[3]          # per-axis offsets to the planes crossed so far
    cdef double bnd = bound
    cdef const double* x
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    b.pos = -1
    b.d2 = INFINITY
    b.n_full = 0
    b.overflow = False
    if tie != NULL:
        tie.n = 0
        tie.overflow = False
    if s.avail[0] == 0:
        return
    # subtrees worth a visit: with room, or, when counting, any active leader
    cdef const int32_t* want = s.live if count else s.avail
    while True:
        while node < t.first_leaf:
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            far = 4 * node + 3 - near
            old = off[d]          # an index, not a branch: d is unpredictable
            nrd = rd - old * old + diff * diff
            if want[far] > 0 and nrd <= bnd and (s.plain or nrd <= s.maxr2[far]):
                if b.pos < 0 and s.avail[far] == 0 and n_later < DEFER:
                    push_frame(&later[n_later], far, nrd, off, d, diff)
                    n_later += 1
                else:
                    push_frame(&stack[top], far, nrd, off, d, diff)
                    top += 1
            if want[near] > 0 and (s.plain or rd <= s.maxr2[near]):
                if b.pos < 0 and s.avail[near] == 0 and n_later < DEFER:
                    push_frame(&later[n_later], near, rd, off, d, old)
                    n_later += 1
                    node = -1
                    break
                node = near
            else:
                node = -1
                break
        if node >= 0 and s.no_own_r and tie == NULL:
            # a leaf whose nearest full leader lies within the bound may hold
            # full leaders nearer than the final pick: counted at the end
            lb = bnd
            mf = scan_plain(s, q, t.start[node], t.end[node] - t.start[node], b, &bnd)
            if count and mf <= lb:
                if nl < FULLBUF:
                    fleaf[nl] = node
                    fmin[nl] = mf
                    nl += 1
                else:
                    b.overflow = True          # recounted by the caller
        elif node >= 0:
            p = t.start[node]
            end = t.end[node]
            x = t.pts + 3 * p
            while p < end:
                # distance first: the comparison below is rarely true and so
                # predictable, unlike the leader's state
                dx = q[0] - x[0]
                dy = q[1] - x[1]
                dz = q[2] - x[2]
                d2 = dx * dx + dy * dy + dz * dz
                if d2 <= bnd and s.active[p] and within(s, p, d2, q):
                    if s.ok[p]:
                        if b.pos < 0 or ahead(s, q, d2, p, b.d2, b.pos):
                            b.d2 = d2
                            b.pos = p
                            bnd = (with_slack(d2) if tie == NULL
                                   else tie_bound(d2, s.tie_tol / EARTH_R, bound))
                        if tie != NULL:
                            if tie.n < TIEBUF:
                                tie.pos[tie.n] = p
                                tie.d2[tie.n] = d2
                                tie.n += 1
                            else:
                                tie.overflow = True
                    elif count:
                        if nf < FULLBUF:
                            fd2[nf] = d2
                            nf += 1
                        else:
                            b.overflow = True
                x += 3
                p += 1
        while True:
            if top == 0 and n_later > 0 and b.pos >= 0:
                # a pick: the waiting subtrees of full leaders, within its distance
                memcpy(stack, later, n_later * sizeof(Frame))
                top = n_later
                n_later = 0
            if top == 0:
                if tie != NULL and b.pos >= 0:
                    tie_pick(s, q, tie, b)
                for i in range(nf):
                    b.n_full += fd2[i] < b.d2
                for i in range(nl):
                    if fmin[i] < b.d2:
                        p = t.start[fleaf[i]]
                        b.n_full += full_below(s, q, p, t.end[fleaf[i]] - p, b.d2)
                return
            top -= 1
            if stack[top].rd <= bnd:
                break
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


cdef void best_tied(const State* s, const double* q, double bound, Pick* b) noexcept nogil:
    """Among leaders with room within ``bound`` (squared chord), the first by tie
    keys; the same walk counts the full leaders strictly nearer than that pick
    (all lie within the bound, as the pick does) into ``b.n_full``
    (``b.overflow``: more than the buffer holds, to be recounted)."""
    cdef const Tree* t = s.t
    cdef Frame stack[MAX_DEPTH]
    cdef double fd2[FULLBUF]      # distances of the full leaders seen
    cdef intp nf = 0, i
    cdef intp top = 0, node = 0, p, end, near, far
    cdef int32_t d
    cdef double dx, dy, dz, d2, diff, rd = 0.0, nrd, old
    cdef double off[3]          # per-axis offsets to the planes crossed so far
    cdef const double* x
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    b.n_full = 0
    b.overflow = False
    while True:
        while node < t.first_leaf:
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            far = 4 * node + 3 - near
            old = off[d]          # an index, not a branch: d is unpredictable
            nrd = rd - old * old + diff * diff
            # subtrees with any active leader: full ones are counted
            if s.live[far] > 0 and nrd <= bound and nrd <= s.maxr2[far]:
                push_frame(&stack[top], far, nrd, off, d, diff)
                top += 1
            if s.live[near] > 0 and rd <= s.maxr2[near]:
                node = near
            else:
                node = -1
                break
        if node >= 0:
            p = t.start[node]
            end = t.end[node]
            x = t.pts + 3 * p
            while p < end:
                if s.active[p]:
                    dx = q[0] - x[0]
                    dy = q[1] - x[1]
                    dz = q[2] - x[2]
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 <= bound and within(s, p, d2, q):
                        if not s.ok[p]:
                            if nf < FULLBUF:
                                fd2[nf] = d2
                                nf += 1
                            else:
                                b.overflow = True
                        elif tie_less(s, p, b.pos) if b.pos >= 0 else True:
                            b.d2 = d2
                            b.pos = p
                x += 3
                p += 1
        if top == 0:
            for i in range(nf):
                b.n_full += fd2[i] < b.d2
            return
        top -= 1
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


cdef intp count_full(const State* s, const double* q, double below, bint first_only) noexcept nogil:
    """Active full leaders strictly nearer than squared chord ``below`` that would
    serve q (inside their own and the global radius).  With ``first_only``,
    stops at the first one (an existence test)."""
    cdef const Tree* t = s.t
    cdef Frame stack[MAX_DEPTH]
    cdef intp top = 0, node = 0, p, end, near, far, count = 0
    cdef int32_t d
    cdef double dx, dy, dz, d2, diff, rd = 0.0, nrd, old
    cdef double off[3]          # per-axis offsets to the planes crossed so far
    cdef double bound = with_slack(below)
    cdef const double* x
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    if s.full[0] == 0:
        return 0
    while True:
        while node < t.first_leaf:
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            far = 4 * node + 3 - near
            old = off[d]          # an index, not a branch: d is unpredictable
            nrd = rd - old * old + diff * diff
            if s.full[far] > 0 and nrd <= bound and nrd <= s.maxr2[far]:
                push_frame(&stack[top], far, nrd, off, d, diff)
                top += 1
            if s.full[near] > 0 and rd <= s.maxr2[near]:
                node = near
            else:
                node = -1
                break
        if node >= 0:
            p = t.start[node]
            end = t.end[node]
            x = t.pts + 3 * p
            while p < end:
                if s.active[p] and not s.ok[p]:
                    dx = q[0] - x[0]
                    dy = q[1] - x[1]
                    dz = q[2] - x[2]
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 < below and within(s, p, d2, q):
                        count += 1
                        if first_only:
                            return count
                x += 3
                p += 1
        if top == 0:
            return count
        top -= 1
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


cdef int usable(const State* s, intp p, const double* q, double* d2out) noexcept nogil:
    """0 if leader p can take an order at q, else 1 inactive, 2 out of range, 3 full."""
    cdef const double* x = s.t.pts + 3 * p
    cdef double dx = q[0] - x[0], dy = q[1] - x[1], dz = q[2] - x[2]
    cdef double d2 = dx * dx + dy * dy + dz * dz
    d2out[0] = d2
    if not s.active[p]:
        return 1
    if not within(s, p, d2, q):
        return 2
    if not s.ok[p]:
        return 3
    return 0


cdef struct Result:
    intp pos               # tree position of the leader, -1 if none
    double dist_m
    int outcome
    int refusal
    int32_t n_full
    double read2           # the answer depends on leaders within this squared chord
                           # of the order (and its chosen / bound leader); -1: no search


cdef inline void take(State* s, intp p) noexcept nogil:
    """Give leader p one more order."""
    s.load[p] += 1
    if s.strict and s.load[p] >= s.cap[p]:
        set_ok(s, p, 0)
        counts_add(s, p, -1, 1)


cdef void decide(State* s, const double* q, intp chosen, intp bound_to,
                 Result* r) noexcept nogil:
    """Where one order goes under the rules, without taking the slot (chosen and
    bound are tree positions or NO_LEADER / UNKNOWN_LEADER)."""
    cdef int why
    cdef double d2, lim
    cdef Pick b
    cdef Ties tie
    r.refusal = R_NONE
    r.n_full = 0
    r.pos = -1
    r.read2 = -1.0
    if chosen == UNKNOWN_LEADER:
        r.refusal = R_CHOSEN_UNKNOWN
    elif chosen >= 0:
        why = usable(s, chosen, q, &d2)
        if why == 0:
            r.pos = chosen
            r.outcome = O_CHOSEN
        else:
            r.refusal = R_CHOSEN_UNKNOWN + why
    if r.pos < 0 and bound_to != NO_LEADER:
        if bound_to == UNKNOWN_LEADER:
            if r.refusal == R_NONE:
                r.refusal = R_BOUND_UNKNOWN
        else:
            why = usable(s, bound_to, q, &d2)
            if why == 0:
                r.pos = bound_to
                r.outcome = O_STICKY
            elif r.refusal == R_NONE:
                r.refusal = R_BOUND_UNKNOWN + why
    if r.pos < 0:
        lim = with_slack(s.g2) if s.g2 < 4.0 else INFINITY
        if s.tie_tol == 0.0:
            nearest_ok(s, q, lim, &b, True, NULL)
            r.read2 = with_slack(b.d2)
        else:
            # everything within tie_tol metres of the nearest is tied: one walk
            # out to that ball picks among them (two when it met too many)
            nearest_ok(s, q, lim, &b, True, &tie)
            if b.pos >= 0:
                r.read2 = tie.read2
                if tie.overflow:
                    best_tied(s, q, r.read2, &b)
        if b.pos < 0:
            # no leader in range had room: every leader in range was read
            r.read2 = lim if s.plain or s.maxr2[0] > lim else with_slack(s.maxr2[0])
            r.dist_m = INFINITY
            # a full leader in range? (bounded by the range: past it none counts)
            r.outcome = O_ALL_FULL if count_full(s, q, lim, True) else O_OUT_OF_RANGE
            return
        r.pos = b.pos
        d2 = b.d2
        r.n_full = <int32_t>(count_full(s, q, d2, False) if b.overflow else b.n_full)
        r.outcome = O_SPILLOVER if r.n_full > 0 else O_NEAREST
    r.dist_m = chord2_to_m(d2, q, s.t.pts + 3 * r.pos)


cdef inline void dispatch_one(State* s, const double* q, intp chosen, intp bound_to,
                              Result* r) noexcept nogil:
    """Assign one order under the rules and take the slot."""
    decide(s, q, chosen, bound_to, r)
    if r.pos >= 0:
        take(s, r.pos)


# Where a row's answer goes (one slot a row).
cdef struct Out:
    intp* leader
    double* dist
    int8_t* outcome
    int8_t* refusal
    int32_t* n_full


# One batch as the row servers see it (rows in input order).
cdef struct Rows:
    const double* lat
    const double* lon
    const intp* chosen     # original index or marker; NULL: no row has one
    const intp* bound_to   # binding before the batch; NULL: none
    const intp* prev       # previous row of the same customer (-1: none); NULL: none
    const uint8_t* skip    # rows left INVALID; NULL: none
    bint override
    intp* left             # binding after each row (NULL when prev is NULL)
    const intp* inv        # original index -> tree position
    const intp* perm       # tree position -> original index
    Out out                # the answers, input order


cdef inline void put(Out* o, const intp* perm, intp j, const Result* r) noexcept nogil:
    """Write answer r into slot j."""
    o.leader[j] = perm[r.pos] if r.pos >= 0 else -1
    o.dist[j] = r.dist_m
    o.outcome[j] = r.outcome
    o.refusal[j] = r.refusal
    o.n_full[j] = r.n_full


cdef inline void skip_row(Rows* R, intp i) noexcept nogil:
    R.out.leader[i] = -1
    R.out.dist[i] = INFINITY
    R.out.outcome[i] = O_INVALID
    R.out.refusal[i] = R_NONE
    R.out.n_full[i] = 0


cdef inline void serve(State* s, Rows* R, intp i, const double* q, intp b,
                       Result* r) noexcept nogil:
    """Decide row i (at q, seeing binding b: an original index or a marker) into
    r, and note the binding it leaves; the caller takes the slot."""
    cdef intp c = R.chosen[i] if R.chosen != NULL else NO_LEADER
    cdef intp got
    decide(s, q, R.inv[c] if c >= 0 else c, R.inv[b] if b >= 0 else b, r)
    if R.left != NULL:
        got = R.perm[r.pos] if r.pos >= 0 else -1
        R.left[i] = got if got >= 0 and (R.override or b == NO_LEADER) else b


# Rows whose unit vectors are worked out ahead of serving them (see serve_in_order).
DEF CHUNK = 64
cdef bint PRE_VECTORS = True


def _set_pre_vectors(bint on):
    """Work out a chunk's unit vectors before serving it (for A/B timing); returns
    the old setting."""
    global PRE_VECTORS
    old = PRE_VECTORS
    PRE_VECTORS = on
    return old


cdef void serve_in_order(State* s, Rows* R, intp s0, intp e) noexcept nogil:
    """Serve rows s0 .. e-1 one after another.

    The unit vectors of a chunk of rows are worked out first, in a loop of
    their own: the sines and cosines depend on nothing the serving does, and
    out of the serving loop (whose branches on the tree's data mispredict and
    flush the work in flight) they run back to back at full speed.
    """
    cdef intp i, j, b, c0, c1
    cdef double qs[3 * CHUNK]
    cdef double* q
    cdef Result r
    for c0 in range(s0, e, CHUNK):
        c1 = min(c0 + CHUNK, e)
        if PRE_VECTORS:
            for i in range(c0, c1):
                tree_vector(s.t, R.lat[i], R.lon[i], qs + 3 * (i - c0))
        for i in range(c0, c1):
            q = qs + 3 * (i - c0)
            j = R.prev[i] if R.prev != NULL else -1
            b = R.left[j] if j >= 0 else (R.bound_to[i] if R.bound_to != NULL else NO_LEADER)
            if R.skip != NULL and R.skip[i]:
                skip_row(R, i)
                if R.left != NULL:
                    R.left[i] = b
                continue
            if not PRE_VECTORS:
                tree_vector(s.t, R.lat[i], R.lon[i], q)
            serve(s, R, i, q, b, &r)
            if r.pos >= 0:
                take(s, r.pos)
            put(&R.out, R.perm, i, &r)


include "_islands.pxi"


cdef class _DispatchCore:
    """Live capacity state of one event over a :class:`_LeaderTree`.

    Arrays given to and returned by its methods are in the leaders' original
    order; tree order stays inside.
    """

    cdef State s
    cdef readonly _LeaderTree tree
    cdef object _cap, _load, _active, _ok, _st, _r2, _rm, _prio, _maxr2, _avail, _full, _live
    cdef object _leaf_of
    cdef object _node_island       # island of every tree node (see _islands.pxi), lazily
    cdef CubeMap cubes             # and of every cube holding a leader
    cdef object _pt_island         # and of every leader, tree order
    cdef intp _n_isl
    cdef double _island_link
    cdef const intp[::1] inv       # original index -> tree position

    def __init__(self, _LeaderTree tree, capacity, load, active, radius_m, priority,
                 double max_distance_m, double tie_tolerance_m, tie_keys, bint strict):
        cdef intp n = tree.n_leaders, i, node, p
        cdef const intp[::1] perm = tree.perm_v
        self.tree = tree
        perm_a = np.asarray(tree._perm)
        inv = np.empty(n, dtype=np.intp)
        inv[perm_a] = np.arange(n, dtype=np.intp)
        self.inv = inv
        self._cap = np.ascontiguousarray(np.asarray(capacity, dtype=np.int64)[perm_a])
        self._load = np.ascontiguousarray(np.asarray(load, dtype=np.int64)[perm_a])
        self._active = np.ascontiguousarray(np.asarray(active, dtype=np.uint8)[perm_a])
        rm = np.ascontiguousarray(np.asarray(radius_m, dtype=np.float64)[perm_a])
        self._rm = rm
        self._r2 = np.array([m_to_chord2(v) if v != INFINITY else INFINITY for v in rm.tolist()],
                            dtype=np.float64)
        self._prio = np.ascontiguousarray(np.asarray(priority, dtype=np.int64)[perm_a])
        n_nodes = tree._start.shape[0]
        self._maxr2 = np.full(n_nodes, -1.0)
        self._avail = np.zeros(n_nodes, dtype=np.int32)
        self._full = np.zeros(n_nodes, dtype=np.int32)
        self._live = np.zeros(n_nodes, dtype=np.int32)
        self._ok = np.zeros(n, dtype=np.uint8)
        self._st = np.zeros(n, dtype=np.uint8)
        self._leaf_of = np.zeros(n, dtype=np.intp)
        cdef int64_t[::1] capv = self._cap
        cdef int64_t[::1] loadv = self._load
        cdef uint8_t[::1] actv = self._active
        cdef uint8_t[::1] okv = self._ok
        cdef uint8_t[::1] stv = self._st
        cdef const double[::1] r2v = self._r2
        cdef const double[::1] rmv = self._rm
        cdef const int64_t[::1] priov = self._prio
        cdef double[::1] maxr2v = self._maxr2
        cdef int32_t[::1] availv = self._avail
        cdef int32_t[::1] fullv = self._full
        cdef int32_t[::1] livev = self._live
        cdef intp[::1] leafv = self._leaf_of
        self.s.t = &tree.t
        self.s.cap = &capv[0] if n else NULL
        self.s.load = &loadv[0] if n else NULL
        self.s.active = &actv[0] if n else NULL
        self.s.ok = &okv[0] if n else NULL
        self.s.st = &stv[0] if n else NULL
        self.s.r2 = &r2v[0] if n else NULL
        self.s.rm = &rmv[0] if n else NULL
        self.s.prio = &priov[0] if n else NULL
        self.s.maxr2 = &maxr2v[0]
        self.s.avail = &availv[0]
        self.s.full = &fullv[0]
        self.s.live = &livev[0]
        self.s.leaf_of = &leafv[0] if n else NULL
        self.s.strict = strict
        self.s.atomic = False
        self.s.gm = max_distance_m
        self.s.g2 = m_to_chord2(max_distance_m) if max_distance_m != INFINITY else INFINITY
        self.s.tie_tol = tie_tolerance_m
        self.s.no_own_r = bool(np.all(rm == np.inf))
        self.s.plain = self.s.g2 == INFINITY and self.s.no_own_r
        self.s.nkeys = 0
        for key in tie_keys:
            self.s.keys[self.s.nkeys] = {"load": KEY_LOAD, "priority": KEY_PRIORITY,
                                         "id": KEY_ID}[key]
            self.s.nkeys += 1
        # leaves: their points; internal nodes: the union of their children
        for node in range(n_nodes - 1, -1, -1):
            if node >= tree.t.first_leaf:
                for p in range(tree.t.start[node], tree.t.end[node]):
                    leafv[p] = node
                    if r2v[p] > maxr2v[node]:
                        maxr2v[node] = r2v[p]
                    okv[p] = actv[p] and (loadv[p] < capv[p] or not strict)
                    stv[p] = okv[p] + 2 * (actv[p] != 0)
                    availv[node] += okv[p]
                    fullv[node] += actv[p] and not okv[p]
            else:
                maxr2v[node] = max(maxr2v[2 * node + 1], maxr2v[2 * node + 2])
                availv[node] = availv[2 * node + 1] + availv[2 * node + 2]
                fullv[node] = fullv[2 * node + 1] + fullv[2 * node + 2]
            livev[node] = availv[node] + fullv[node]

    def __dealloc__(self):
        free(self.cubes.key)
        free(self.cubes.island)

    # -- state in original order ----------------------------------------------
    def _orig(self, arr):
        """A tree-order array put back in the leaders' original order."""
        out = np.empty_like(arr)
        out[np.asarray(self.tree._perm)] = arr
        return out

    def loads(self):
        """Live loads in the leaders' original order."""
        return self._orig(self._load)

    def actives(self):
        """Active flags in the leaders' original order."""
        return self._orig(self._active).astype(bool)

    def capacities(self):
        """Capacities in the leaders' original order."""
        return self._orig(self._cap)

    def set_leader(self, intp i, active, load, capacity):
        """Set leader i's (original index) active flag, load and capacity."""
        cdef intp p = self.inv[i]
        a = self.s.active[p] if active is None else bool(active)
        l = self.s.load[p] if load is None else int(load)
        c = self.s.cap[p] if capacity is None else int(capacity)
        set_state(&self.s, p, a, l, c)

    def leader_state(self, intp i):
        """(active, load, capacity) of leader i (original index)."""
        cdef intp p = self.inv[i]
        return bool(self.s.active[p]), int(self.s.load[p]), int(self.s.cap[p])

    def _check_counts(self):
        """Recount every node from the leaders (a test of the incremental counts)."""
        fresh = _DispatchCore(self.tree, self.capacities(), self.loads(), self.actives(),
                              self._orig(self._rm), self._orig(self._prio), self.s.gm,
                              self.s.tie_tol, (), self.s.strict)
        return (np.array_equal(fresh._avail, self._avail)
                and np.array_equal(fresh._full, self._full)
                and np.array_equal(fresh._live, self._live)
                and np.array_equal(fresh._ok, self._ok))

    # -- dispatch ----------------------------------------------------------------
    def assign_one(self, double lat, double lon, intp chosen, intp bound_to):
        """Assign one validated order; returns (leader index or -1, metres, outcome,
        refusal, n_full_nearer)."""
        cdef double q[3]
        cdef Result r
        cdef intp c = self.inv[chosen] if chosen >= 0 else chosen
        cdef intp b = self.inv[bound_to] if bound_to >= 0 else bound_to
        tree_vector(self.s.t, lat, lon, q)
        dispatch_one(&self.s, q, c, b, &r)
        return (self.tree.perm_v[r.pos] if r.pos >= 0 else -1, r.dist_m, r.outcome,
                r.refusal, r.n_full)

    def assign_many(self, const double[::1] lat, const double[::1] lon, chosen, bound_to,
                    prev_same, bint override, skip, intp[::1] leader, double[::1] dist,
                    int8_t[::1] outcome, int8_t[::1] refusal, int32_t[::1] n_full,
                    int workers=1):
        """Assign validated orders, with the answers of input order (rows with
        ``skip`` set are left INVALID); fills the output arrays.

        ``chosen`` is each row's chosen leader (original index or a marker).
        ``bound_to`` is each row's binding before the batch (original index
        or a marker).  ``prev_same[i]`` is the previous row of the same
        customer in this batch (-1: none); such a row sees the binding that
        row left behind: the leader it was assigned to when the customer had
        no binding yet or ``override`` is set, else the binding it saw.  So
        the batch equals one ``assign`` after another with bindings written as
        they go.  ``chosen``, ``bound_to``, ``prev_same`` and ``skip`` may be
        None: no row has one.

        Large batches on large trees are served island by island (see
        ``_islands.pxi``), which gives the same answers, and then by up to
        ``workers`` threads.
        """
        cdef intp n = lat.shape[0], s0, m, block
        cdef Rows R
        cdef const intp[::1] ch, bt, pv
        cdef const uint8_t[::1] sk
        cdef intp[::1] left
        cdef Islands I
        cdef Scratch W
        cdef bint by_island
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        for name, arr in (("lon", lon), ("leader", leader), ("dist", dist),
                          ("outcome", outcome), ("refusal", refusal), ("n_full", n_full)):
            if arr.shape[0] != n:
                raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n}")
        R.chosen = R.bound_to = R.prev = NULL
        R.skip = NULL
        R.left = NULL
        if chosen is not None:
            ch = _rows_of(chosen, n, "chosen")
            R.chosen = &ch[0] if n else NULL
        if bound_to is not None:
            bt = _rows_of(bound_to, n, "bound_to")
            R.bound_to = &bt[0] if n else NULL
        if prev_same is not None:
            pv = _rows_of(prev_same, n, "prev_same")
            R.prev = &pv[0] if n else NULL
            left = np.empty(n, dtype=np.intp)
            R.left = &left[0] if n else NULL
        if skip is not None:
            sk = skip
            if sk.shape[0] != n:
                raise ValueError(f"skip has {sk.shape[0]} rows, expected {n}")
            R.skip = &sk[0] if n else NULL
        if n == 0:
            return
        R.lat = &lat[0]
        R.lon = &lon[0]
        R.override = override
        R.inv = &self.inv[0] if self.tree.n_leaders else NULL     # never read then
        R.perm = &self.tree.perm_v[0] if self.tree.n_leaders else NULL
        R.out.leader = &leader[0]
        R.out.dist = &dist[0]
        R.out.outcome = &outcome[0]
        R.out.refusal = &refusal[0]
        R.out.n_full = &n_full[0]
        by_island = (n >= ISLAND_MIN_ROWS and self.tree.n_leaders >= ISLAND_MIN_LEADERS
                     and self.tree.n_leaders > 0)
        if by_island:
            node_island = self._islands()
            # one island: arrival order is the same thing, for less
            by_island = (node_island is not None and self._n_isl > 1
                         and self._open_islands(&I, node_island))
        with nogil:
            if ISLAND_FORCE_WORKERS > 0:
                workers = ISLAND_FORCE_WORKERS
            if by_island and scratch_open(&W, min(ISLAND_BLOCK, n), I.n_isl, workers) != 0:
                free(I.parent); free(I.root0); free(I.first)
                by_island = False
            s0 = 0
            # blocks grow: the first conflicts, which join the islands that
            # interact, are cheap to repair in a small block; later blocks
            # have few and gain from longer runs per island
            block = ISLAND_FIRST_BLOCK if ISLAND_FIRST_BLOCK < ISLAND_BLOCK else ISLAND_BLOCK
            while s0 < n:
                m = min(block, n - s0)
                if by_island and not I.one_group:
                    serve_block_by_island(&self.s, &I, &R, &W, s0, m)
                else:
                    serve_in_order(&self.s, &R, s0, s0 + m)
                s0 += m
                block = min(2 * block, ISLAND_BLOCK)
            if by_island:
                scratch_close(&W)
                free(I.parent); free(I.root0); free(I.first)

    def _islands(self):
        """Island of every tree node (cached; None when memory runs out)."""
        cdef double link2
        cdef int32_t[::1] v
        cdef intp n_isl
        cdef int32_t[::1] pv
        if self._node_island is None or self._island_link != ISLAND_LINK_M:
            arr = np.empty(self.tree._start.shape[0], dtype=np.int32)
            pts = np.empty(max(self.tree.n_leaders, 1), dtype=np.int32)
            v = arr
            pv = pts
            link2 = m_to_chord2(ISLAND_LINK_M)
            free(self.cubes.key); free(self.cubes.island)
            self.cubes.key = NULL
            self.cubes.island = NULL
            self._node_island = None
            with nogil:
                n_isl = find_islands(self.s.t, sqrt(link2), &pv[0], &v[0], &self.cubes)
            if n_isl < 0:
                return None
            self._node_island, self._pt_island = arr, pts
            self._n_isl, self._island_link = n_isl, ISLAND_LINK_M
        return self._node_island

    def _leader_islands(self):
        """Island of every leader, in the leaders' original order (None when
        memory runs out)."""
        if self._islands() is None:
            return None
        return self._orig(self._pt_island)

    cdef bint _open_islands(self, Islands* I, node_island):
        """Fill I for one batch: every island its own group."""
        cdef const int32_t[::1] v = node_island
        cdef const int32_t[::1] pv = self._pt_island
        cdef intp x, k = self._n_isl
        I.node_island = &v[0]
        I.pt_island = &pv[0]
        I.cubes = &self.cubes
        I.n_isl = k
        I.link2 = m_to_chord2(self._island_link)
        I.merge_all = False
        I.one_group = False
        I.parent = <int32_t*>malloc(k * sizeof(int32_t) + 1)
        I.root0 = <int32_t*>malloc(k * sizeof(int32_t) + 1)
        I.first = <intp*>malloc(k * sizeof(intp) + 1)
        if I.parent == NULL or I.root0 == NULL or I.first == NULL:
            free(I.parent); free(I.root0); free(I.first)
            return False
        for x in range(k):
            I.parent[x] = <int32_t>x
        return True

    def release(self, intp i):
        """Free one slot of leader i (original index)."""
        cdef intp p = self.inv[i]
        if self.s.load[p] <= 0:
            raise ValueError(f"leader at position {i} has no load to release")
        set_state(&self.s, p, self.s.active[p], self.s.load[p] - 1, self.s.cap[p])

    def suggest(self, double lat, double lon, intp k):
        """The k nearest leaders with room that would serve (lat, lon): (index, metres)."""
        cdef double q[3]
        cdef Pick b
        cdef intp j, m = 0
        cdef double lim
        tree_vector(self.s.t, lat, lon, q)
        idx = np.full(k, -1, dtype=np.intp)
        dist = np.full(k, INFINITY)
        taken = []
        # k small: repeated nearest-with-room searches, hiding each pick by
        # marking it not ok for the next search, then restoring.
        lim = with_slack(self.s.g2) if self.s.g2 < 4.0 else INFINITY
        try:
            for j in range(k):
                nearest_ok(&self.s, q, lim, &b, False, NULL)
                if b.pos < 0:
                    break
                idx[j] = self.tree.perm_v[b.pos]
                dist[j] = chord2_to_m(b.d2, q, self.s.t.pts + 3 * b.pos)
                taken.append(b.pos)
                set_ok(&self.s, b.pos, 0)
                counts_add(&self.s, b.pos, -1, 0)
        finally:
            for p in taken:
                set_ok(&self.s, <intp>p, 1)
                counts_add(&self.s, <intp>p, 1, 0)
        return idx, dist


def _rows_of(a, intp n, str name):
    """A per-row intp array of length n (for assign_many)."""
    arr = np.ascontiguousarray(a, dtype=np.intp)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    return arr
