# cython: language_level=3
"""Compiled core of lbsdispatch: a kd-tree over 3-D unit vectors.

Geometry
--------
Every point (latitude, longitude in WGS-84 degrees) is placed on the unit
sphere: x = cos(lat)cos(lon), y = cos(lat)sin(lon), z = sin(lat).  The chord
between two such points is monotone in their great-circle distance, so a
Euclidean kd-tree in 3-D answers exact great-circle nearest-neighbour queries
with no special case at the poles or across the antimeridian.  Distances are
reported in metres on the sphere of mean radius R = 6,371,008.8 m.

Tie rule (the one place it is defined)
--------------------------------------
Candidates are ordered by (squared chord, rank), where ``rank`` is the
position of the leader's id in the sorted ids.  Among leaders at the same
distance, the one with the smaller id therefore always comes first, whatever
order the leaders were given in and however the tree happened to split them.
The search never prunes a node whose lower bound equals the current best (it
keeps a tiny relative slack), so an equal-distance leader with a smaller id in
another node is always seen.

Layout
------
The tree is stored in flat arrays in an implicit heap layout (children of node
i at 2i+1 and 2i+2); points are permuted into tree order so that a leaf is a
contiguous run.  Internal nodes split at the median along the axis of largest
spread; the search keeps a per-axis offset to the splitting planes it crossed
(an incremental lower bound), which is cheaper than bounding boxes.

All loops run without the GIL on typed memoryviews / raw pointers and build no
Python object per query.
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport sin, cos, asin, atan2, sqrt, M_PI, INFINITY
from libc.stdint cimport int64_t, int32_t, int8_t, uint8_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcpy

import numpy as np

ctypedef Py_ssize_t intp

cdef double EARTH_R = 6371008.8
cdef double DEG = M_PI / 180.0
# Relative and absolute slack on pruning bounds, so rounding in the
# incremental lower bound never hides an exact tie (see the tie rule above).
cdef double SLACK_REL = 1e-12
cdef double SLACK_ABS = 1e-300
# Beyond this squared chord (~120 degrees) the chord no longer separates
# distances finely enough: near the antipode it changes with the square of the
# angle, and two leaders 0.1 m apart can round to the same chord.  Answers
# that far out are re-ranked on the precise metres.  chord2_to_m switches
# formula at FAR_D2, and the two formulas may disagree by an ulp there, so
# answers reaching the rounding band just below it are re-ranked too (else
# two leaders at exactly 120 degrees can come out in the wrong metres order).
cdef double FAR_D2 = 3.0
cdef double FAR_D2_REFINE = 3.0 * (1.0 - 1e-9)

EARTH_RADIUS_M = EARTH_R


# ----------------------------------------------------------------------------
# geometry helpers (pure math: noexcept nogil)
# ----------------------------------------------------------------------------
cdef inline void unit_vector(double lat, double lon, double* out) noexcept nogil:
    cdef double la = lat * DEG
    cdef double lo = (180.0 if lon == -180.0 else lon) * DEG   # -180 and 180: one meridian
    cdef double cl
    if lat == 90.0 or lat == -90.0:
        # every longitude names the same pole: one exact vector, so leaders
        # registered at a pole with different longitudes tie exactly
        out[0] = 0.0
        out[1] = 0.0
        out[2] = 1.0 if lat > 0.0 else -1.0
        return
    cl = cos(la)
    out[0] = cl * cos(lo)
    out[1] = cl * sin(lo)
    out[2] = sin(la)


cdef inline double chord2_to_m(double d2, const double* a, const double* b) noexcept nogil:
    """Great-circle metres from a squared chord (and the two vectors).

    asin is well conditioned below ~120 degrees; beyond, the atan2 form on the
    vectors keeps full precision up to antipodal points.
    """
    cdef double cx, cy, cz, dot
    if d2 < 3.0:
        return 2.0 * EARTH_R * asin(0.5 * sqrt(d2))
    cx = a[1] * b[2] - a[2] * b[1]
    cy = a[2] * b[0] - a[0] * b[2]
    cz = a[0] * b[1] - a[1] * b[0]
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    return EARTH_R * atan2(sqrt(cx * cx + cy * cy + cz * cz), dot)


cdef inline double m_to_chord2(double m) noexcept nogil:
    """Squared chord of a great-circle distance in metres (clamped to the antipode)."""
    cdef double half
    if m >= M_PI * EARTH_R:
        return 4.0
    half = sin(0.5 * m / EARTH_R)
    return 4.0 * half * half


cdef inline double with_slack(double d2) noexcept nogil:
    return d2 + d2 * SLACK_REL + SLACK_ABS


def _unit_vectors(const double[::1] lat, const double[::1] lon):
    """Unit vectors of validated coordinates, shape (n, 3)."""
    cdef intp i, n = lat.shape[0]
    out = np.empty((n, 3), dtype=np.float64)
    cdef double[:, ::1] o = out
    with nogil:
        for i in range(n):
            unit_vector(lat[i], lon[i], &o[i, 0])
    return out


# ----------------------------------------------------------------------------
# input checks: find the first bad row without the GIL, format outside it
# ----------------------------------------------------------------------------
cdef intp first_bad_coord(const double* lat, const double* lon, intp n,
                          int* what) noexcept nogil:
    """Index of the first invalid (lat, lon) row, or -1; ``what`` says why.

    what: 1 lat not finite, 2 lon not finite, 3 lat out of range, 4 lon out of range.
    """
    cdef intp i
    cdef double a, b
    for i in range(n):
        a = lat[i]
        b = lon[i]
        # NaN fails every comparison, infinities fail the range test; sort
        # out which afterwards (this branch is never hot).
        if not (a >= -90.0 and a <= 90.0 and b >= -180.0 and b <= 180.0):
            if a != a or a == INFINITY or a == -INFINITY:
                what[0] = 1
            elif not (a >= -90.0 and a <= 90.0):
                what[0] = 3
            elif b != b or b == INFINITY or b == -INFINITY:
                what[0] = 2
            else:
                what[0] = 4
            return i
    return -1


cdef object coord_error(intp row, int what, double lat, double lon, bint scalar,
                        str lat_name="lat", str lon_name="lon"):
    where = "" if scalar else f"[{row}]"
    if what == 1:
        return ValueError(f"{lat_name}{where} = {lat!r}: coordinates must be finite")
    if what == 2:
        return ValueError(f"{lon_name}{where} = {lon!r}: coordinates must be finite")
    if what == 3:
        return ValueError(f"{lat_name}{where} = {lat!r} is outside [-90, 90]")
    return ValueError(f"{lon_name}{where} = {lon!r} is outside [-180, 180]")


def check_coordinates(const double[::1] lat, const double[::1] lon, str lat_name="lat",
                      str lon_name="lon"):
    """Raise ValueError naming the first row whose coordinates are not valid degrees."""
    cdef int what = 0
    cdef intp bad
    cdef intp n = lat.shape[0]
    if lon.shape[0] != n:
        raise ValueError(f"{lat_name} and {lon_name} have different lengths "
                         f"({n} and {lon.shape[0]})")
    if n == 0:
        return
    with nogil:
        bad = first_bad_coord(&lat[0], &lon[0], n, &what)
    if bad >= 0:
        raise coord_error(bad, what, lat[bad], lon[bad], False, lat_name, lon_name)


# ----------------------------------------------------------------------------
# the tree
# ----------------------------------------------------------------------------
cdef struct Tree:
    const double* pts      # (n, 3) unit vectors in tree order
    const int64_t* rank    # tie rank of each point, tree order
    const intp* start      # first point of each node
    const intp* end        # one past the last point of each node
    const int32_t* dim     # split axis of each internal node
    const double* split    # split value of each internal node
    intp n
    intp first_leaf        # nodes >= first_leaf are leaves
    double rot[9]          # frame of the tree: rows are its x, y, z axes


cdef inline void tree_vector(const Tree* t, double lat, double lon, double* out) noexcept nogil:
    """Unit vector of (lat, lon) in the tree's frame."""
    cdef double u[3]
    unit_vector(lat, lon, u)
    out[0] = t.rot[0] * u[0] + t.rot[1] * u[1] + t.rot[2] * u[2]
    out[1] = t.rot[3] * u[0] + t.rot[4] * u[1] + t.rot[5] * u[2]
    out[2] = t.rot[6] * u[0] + t.rot[7] * u[1] + t.rot[8] * u[2]


