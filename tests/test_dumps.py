"""The file layer of the CLI: encodings, positions of rows across chunks, duplicate ids."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from lbsdispatch.dumps import (
    DumpError,
    LeaderColumns,
    OrderColumns,
    OrderReader,
    SeenIds,
    read_bindings,
    read_leaders,
    sniff_encoding,
)


def test_sniff_encoding(tmp_path):
    p = tmp_path / "f.csv"
    p.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert sniff_encoding(p) == "utf-8-sig"
    assert sniff_encoding(p, "utf-8") == "utf-8-sig"     # the mark is never a column name
    p.write_bytes("名字,b\n张三,2\n".encode("gbk"))
    assert sniff_encoding(p) == "gb18030"
    p.write_bytes("名字,b\n张三,2\n".encode())
    assert sniff_encoding(p) == "utf-8"
    # a multi-byte character cut by the 64 KiB sample is not a reason to give up UTF-8
    p.write_bytes(b"a\n" + ("x" * 65535).encode() + "张".encode() * 10)
    assert sniff_encoding(p) == "utf-8"
    with pytest.raises(DumpError, match="not an encoding"):
        sniff_encoding(p, "klingon-8")


def test_seen_ids_against_a_set():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 3000, 5000).astype(str).astype(object)
    for chunk in (1, 7, 100, 5000):
        seen, ref = SeenIds(), {}
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            h = seen.hash(part)
            first = seen.first_position(h)
            want = np.array([ref.get(v, 0) for v in part.tolist()])
            assert (first == want).all()
            # add the new ones (first occurrence in the part only), 1-based positions
            new_pos, new_h = [], []
            for k, v in enumerate(part.tolist()):
                if v not in ref:
                    ref[v] = s + k + 1
                    new_pos.append(s + k + 1)
                    new_h.append(h[k])
            seen.add(np.array(new_h, dtype=np.uint64), np.array(new_pos))
        assert len(seen.runs) <= int(np.log2(len(ids))) + 2   # merged like a binary counter


KINDS = ("good", "good", "good", "blank", "fields", "lat", "dup")


def random_file(rng, n):
    lines, expect = [], {}
    used = []
    for i in range(n):
        line = i + 2
        kind = KINDS[rng.integers(0, len(KINDS))]
        if kind == "dup" and not used:
            kind = "good"
        if kind == "good":
            oid = f"o{i}"
            used.append((oid, line))
            lines.append(f"{oid},30.{i % 90:02d},120.{i % 90:02d}")
            expect[line] = None
        elif kind == "blank":
            lines.append("")
        elif kind == "fields":
            lines.append(f"x{i},30.1,120.1,extra")
            expect[line] = "cannot be split"
        elif kind == "lat":
            lines.append(f"y{i},north,120.1")
            expect[line] = "not a number"
        else:
            oid, first = used[rng.integers(0, len(used))]
            lines.append(f"{oid},30.5,120.5")
            expect[line] = f"first on line {first}"
    return "order_id,lat,lon\n" + "\n".join(lines) + "\n", expect


@pytest.mark.parametrize("seed", range(6))
def test_positions_survive_chunk_boundaries(tmp_path, seed):
    rng = np.random.default_rng(seed)
    text, expect = random_file(rng, 60)
    p = tmp_path / "o.csv"
    p.write_text(text)
    for chunksize in (1, 2, 3, 5, 8, 1000):
        r = OrderReader(p, OrderColumns(customer=None, chosen=None), chunksize=chunksize)
        got = {}
        for ch in r.chunks():
            for k in range(len(ch)):
                got[int(ch.pos[k])] = None if ch.ok[k] else ch.reason[k]
            for b, why, _ in ch.bad_lines:
                got[b] = why
        assert set(got) == set(expect), chunksize
        for line, why in expect.items():
            if why is None:
                assert got[line] is None, (chunksize, line, got[line])
            else:
                assert why in got[line], (chunksize, line, got[line])


def test_leader_values_are_checked_with_their_position(tmp_path):
    p = tmp_path / "l.csv"
    cols = LeaderColumns()
    p.write_text("leader_id,lat,lon,capacity,active,radius_m,priority\n"
                 "a,30,120,5,yes,,\nb,30.1,120.1,3,no,800,2\n")
    t = read_leaders(p, cols)
    assert t.ids.tolist() == ["a", "b"] and t.capacity.tolist() == [5, 3]
    assert t.active.tolist() == [True, False] and t.radius_m[0] == np.inf
    assert t.priority.tolist() == [0, 2]
    for body, fragment in (("a,30,120,5.5,yes,,", "line 2, column 'capacity': '5.5' is not a whole"),
                           ("a,30,120,,yes,,", "line 2, column 'capacity': '' is empty"),
                           ("a,30,120,5,maybe,,", "'maybe' is not a yes/no value"),
                           ("a,30,120,-1,yes,,", "is negative"),
                           ("a,95,120,1,yes,,", "line 2"),
                           ("a,30,120,1,yes,-3,", "must be >= 0 metres"),
                           (",30,120,1,yes,,", "leader id missing")):
        p.write_text("leader_id,lat,lon,capacity,active,radius_m,priority\n" + body + "\n")
        with pytest.raises(DumpError, match=None) as e:
            read_leaders(p, cols)
        assert fragment in str(e.value), (body, str(e.value))


def test_bindings_file(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("customer_id,leader_id\nc1,L1\nc2,L2\nc1,L1\n")
    assert read_bindings(p) == {"c1": "L1", "c2": "L2"}
    p.write_text("customer_id,leader_id\nc1,L1\nc1,L2\n")
    with pytest.raises(DumpError, match="line 3: customer 'c1' is bound to 'L2' here and to "
                                        "'L1' on line 2"):
        read_bindings(p)