cdef inline int by_distance(const Tree* t, const double* q, double d2a, intp pa, double d2b,
                            intp pb) noexcept nogil:
    """-1 if point a is nearer to q than b, 1 if farther, 0 if at the same distance.

    Two squared chords within rounding of each other are compared on the
    metres the caller will see, so that leaders at equal reported distances
    (e.g. on one circle of latitude around a pole) tie exactly and the tie rule
    decides.  Shared by the queries (ties by id) and dispatch (ties by Rules).
    """
    cdef double ma, mb
    if d2a < d2b - (d2b * SLACK_REL + SLACK_ABS):
        return -1
    if d2a > d2b + (d2b * SLACK_REL + SLACK_ABS):
        return 1
    if d2a != d2b:
        ma = chord2_to_m(d2a, q, t.pts + 3 * pa)
        mb = chord2_to_m(d2b, q, t.pts + 3 * pb)
        if ma != mb:
            return -1 if ma < mb else 1
    return 0


cdef inline bint before(const Tree* t, const double* q, double d2a, int64_t ra, intp pa,
                        double d2b, int64_t rb, intp pb) noexcept nogil:
    """Does candidate a come before b?  By distance, then id rank."""
    cdef int c = by_distance(t, q, d2a, pa, d2b, pb)
    return c < 0 or (c == 0 and ra < rb)


cdef struct Best1:
    double d2
    double bound           # d2 with slack: prune only nodes strictly beyond it
    int64_t rank
    intp pos


# Deepest path a search can take: the tree has at most ~2^40 leaves.
DEF MAX_DEPTH = 64


cdef struct Frame:
    intp node
    double rd              # lower bound of the squared chord to the node
    double off[3]          # per-axis offsets to the splitting planes crossed


cdef inline void push_frame(Frame* f, intp node, double rd, const double* off, int32_t d,
                            double diff) noexcept nogil:
    """Fill a stack frame: the far child, its lower bound, and the plane offsets
    with axis d's replaced by the one just crossed (shared by every walk)."""
    f.node = node
    f.rd = rd
    f.off[0] = off[0]
    f.off[1] = off[1]
    f.off[2] = off[2]
    f.off[d] = diff


cdef inline void fold_least(double v, intp j, double* m, double* m2, intp* jm) noexcept nogil:
    """Fold value v at offset j into the least (m, at jm) and second least (m2)
    of a leaf scan, without a branch (a repeat of the least sets m2 = m)."""
    cdef double hi = v if v > m[0] else m[0]
    m2[0] = hi if hi < m2[0] else m2[0]
    jm[0] = j if v < m[0] else jm[0]
    m[0] = v if v < m[0] else m[0]


cdef inline void scan1(const Tree* t, const double* q, intp p0, intp n, Best1* b) noexcept nogil:
    """Offer points p0 .. p0+n-1 to the nearest-point search ``b``.

    Whether a point beats the bound is a coin flip for the branch predictor,
    so the pass over the points has no branch: it keeps the least and second
    least distance and where the least is.  Then one comparison with the best;
    only two points within rounding of each other need the tie rule (by rank)
    on the whole run.
    """
    cdef const double* x = t.pts + 3 * p0
    cdef double dx, dy, dz, d2, m = INFINITY, m2 = INFINITY, thr
    cdef intp j, jm = 0, p
    for j in range(n):
        dx = q[0] - x[3 * j]
        dy = q[1] - x[3 * j + 1]
        dz = q[2] - x[3 * j + 2]
        fold_least(dx * dx + dy * dy + dz * dz, j, &m, &m2, &jm)
    if m > b.bound:
        return
    thr = with_slack(m)
    if m2 > thr:
        p = p0 + jm
        if b.pos < 0 or before(t, q, m, t.rank[p], p, b.d2, b.rank, b.pos):
            b.d2 = m
            b.bound = thr
            b.rank = t.rank[p]
            b.pos = p
        return
    for j in range(n):          # near-equal distances: the tie rule decides
        dx = q[0] - x[3 * j]
        dy = q[1] - x[3 * j + 1]
        dz = q[2] - x[3 * j + 2]
        d2 = dx * dx + dy * dy + dz * dz
        if d2 <= thr:
            p = p0 + j
            if b.pos < 0 or before(t, q, d2, t.rank[p], p, b.d2, b.rank, b.pos):
                b.d2 = d2
                b.bound = with_slack(d2)
                b.rank = t.rank[p]
                b.pos = p


cdef void nn1(const Tree* t, const double* q, Best1* b) noexcept nogil:
    """Nearest point to q, into ``b`` (which holds the bound to start from).

    Depth-first, near child first, with an explicit stack: each pushed far
    child carries its incremental lower bound, and is dropped when popped if
    the best has since moved below it.
    """
    cdef Frame stack[MAX_DEPTH]
    cdef intp top = 0, node = 0, near
    cdef int32_t d
    cdef double diff, rd = 0.0, nrd
    cdef double old
    cdef double off[3]          # per-axis offsets to the planes crossed so far
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    while True:
        while node < t.first_leaf:
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            old = off[d]          # an index, not a branch: d is unpredictable
            nrd = rd - old * old + diff * diff
            if nrd <= b.bound:
                # 4 * node + 3 - near is the sibling of near
                push_frame(&stack[top], 4 * node + 3 - near, nrd, off, d, diff)
                top += 1
            node = near
        scan1(t, q, t.start[node], t.end[node] - t.start[node], b)
        while True:
            if top == 0:
                return
            top -= 1
            if stack[top].rd <= b.bound:
                break
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


cdef struct KBest:
    double* d2             # the k best so far, ascending by (d2, rank)
    int64_t* rank
    intp* pos
    intp size
    intp k
    double bound           # prune bound: worst kept d2 (with slack) once full


cdef inline void kbest_add(const Tree* t, const double* q, KBest* h, double d2, int64_t r,
                           intp p) noexcept nogil:
    """Insert a candidate into the sorted list of the k best, dropping the worst."""
    cdef intp i = h.size
    cdef double lo = d2 + d2 * SLACK_REL + SLACK_ABS   # beyond rounding of d2
    if i == h.k:
        if not (h.d2[i - 1] > lo or
                before(t, q, d2, r, p, h.d2[i - 1], h.rank[i - 1], h.pos[i - 1])):
            return
        i -= 1
    else:
        h.size += 1
    # clearly farther entries move up without the careful comparison
    while i > 0 and (h.d2[i - 1] > lo or
                     before(t, q, d2, r, p, h.d2[i - 1], h.rank[i - 1], h.pos[i - 1])):
        h.d2[i] = h.d2[i - 1]
        h.rank[i] = h.rank[i - 1]
        h.pos[i] = h.pos[i - 1]
        i -= 1
    h.d2[i] = d2
    h.rank[i] = r
    h.pos[i] = p
    if h.size == h.k:
        h.bound = with_slack(h.d2[h.k - 1])


cdef void knn(const Tree* t, const double* q, KBest* h) noexcept nogil:
    """The k nearest points to q (h.bound holds the starting cap), same walk as nn1."""
    cdef Frame stack[MAX_DEPTH]
    cdef intp top = 0, node = 0, p, end, near
    cdef int32_t d
    cdef double dx, dy, dz, d2, diff, rd = 0.0, nrd
    cdef double old
    cdef double off[3]          # per-axis offsets to the planes crossed so far
    cdef const double* x
    off[0] = 0.0
    off[1] = 0.0
    off[2] = 0.0
    while True:
        while node < t.first_leaf:
            d = t.dim[node]
            diff = q[d] - t.split[node]
            near = 2 * node + 1 + (diff > 0.0)
            old = off[d]          # an index, not a branch: d is unpredictable
            nrd = rd - old * old + diff * diff
            if nrd <= h.bound:
                push_frame(&stack[top], 4 * node + 3 - near, nrd, off, d, diff)
                top += 1
            node = near
        p = t.start[node]
        end = t.end[node]
        x = t.pts + 3 * p
        while p < end:
            dx = q[0] - x[0]
            dy = q[1] - x[1]
            dz = q[2] - x[2]
            d2 = dx * dx + dy * dy + dz * dz
            if d2 <= h.bound:
                kbest_add(t, q, h, d2, t.rank[p], p)
            x += 3
            p += 1
        while True:
            if top == 0:
                return
            top -= 1
            if stack[top].rd <= h.bound:
                break
        node = stack[top].node
        rd = stack[top].rd
        off[0] = stack[top].off[0]
        off[1] = stack[top].off[1]
        off[2] = stack[top].off[2]


# ---- query order -------------------------------------------------------------
# Rows searched per block of a batch (bounds the scratch memory).
cdef intp QUERY_BLOCK = 65536

# Morton order only pays for itself on batches of some size.  For k=1 on a
# tree that sits in the cache it buys nothing: city event (800 leaders), best of
# 40 interleaved: 253 ns/order with, 244 without, and it costs 24 bytes an order
# of scratch.  It does pay for k > 1 (city k=5: 385 vs 486 ns/order) and for
# large trees (nation, 100,000 leaders, k=1: 367 vs 388 ns/order).
cdef intp MORTON_MIN = 256
cdef intp MORTON_LEADERS_MIN = 4096


def _set_morton_min(intp n, leaders=None):
    """Set the batch size (and, with ``leaders``, the tree size) from which queries
    are Morton-ordered (for benchmarks and tests); returns the old batch size, or
    the old (batch, leaders) pair when ``leaders`` is given."""
    global MORTON_MIN, MORTON_LEADERS_MIN
    old = MORTON_MIN
    old_leaders = MORTON_LEADERS_MIN
    MORTON_MIN = n
    if leaders is not None:
        MORTON_LEADERS_MIN = leaders
        return old, old_leaders
    return old


cdef inline uint64_t spread3(uint64_t v) noexcept nogil:
    """Spread the low 21 bits of v to every third bit."""
    v &= 0x1fffffULL
    v = (v | (v << 32)) & 0x1f00000000ffffULL
    v = (v | (v << 16)) & 0x1f0000ff0000ffULL
    v = (v | (v << 8)) & 0x100f00f00f00f00fULL
    v = (v | (v << 4)) & 0x10c30c30c30c30c3ULL
    v = (v | (v << 2)) & 0x1249249249249249ULL
    return v


cdef int sort_keys(uint64_t* key, intp* idx, intp n, int lo_bit, int hi_bit) noexcept nogil:
    """Sort key[0:n] ascending on bits lo_bit .. hi_bit-1, carrying idx along
    (LSD radix, 11 bits a pass; stable).  Returns -1 when memory runs out."""
    cdef uint64_t* k2 = <uint64_t*>malloc(n * sizeof(uint64_t) + 1)
    cdef intp* i2 = <intp*>malloc(n * sizeof(intp) + 1)
    cdef intp counts[2048]
    cdef intp i, j, c
    cdef int shift
    if k2 == NULL or i2 == NULL:
        free(k2); free(i2)
        return -1
    for shift in range(lo_bit, hi_bit, 11):
        for c in range(2048):
            counts[c] = 0
        for i in range(n):
            counts[(key[i] >> shift) & 2047] += 1
        j = 0
        for c in range(2048):
            j += counts[c]
            counts[c] = j - counts[c]
        for i in range(n):
            c = (key[i] >> shift) & 2047
            k2[counts[c]] = key[i]
            i2[counts[c]] = idx[i]
            counts[c] += 1
        memcpy(key, k2, n * sizeof(uint64_t))
        memcpy(idx, i2, n * sizeof(intp))
    free(k2); free(i2)
    return 0


cdef int morton_order(const double* v, intp m, intp* order) noexcept nogil:
    """Fill order[0:m] with the rows of v (m x 3) sorted along a 3-D Morton curve.

    Nearby queries then walk the same branches of the tree one after another,
    which keeps the tree in cache and the branch predictor right.  The cube is
    the bounding box of the queries with one common scale, so a flat city
    spends its bits on x and y.  Returns -1 when memory runs out.
    """
    cdef double lo[3]
    cdef double hi[3]
    cdef double ext = 0.0, scale
    cdef intp i
    cdef int d, rc
    cdef uint64_t* key
    for d in range(3):
        lo[d] = v[d]
        hi[d] = v[d]
    for i in range(1, m):
        for d in range(3):
            if v[3 * i + d] < lo[d]:
                lo[d] = v[3 * i + d]
            if v[3 * i + d] > hi[d]:
                hi[d] = v[3 * i + d]
    for d in range(3):
        if hi[d] - lo[d] > ext:
            ext = hi[d] - lo[d]
    scale = 2097151.0 / ext if ext > 0.0 else 0.0
    key = <uint64_t*>malloc(m * sizeof(uint64_t) + 1)
    if key == NULL:
        return -1
    for i in range(m):
        key[i] = (spread3(<uint64_t>((v[3 * i] - lo[0]) * scale))
                  | (spread3(<uint64_t>((v[3 * i + 1] - lo[1]) * scale)) << 1)
                  | (spread3(<uint64_t>((v[3 * i + 2] - lo[2]) * scale)) << 2))
        order[i] = i
    # the top 33 bits only: cells of 2^-10 of the extent are fine enough for
    # locality (three passes instead of six)
    rc = sort_keys(key, order, m, 30, 63)
    free(key)
    return rc


cdef struct Hits:
    double* d2
    int64_t* rank
    intp* pos
    intp size
    intp cap
    bint failed


cdef void hits_add(Hits* h, double d2, int64_t r, intp p) noexcept nogil:
    cdef intp ncap
    cdef void* a
    cdef void* b
    cdef void* c
    if h.failed:
        return
    if h.size == h.cap:
        ncap = 2 * h.cap + 64
        a = realloc(h.d2, ncap * sizeof(double))
        if a != NULL:
            h.d2 = <double*>a
        b = realloc(h.rank, ncap * sizeof(int64_t))
        if b != NULL:
            h.rank = <int64_t*>b
        c = realloc(h.pos, ncap * sizeof(intp))
        if c != NULL:
            h.pos = <intp*>c
        if a == NULL or b == NULL or c == NULL:
            h.failed = True
            return
        h.cap = ncap
    h.d2[h.size] = d2
    h.rank[h.size] = r
    h.pos[h.size] = p
    h.size += 1


cdef void ball(const Tree* t, intp node, const double* q, double rd, double* off,
               double r2, Hits* out) noexcept nogil:
    cdef intp p, near, far
    cdef int32_t d
    cdef double dx, dy, dz, d2, diff, old, nrd
    cdef const double* x
    if node >= t.first_leaf:
        x = t.pts + 3 * t.start[node]
        for p in range(t.start[node], t.end[node]):
            dx = q[0] - x[0]
            dy = q[1] - x[1]
            dz = q[2] - x[2]
            x += 3
            d2 = dx * dx + dy * dy + dz * dz
            if d2 <= r2:
                hits_add(out, d2, t.rank[p], p)
        return
    d = t.dim[node]
    diff = q[d] - t.split[node]
    if diff <= 0.0:
        near = 2 * node + 1
        far = near + 1
    else:
        far = 2 * node + 1
        near = far + 1
    ball(t, near, q, rd, off, r2, out)
    old = off[d]
    nrd = rd - old * old + diff * diff
    if nrd <= r2:
        off[d] = diff
        ball(t, far, q, nrd, off, r2, out)
        off[d] = old


# ---- building --------------------------------------------------------------
cdef void select_median(intp* idx, intp lo, intp hi, intp m, const double* xyz,
                        int32_t d) noexcept nogil:
    """Partially sort idx[lo:hi] so idx[m] holds the median along axis d (Hoare quickselect)."""
    cdef intp i, j, t, mid
    cdef double pivot, a, b, c
    hi -= 1
    while hi > lo:
        mid = lo + (hi - lo) // 2
        # median of three as the pivot: deterministic and safe on sorted input
        a = xyz[3 * idx[lo] + d]
        b = xyz[3 * idx[mid] + d]
        c = xyz[3 * idx[hi] + d]
        if a < b:
            pivot = b if b < c else (c if a < c else a)
        else:
            pivot = a if a < c else (c if b < c else b)
        i = lo
        j = hi
        while i <= j:
            while xyz[3 * idx[i] + d] < pivot:
                i += 1
            while xyz[3 * idx[j] + d] > pivot:
                j -= 1
            if i <= j:
                t = idx[i]; idx[i] = idx[j]; idx[j] = t
                i += 1
                j -= 1
        if m <= j:
            hi = j
        elif m >= i:
            lo = i
        else:
            return


cdef void build_tree(const double* xyz, intp* idx, intp n, intp n_nodes, intp first_leaf,
                     intp* start, intp* end, int32_t* dim, double* split) noexcept nogil:
    cdef intp node, s, e, m, i
    cdef int32_t d, best_d
    cdef double lo[3]
    cdef double hi[3]
    cdef double v, spread, best_spread
    start[0] = 0
    end[0] = n
    for node in range(first_leaf):
        s = start[node]
        e = end[node]
        best_d = 0
        if e > s:
            for d in range(3):
                lo[d] = xyz[3 * idx[s] + d]
                hi[d] = lo[d]
            for i in range(s + 1, e):
                for d in range(3):
                    v = xyz[3 * idx[i] + d]
                    if v < lo[d]:
                        lo[d] = v
                    if v > hi[d]:
                        hi[d] = v
            best_spread = -1.0
            for d in range(3):
                spread = hi[d] - lo[d]
                if spread > best_spread:
                    best_spread = spread
                    best_d = d
        m = s + (e - s) // 2
        dim[node] = best_d
        if e > s:
            select_median(idx, s, e, m, xyz, best_d)
            split[node] = xyz[3 * idx[m] + best_d]
        else:
            split[node] = 0.0
        start[2 * node + 1] = s
        end[2 * node + 1] = m
        start[2 * node + 2] = m
        end[2 * node + 2] = e


cdef void permute_rows(double* xyz, const intp* perm, intp n) noexcept nogil:
    """Reorder the rows of xyz (n x 3) in place so that row i becomes old row perm[i].

    Follows the cycles of the permutation with one byte of bookkeeping per row,
    so the tree never holds two copies of the points.
    """
    cdef uint8_t* done = <uint8_t*>calloc(n, 1) if n > 0 else NULL
    cdef intp i, j, k
    cdef double a, b, c
    if done == NULL:
        return
    for i in range(n):
        if done[i]:
            continue
        a = xyz[3 * i]; b = xyz[3 * i + 1]; c = xyz[3 * i + 2]
        j = i
        while True:
            done[j] = 1
            k = perm[j]
            if k == i:
                xyz[3 * j] = a; xyz[3 * j + 1] = b; xyz[3 * j + 2] = c
                break
            xyz[3 * j] = xyz[3 * k]; xyz[3 * j + 1] = xyz[3 * k + 1]; xyz[3 * j + 2] = xyz[3 * k + 2]
            j = k
    free(done)


cdef class _LeaderTree:
    """Compiled kd-tree over leaders; see :class:`lbsdispatch.LeaderIndex`."""

    cdef Tree t
    cdef readonly intp n_leaders
    cdef readonly intp leafsize
    cdef readonly object lat
    cdef readonly object lon
    cdef readonly object ids
    # tree-order arrays (kept alive here; Tree holds raw pointers into them)
    cdef readonly object _pts
    cdef readonly object _perm
    cdef readonly object _rank
    cdef object _start, _end, _dim, _split
    cdef const intp[::1] perm_v

    def __init__(self, lat, lon, ids=None, leafsize=16):
        lat_a = _as_coords(lat, "lat")
        lon_a = _as_coords(lon, "lon")
        if lat_a.shape[0] != lon_a.shape[0]:
            raise ValueError(f"lat and lon have different lengths "
                             f"({lat_a.shape[0]} and {lon_a.shape[0]})")
        check_coordinates(lat_a, lon_a)
        try:
            ls = int(leafsize)
        except (TypeError, ValueError):
            raise ValueError(f"leafsize must be an integer >= 1, got {leafsize!r}") from None
        if ls != leafsize or ls < 1:
            raise ValueError(f"leafsize must be an integer >= 1, got {leafsize!r}")
        n = lat_a.shape[0]
        ids_a, rank = _ranks(ids, n)
        # own copies, read-only: the caller's arrays are neither kept nor touched
        lat_a = lat_a.copy() if np.shares_memory(lat_a, lat) else lat_a
        lon_a = lon_a.copy() if np.shares_memory(lon_a, lon) else lon_a
        lat_a.setflags(write=False)
        lon_a.setflags(write=False)
        self.lat = lat_a
        self.lon = lon_a
        self.ids = ids_a
        self.leafsize = ls
        self.n_leaders = n
        self._build(lat_a, lon_a, rank)

    cdef _build(self, const double[::1] lat, const double[::1] lon, const int64_t[::1] rank):
        cdef intp n = lat.shape[0]
        cdef intp levels = 1, leaves = 1
        while leaves * self.leafsize < n:
            leaves *= 2
            levels += 1
        cdef intp n_nodes = 2 * leaves - 1
        cdef intp first_leaf = leaves - 1
        cdef intp i
        frame = _frame(_mean_direction(lat, lon), n)
        for i in range(9):
            self.t.rot[i] = frame[i]
        xyz = np.empty((n, 3), dtype=np.float64)
        cdef double[:, ::1] xw = xyz
        with nogil:
            for i in range(n):
                tree_vector(&self.t, lat[i], lon[i], &xw[i, 0])
        perm = np.arange(n, dtype=np.intp)
        start = np.zeros(n_nodes, dtype=np.intp)
        end = np.zeros(n_nodes, dtype=np.intp)
        dim = np.zeros(max(first_leaf, 1), dtype=np.int32)
        split = np.zeros(max(first_leaf, 1), dtype=np.float64)
        cdef const double[:, ::1] xv = xyz
        cdef intp[::1] pv = perm
        cdef intp[::1] sv = start
        cdef intp[::1] ev = end
        cdef int32_t[::1] dv = dim
        cdef double[::1] spv = split
        if n > 0:
            with nogil:
                build_tree(&xv[0, 0], &pv[0], n, n_nodes, first_leaf, &sv[0], &ev[0],
                           &dv[0], &spv[0])
        if n > 0:
            with nogil:
                permute_rows(&xw[0, 0], &pv[0], n)
        pts = xyz
        trank = np.ascontiguousarray(np.asarray(rank)[perm])
        self._pts, self._perm, self._rank = pts, perm, trank
        self._start, self._end, self._dim, self._split = start, end, dim, split
        self.perm_v = perm
        cdef const double[:, ::1] ptv = pts
        cdef const int64_t[::1] rv = trank
        self.t.n = n
        self.t.first_leaf = first_leaf
        self.t.pts = &ptv[0, 0] if n > 0 else NULL
        self.t.rank = &rv[0] if n > 0 else NULL
        self.t.start = &sv[0]
        self.t.end = &ev[0]
        self.t.dim = &dv[0]
        self.t.split = &spv[0]

    # -- queries ------------------------------------------------------------
    def query(self, lat, lon, k=1, max_distance_m=None, workers=1):
        """Find the ``k`` nearest leaders of each point.

        Parameters
        ----------
        lat, lon : float or array_like of float, shape (n,)
            Query points, WGS-84 degrees.
        k : int, default 1
            Number of neighbours per point.
        max_distance_m : float, optional
            Neighbours farther than this (metres) are reported missing.
        workers : int, default 1
            Threads for large batches; -1 uses every core.

        Returns
        -------
        distance_m : float or ndarray, shape (n,) for k=1, (n, k) otherwise
            Great-circle distances in metres, ascending along each row.
        index : int or ndarray of intp, same shape
            Positions of the leaders; ``n_leaders`` where there is none.

        Raises
        ------
        ValueError
            For non-finite or out-of-range coordinates (naming the first bad
            row), mismatched lengths, ``k < 1`` or a negative distance.
        """
        cdef double la, lo, cap, d
        cdef double q[3]
        cdef double off[3]
        cdef Best1 b
        cdef int what = 0
        # Online fast path: one point, k=1.  No array is built.
        if (k is 1 or (type(k) is int and k == 1)) and \
                (type(lat) is float or type(lat) is int or isinstance(lat, float)) and \
                (type(lon) is float or type(lon) is int or isinstance(lon, float)):
            if not (type(workers) is int and workers == 1):
                _check_workers(workers)
            la = lat
            lo = lon
            if first_bad_coord(&la, &lo, 1, &what) >= 0:
                raise coord_error(0, what, la, lo, True)
            cap = INFINITY
            if max_distance_m is not None:
                cap = _max_distance(max_distance_m)
            if self.t.n == 0:
                return INFINITY, self.n_leaders
            tree_vector(&self.t, la, lo, q)
            off[0] = off[1] = off[2] = 0.0
            b.d2 = with_slack(m_to_chord2(cap)) if cap != INFINITY else INFINITY
            b.bound = b.d2
            b.rank = INT64_MAX
            b.pos = -1
            nn1(&self.t, q, &b)
            if b.pos < 0:
                return INFINITY, self.n_leaders
            if b.d2 > FAR_D2_REFINE:
                return self._query_arrays(lat, lon, k, max_distance_m, workers)
            d = chord2_to_m(b.d2, q, self.t.pts + 3 * b.pos)
            if d > cap:
                return INFINITY, self.n_leaders
            return d, self.perm_v[b.pos]
        return self._query_arrays(lat, lon, k, max_distance_m, workers)

    def _query_arrays(self, lat, lon, k, max_distance_m, workers):
        lat_a, lon_a, scalar = _as_points(lat, lon)
        kk = _check_k(k)
        cap = INFINITY if max_distance_m is None else _max_distance(max_distance_m)
        nw = _check_workers(workers)
        n = lat_a.shape[0]
        dist = np.empty((n, kk), dtype=np.float64)
        idx = np.empty((n, kk), dtype=np.intp)
        _run_chunks(self._knn_chunk, n, nw, (lat_a, lon_a, kk, cap, dist, idx))
        if kk == 1 and not (isinstance(k, (list, tuple))):
            dist = dist[:, 0]
            idx = idx[:, 0]
        if scalar:
            return (float(dist[0]), int(idx[0])) if dist.ndim == 1 else (dist[0], idx[0])
        return dist, idx

    def _knn_chunk(self, lat, lon, intp k, double cap, dist, idx, intp lo, intp hi):
        """Fill rows lo:hi of dist/idx with the k nearest leaders (validated input).

        Works through blocks of QUERY_BLOCK rows so the scratch memory (unit
        vectors, Morton keys) stays a few MiB however large the batch.
        """
        cdef intp b
        for b in range(lo, hi, QUERY_BLOCK):
            self._knn_block(lat, lon, k, cap, dist, idx, b, min(b + QUERY_BLOCK, hi))

    def _knn_block(self, const double[::1] lat, const double[::1] lon, intp k, double cap,
                   double[:, ::1] dist, intp[:, ::1] idx, intp lo, intp hi):
        cdef intp i, j, r, m = hi - lo, kk, missing = self.n_leaders
        cdef double capc = with_slack(m_to_chord2(cap)) if cap != INFINITY else INFINITY
        cdef double d
        cdef const double* q
        cdef Best1 b
        cdef KBest h
        cdef Hits far
        cdef int rc = 0
        if m <= 0:
            return
        far.d2 = NULL; far.rank = NULL; far.pos = NULL; far.cap = 0; far.size = 0
        far.failed = False
        kk = k if k < self.t.n else self.t.n
        h.k = kk
        h.d2 = <double*>malloc((kk + 1) * sizeof(double))
        h.rank = <int64_t*>malloc((kk + 1) * sizeof(int64_t))
        h.pos = <intp*>malloc((kk + 1) * sizeof(intp))
        cdef double ql[3]
        # Morton order needs every row's vector up front; in input order each
        # vector is made where it is used, and the block needs no scratch
        cdef bint sort = (m >= MORTON_MIN and self.t.n > 0
                          and (k > 1 or self.t.n >= MORTON_LEADERS_MIN))
        cdef double* v = <double*>malloc(3 * m * sizeof(double)) if sort else NULL
        cdef intp* order = <intp*>malloc(m * sizeof(intp)) if sort else NULL
        try:
            if h.d2 == NULL or h.rank == NULL or h.pos == NULL or \
                    (sort and (v == NULL or order == NULL)):
                raise MemoryError()
            with nogil:
                if sort:
                    for r in range(m):
                        tree_vector(&self.t, lat[lo + r], lon[lo + r], v + 3 * r)
                        order[r] = r
                    rc = morton_order(v, m, order)
                for j in range(m if rc == 0 else 0):
                    if sort:
                        r = order[j]
                        q = v + 3 * r
                    else:
                        r = j
                        tree_vector(&self.t, lat[lo + r], lon[lo + r], ql)
                        q = ql
                    i = lo + r
                    if k == 1:
                        b.d2 = capc
                        b.bound = capc
                        b.rank = INT64_MAX
                        b.pos = -1
                        if self.t.n > 0:
                            nn1(&self.t, q, &b)
                        if b.pos >= 0:
                            if b.d2 > FAR_D2_REFINE:
                                if refine_far(&self.t, q, b.d2, &far) != 0:
                                    rc = -1
                                    break
                                b.pos = far.pos[0]
                                d = far.d2[0]
                            else:
                                d = chord2_to_m(b.d2, q, self.t.pts + 3 * b.pos)
                            if d <= cap:
                                dist[i, 0] = d
                                idx[i, 0] = self.perm_v[b.pos]
                                continue
                        dist[i, 0] = INFINITY
                        idx[i, 0] = missing
                        continue
                    h.size = 0
                    h.bound = capc
                    if kk > 0:
                        knn(&self.t, q, &h)
                    if h.size > 0 and h.d2[h.size - 1] > FAR_D2_REFINE:
                        if refine_far(&self.t, q, h.d2[h.size - 1], &far) != 0:
                            rc = -1
                            break
                        for r in range(h.size):
                            h.pos[r] = far.pos[r]
                            h.d2[r] = far.d2[r]
                    else:
                        for r in range(h.size):
                            h.d2[r] = chord2_to_m(h.d2[r], q, self.t.pts + 3 * h.pos[r])
                    for r in range(k):
                        if r < h.size:
                            d = h.d2[r]
                            if d <= cap:
                                dist[i, r] = d
                                idx[i, r] = self.perm_v[h.pos[r]]
                                continue
                        dist[i, r] = INFINITY
                        idx[i, r] = missing
            if rc != 0:
                raise MemoryError()
        finally:
            free(h.d2); free(h.rank); free(h.pos); free(v); free(order)
            free(far.d2); free(far.rank); free(far.pos)

    def _ball_chunk(self, const double[::1] lat, const double[::1] lon, const double[::1] r_m,
                    intp lo, intp hi):
        """Leaders within r_m[i] of rows lo:hi, as CSR (counts, distances, indices)."""
        cdef intp i, j, base
        cdef double q[3]
        cdef double off[3]
        cdef double r2, d
        cdef Hits h
        cdef bint failed = False
        counts = np.zeros(hi - lo, dtype=np.intp)
        cdef intp[::1] cv = counts
        cdef intp total = 0
        cdef double* od = NULL
        cdef intp* oi = NULL
        cdef intp on = 0, ocap = 0
        cdef void* tmp
        h.d2 = NULL; h.rank = NULL; h.pos = NULL; h.cap = 0; h.failed = False
        try:
            with nogil:
                for i in range(lo, hi):
                    tree_vector(&self.t, lat[i], lon[i], q)
                    off[0] = off[1] = off[2] = 0.0
                    h.size = 0
                    r2 = with_slack(m_to_chord2(r_m[i]))
                    if self.t.n > 0:
                        ball(&self.t, 0, q, 0.0, off, r2, &h)
                    if h.failed:
                        failed = True
                        break
                    to_metres(&h, &self.t, q)
                    sort_hits(&h)
                    if h.failed:
                        failed = True
                        break
                    if on + h.size > ocap:
                        ocap = 2 * (on + h.size) + 64
                        tmp = realloc(od, ocap * sizeof(double))
                        if tmp == NULL:
                            failed = True
                            break
                        od = <double*>tmp
                        tmp = realloc(oi, ocap * sizeof(intp))
                        if tmp == NULL:
                            failed = True
                            break
                        oi = <intp*>tmp
                    base = on
                    for j in range(h.size):
                        d = h.d2[j]
                        if d <= r_m[i]:
                            od[on] = d
                            oi[on] = self.perm_v[h.pos[j]]
                            on += 1
                    cv[i - lo] = on - base
            if failed:
                raise MemoryError("query_radius: out of memory collecting neighbours")
            dist = np.empty(on, dtype=np.float64)
            idx = np.empty(on, dtype=np.intp)
            if on > 0:
                memcpy(_ptr_d(dist), od, on * sizeof(double))
                memcpy(_ptr_i(idx), oi, on * sizeof(intp))
            return counts, dist, idx
        finally:
            free(h.d2); free(h.rank); free(h.pos); free(od); free(oi)

    def __reduce__(self):
        return (type(self), (self.lat, self.lon, self.ids, self.leafsize))


cdef double* _ptr_d(double[::1] a):
    return &a[0]


cdef intp* _ptr_i(intp[::1] a):
    return &a[0]


cdef struct HitRec:
    double d2
    int64_t rank
    intp pos


cdef int cmp_hit(const void* a, const void* b) noexcept nogil:
    cdef const HitRec* x = <const HitRec*>a
    cdef const HitRec* y = <const HitRec*>b
    if x.d2 < y.d2:
        return -1
    if x.d2 > y.d2:
        return 1
    if x.rank < y.rank:
        return -1
    if x.rank > y.rank:
        return 1
    return 0


cdef void sort_hits(Hits* h) noexcept nogil:
    """Sort hits by (d2, rank) through a temporary record array."""
    cdef intp i, n = h.size
    cdef HitRec* rec
    if n < 2:
        return
    rec = <HitRec*>malloc(n * sizeof(HitRec))
    if rec == NULL:
        h.failed = True
        return
    for i in range(n):
        rec[i].d2 = h.d2[i]
        rec[i].rank = h.rank[i]
        rec[i].pos = h.pos[i]
    qsort(rec, n, sizeof(HitRec), cmp_hit)
    for i in range(n):
        h.d2[i] = rec[i].d2
        h.rank[i] = rec[i].rank
        h.pos[i] = rec[i].pos
    free(rec)


# ----------------------------------------------------------------------------
# Python-side coercion shared by the queries (not hot: once per call)
# ----------------------------------------------------------------------------
cdef void to_metres(Hits* h, const Tree* t, const double* q) noexcept nogil:
    """Replace the squared chords of the hits by great-circle metres."""
    cdef intp j
    for j in range(h.size):
        h.d2[j] = chord2_to_m(h.d2[j], q, t.pts + 3 * h.pos[j])


cdef int refine_far(const Tree* t, const double* q, double d2max, Hits* h) noexcept nogil:
    """Every point within squared chord d2max (plus rounding), sorted by (metres, rank)."""
    cdef double off[3]
    off[0] = off[1] = off[2] = 0.0
    h.size = 0
    ball(t, 0, q, 0.0, off, with_slack(d2max) + 1e-14, h)
    if h.failed:
        return -1
    to_metres(h, t, q)
    sort_hits(h)
    return -1 if h.failed else 0


def _mean_direction(const double[::1] lat, const double[::1] lon):
    """Sum of the unit vectors, accumulated in 64-bit fixed point.

    Integer addition does not depend on the order of the terms, so the sum,
    hence the tree's frame and every rounding after it, is the same whatever
    order the leaders come in (shuffled input must give identical answers,
    ties included).  2^-32 resolution per term is far finer than needed.
    """
    cdef intp i, n = lat.shape[0]
    cdef double u[3]
    cdef int64_t sx = 0, sy = 0, sz = 0
    cdef double scale = 4294967296.0
    with nogil:
        for i in range(n):
            unit_vector(lat[i], lon[i], u)
            sx += <int64_t>(u[0] * scale)
            sy += <int64_t>(u[1] * scale)
            sz += <int64_t>(u[2] * scale)
    return np.array([sx, sy, sz], dtype=np.float64) / scale


def _frame(m, n):
    """Rotation (row-major, 9 values) that turns the leaders' mean direction into +z.

    Leaders of one city or country lie on a small cap of the sphere, i.e. close
    to a plane that is tilted against the x, y, z axes; axis-aligned splits of
    such a cloud give loose bounds.  In this frame the cap is nearly the x-y
    plane and the splits follow it.  ``m`` is the sum of the unit vectors.
    """
    if n == 0 or float(np.sqrt(m @ m)) / n < 0.5:
        # no leaders, or spread over most of the globe: no single cap to align with
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    lat0 = np.arctan2(m[2], np.hypot(m[0], m[1]))
    lon0 = np.arctan2(m[1], m[0])
    sa, ca, so, co = np.sin(lat0), np.cos(lat0), np.sin(lon0), np.cos(lon0)
    return (float(-so), float(co), 0.0,
            float(-sa * co), float(-sa * so), float(ca),
            float(ca * co), float(ca * so), float(sa))


def _as_coords(x, name):
    """A 1-D contiguous float64 array of ``x``; ValueError naming ``name`` otherwise."""
    if x is None:
        raise ValueError(f"{name} must be numbers in degrees, got None")
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers in degrees: {e}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of degrees, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _as_points(lat, lon):
    """Validated query coordinates: (lat, lon, was_scalar)."""
    scalar = np.ndim(lat) == 0 and np.ndim(lon) == 0
    if lat is None or lon is None:
        raise ValueError(f"{'lat' if lat is None else 'lon'} must be numbers in degrees, got None")
    if scalar:
        lat = [lat]
        lon = [lon]
    lat_a = _as_coords(lat, "lat")
    lon_a = _as_coords(lon, "lon")
    if lat_a.shape[0] != lon_a.shape[0]:
        raise ValueError(f"lat and lon have different lengths "
                         f"({lat_a.shape[0]} and {lon_a.shape[0]})")
    if scalar:
        la = float(lat_a[0])
        lo = float(lon_a[0])
        err = _scalar_error(la, lo)
        if err is not None:
            raise err
    else:
        check_coordinates(lat_a, lon_a)
    return lat_a, lon_a, scalar


def _scalar_error(double la, double lo):
    cdef int what = 0
    if first_bad_coord(&la, &lo, 1, &what) >= 0:
        return coord_error(0, what, la, lo, True)
    return None


def _check_k(k):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _max_distance(m):
    try:
        v = float(m)
    except (TypeError, ValueError):
        raise ValueError(f"max_distance_m must be a number of metres, got {m!r}") from None
    if v != v or v < 0:
        raise ValueError(f"max_distance_m must be >= 0, got {m!r}")
    return v


def _check_workers(workers):
    import os
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
        raise ValueError(f"workers must be an integer (-1 for all cores), got {workers!r}")
    w = int(workers)
    if w == -1 or w < -1:
        if w < -1:
            raise ValueError(f"workers must be >= 1 or -1, got {workers!r}")
        w = os.cpu_count() or 1
    if w == 0:
        raise ValueError("workers must be >= 1 or -1, got 0")
    return w


# Below this many rows per thread, threads cost more than they save.
_MIN_ROWS_PER_WORKER = 2048


def _run_chunks(fn, n, workers, args):
    """Call fn(*args, lo, hi) over [0, n) split into ``workers`` contiguous chunks.

    The calling thread takes the first chunk itself and plain threads take the
    rest: fn releases the GIL for its loop, and a pool would only add start-up
    cost on the short batches of a livestream.
    """
    nchunks = min(workers, max(1, n // _MIN_ROWS_PER_WORKER))
    if nchunks <= 1:
        return [fn(*args, 0, n)]
    import threading
    bounds = np.linspace(0, n, nchunks + 1).astype(np.intp).tolist()
    out = [None] * nchunks
    errors = []

    def work(i):
        try:
            out[i] = fn(*args, bounds[i], bounds[i + 1])
        except BaseException as e:  # re-raised in the caller below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, nchunks)]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _coerce_ids(ids, name="ids", n=None):
    """Ids as an int64 or str array; ValueError naming ``name`` otherwise.

    A list such as [1, "a"] would silently become strings in NumPy, so the
    elements of lists and object arrays are looked at one by one.
    """
    ids_a = np.asarray(ids)
    if ids_a.ndim != 1 or (n is not None and ids_a.shape[0] != n):
        want = f"{n} " if n is not None else ""
        raise ValueError(f"{name} must be a 1-D sequence of {want}ids, got shape {ids_a.shape}")
    if ids_a.shape[0] == 0:
        return ids_a.astype(np.int64)
    if ids_a.dtype.kind == "O" or (ids_a.dtype.kind == "U" and not isinstance(ids, np.ndarray)):
        vals = ids_a.tolist() if isinstance(ids, np.ndarray) else list(ids)
        is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                  for v in vals]
        if all(isinstance(v, str) for v in vals):
            return np.asarray(vals, dtype=str)
        if all(is_int):
            return np.asarray(vals, dtype=np.int64)
        kinds = sorted({type(v).__name__ for v in vals})
        first_int = is_int[0]
        bad = next((i for i, v in enumerate(vals)
                    if (is_int[i] != first_int) or not (is_int[i] or isinstance(v, str))), 0)
        raise ValueError(f"{name}[{bad}] = {vals[bad]!r}: ids must be all integers or all "
                         f"strings, got " + ", ".join(kinds))
    if ids_a.dtype.kind in "iu":
        return ids_a.astype(np.int64)
    if ids_a.dtype.kind == "U":
        return ids_a
    raise ValueError(f"{name} must be integers or strings, got dtype {ids_a.dtype}")


def _ranks(ids, n, name="ids"):
    """(ids array, rank array): rank is each id's position among the sorted ids."""
    if ids is None:
        ids_a = np.arange(n, dtype=np.int64)
        rank = ids_a.copy()
        ids_a.setflags(write=False)
        return ids_a, rank
    ids_a = _coerce_ids(ids, name, n)
    order = np.argsort(ids_a, kind="stable")
    sorted_ids = ids_a[order]
    if n > 1:
        rep = sorted_ids[1:] == sorted_ids[:n - 1]
        if rep.any():
            # the first row (in input order) that repeats an earlier id
            b = int(order[1:][rep].min())
            a = int(np.flatnonzero(ids_a == ids_a[b])[0])
            raise ValueError(f"{name}[{b}] = {ids_a[b].item()!r} duplicates {name}[{a}]")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    ids_a = ids_a.copy()
    ids_a.setflags(write=False)
    return ids_a, rank


include "_dispatch.pxi"
