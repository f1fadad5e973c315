"""RFC 9162 Merkle tree: published transparency-dev/merkle vectors, broken-proof
probes, node-access bounds and hypothesis round trips against an RFC oracle."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil._internal import merkle as m
from veil.errors import InvalidArgument, MalformedProof, ProofError, RootMismatch


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# --- Published vectors: transparency-dev/merkle testonly/constants.go and
# proof/verify_test.go (data only). ---------------------------------------------

LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

ROOTS = [  # by tree size 1..8
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

EMPTY_TREE_HASH = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")

NODE_HASHES = [  # [level][index] for the 8-leaf tree
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# (leaf index, tree size, proof); the Go vectors number leaves from 1.
INCLUSION_VECTORS = [
    (0, 1, []),
    (0, 8, [
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (5, 8, [
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (1, 5, [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
]  # fmt: skip

CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, [
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (6, 8, [
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 5, [
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
    (6, 7, [
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
]  # fmt: skip

# Nodes read per proof, from transparency-dev/merkle proof/proof_test.go: the
# (level, index) ids each proof is built from, including those rehashed into an
# ephemeral right-edge node.
INCLUSION_NODE_IDS = [
    (0, 1, []),
    (0, 2, [(0, 1)]),
    (1, 2, [(0, 0)]),
    (1, 3, [(0, 0), (0, 2)]),
    (0, 7, [(0, 1), (1, 1), (0, 6), (1, 2)]),
    (1, 7, [(0, 0), (1, 1), (0, 6), (1, 2)]),
    (2, 7, [(0, 3), (1, 0), (0, 6), (1, 2)]),
    (3, 7, [(0, 2), (1, 0), (0, 6), (1, 2)]),
    (4, 7, [(0, 5), (0, 6), (2, 0)]),
    (5, 7, [(0, 4), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (2, 0)]),
    (2, 4, [(0, 3), (1, 0)]),
    (3, 5, [(0, 2), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (1, 0), (1, 2)]),
    (4, 6, [(0, 5), (2, 0)]),
    (10, 15, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)]),
    (24, 31, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)]),
    (81, 95, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]

CONSISTENCY_NODE_IDS = [
    (1, 2, [(0, 1)]),
    (1, 4, [(0, 1), (1, 1)]),
    (1, 6, [(0, 1), (1, 1), (1, 2)]),
    (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]),
    (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)]),
    (4, 7, [(0, 6), (1, 2)]),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    (2, 4, [(1, 1)]),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]),
    (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)]),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)]),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)]),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]


# --- helpers -----------------------------------------------------------------


def build_nodes(entries: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect-subtree hash of the tree over ``entries``."""
    frontier: list[bytes] = []
    new = m.append_leaf_hashes(frontier, 0, [m.leaf_hash(e) for e in entries])
    return {(level, index): hh for level, index, hh in new}


def getter(nodes: dict[tuple[int, int], bytes]) -> Callable[[int, int], bytes]:
    return lambda level, index: nodes[(level, index)]


VECTOR_NODES = build_nodes(LEAVES)
VECTOR_GET = getter(VECTOR_NODES)


# An RFC 9162 §2.1 oracle written straight from the definitions over lists.
def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def rfc_path(mi: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if mi < k:
        return [*rfc_path(mi, d[:k]), mth(d[k:])]
    return [*rfc_path(mi - k, d[k:]), mth(d[:k])]


def rfc_subproof(mi: int, d: list[bytes], b: bool) -> list[bytes]:
    if mi == len(d):
        return [] if b else [mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if mi <= k:
        return [*rfc_subproof(mi, d[:k], b), mth(d[k:])]
    return [*rfc_subproof(mi - k, d[k:], False), mth(d[:k])]


def flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- hashing and roots -----------------------------------------------------------


def test_constants() -> None:
    assert m.LEAF_PREFIX == b"\x00"
    assert m.NODE_PREFIX == b"\x01"
    assert m.HASH_SIZE == 32
    assert m.EMPTY_ROOT == EMPTY_TREE_HASH


def test_leaf_and_node_hashes_match_vectors() -> None:
    for index, entry in enumerate(LEAVES):
        assert m.leaf_hash(entry) == NODE_HASHES[0][index]
    for level in range(1, 4):
        for index, want in enumerate(NODE_HASHES[level]):
            left = NODE_HASHES[level - 1][2 * index]
            right = NODE_HASHES[level - 1][2 * index + 1]
            assert m.node_hash(left, right) == want
            assert VECTOR_NODES[(level, index)] == want


def test_roots_for_every_size() -> None:
    assert m.root_from_leaf_hashes([]) == EMPTY_TREE_HASH
    assert m.root_hash(0, VECTOR_GET) == EMPTY_TREE_HASH
    for size in range(1, 9):
        hashes = [m.leaf_hash(e) for e in LEAVES[:size]]
        assert m.root_from_leaf_hashes(hashes) == ROOTS[size - 1]
        assert m.root_hash(size, VECTOR_GET) == ROOTS[size - 1]
    assert ROOTS[7].hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_compact_range_matches_vectors() -> None:
    """The frontier after each size is the compact range of transparency-dev."""
    expected = [
        [],
        [(0, 0)],
        [(1, 0)],
        [(1, 0), (0, 2)],
        [(2, 0)],
        [(2, 0), (0, 4)],
        [(2, 0), (1, 2)],
        [(2, 0), (1, 2), (0, 6)],
        [(3, 0)],
    ]
    frontier: list[bytes] = []
    for size in range(9):
        assert m.root_node_ids(size) == expected[size]
        assert frontier == [NODE_HASHES[lv][ix] for lv, ix in expected[size]]
        if size < 8:
            m.append_leaf_hashes(frontier, size, [m.leaf_hash(LEAVES[size])])


# --- proof generation ------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_proof_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert m.inclusion_proof(index, size, VECTOR_GET) == proof
    m.verify_inclusion(m.leaf_hash(LEAVES[index]), index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_VECTORS)
def test_consistency_proof_vectors(size1: int, size2: int, proof: list[bytes]) -> None:
    assert m.consistency_proof(size1, size2, VECTOR_GET) == proof
    m.verify_consistency(size1, size2, proof, ROOTS[size1 - 1], ROOTS[size2 - 1])


@pytest.mark.parametrize(("index", "size", "ids"), INCLUSION_NODE_IDS)
def test_inclusion_reads_only_the_published_nodes(
    index: int, size: int, ids: list[tuple[int, int]]
) -> None:
    assert m.inclusion_proof_node_ids(index, size) == sorted(ids)


@pytest.mark.parametrize(("size1", "size2", "ids"), CONSISTENCY_NODE_IDS)
def test_consistency_reads_only_the_published_nodes(
    size1: int, size2: int, ids: list[tuple[int, int]]
) -> None:
    assert m.consistency_proof_node_ids(size1, size2) == sorted(ids)


def test_proofs_read_logarithmically_many_nodes() -> None:
    size = 1_000_003
    for index in (0, 1, 500_000, 999_999, size - 1):
        assert len(m.inclusion_proof_node_ids(index, size)) <= 2 * size.bit_length()
    for size1 in (1, 7, 524_288, 999_999):
        assert len(m.consistency_proof_node_ids(size1, size)) <= 3 * size.bit_length()


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (8, 7), (-1, 5), (5, 5)])
def test_inclusion_proof_rejects_bad_parameters(index: int, size: int) -> None:
    with pytest.raises(MalformedProof):
        m.inclusion_proof(index, size, VECTOR_GET)


@pytest.mark.parametrize(("size1", "size2"), [(5, 0), (9, 8), (0, 4), (0, 0), (-1, 3)])
def test_consistency_proof_rejects_bad_parameters(size1: int, size2: int) -> None:
    with pytest.raises(MalformedProof):
        m.consistency_proof(size1, size2, VECTOR_GET)


def test_consistency_proof_same_size_is_empty() -> None:
    for size in range(1, 9):
        assert m.consistency_proof(size, size, VECTOR_GET) == []


# --- broken-proof probes (transparency-dev/merkle proof/verify_test.go) ---------


def inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    probes = [
        ("index - 1", index - 1, size, root, leaf, proof),
        ("index + 1", index + 1, size, root, leaf, proof),
        ("index ^ 2", index ^ 2, size, root, leaf, proof),
        ("size * 2", index, size * 2, root, leaf, proof),
        ("size // 2", index, size // 2, root, leaf, proof),
        ("wrong leaf", index, size, root, b"WrongLeaf", proof),
        ("wrong leaf hash", index, size, root, flip(leaf, 0), proof),
        ("empty root", index, size, EMPTY_TREE_HASH, leaf, proof),
        ("random root", index, size, SOME_HASH, leaf, proof),
        ("trailing garbage", index, size, root, leaf, [*proof, b""]),
        ("trailing root", index, size, root, leaf, [*proof, root]),
        ("preceding garbage", index, size, root, leaf, [b"", *proof]),
        ("preceding root", index, size, root, leaf, [root, *proof]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 3)
        probes.append((f"modified proof[{i}] bit 3", index, size, root, leaf, bad))
    if proof:
        probes.append(("removed component", index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted component", index, size, root, leaf, inserted))
    return probes


def consistency_probes(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    probes = [
        ("size1 - 1", size1 - 1, size2, root1, root2, proof),
        ("size1 + 1", size1 + 1, size2, root1, root2, proof),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, proof),
        ("size2 * 2", size1, size2 * 2, root1, root2, proof),
        ("size2 // 2", size1, size2 // 2, root1, root2, proof),
        ("wrong root1", size1, size2, b"WrongRoot", root2, proof),
        ("wrong root2", size1, size2, root1, b"WrongRoot", proof),
        ("flipped root1", size1, size2, flip(root1, 9), root2, proof),
        ("flipped root2", size1, size2, root1, flip(root2, 9), proof),
        ("swapped roots", size1, size2, root2, root1, proof),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
        ("truncated proof", size1, size2, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 4)
        probes.append((f"modified proof[{i}] bit 4", size1, size2, root1, root2, bad))
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_verifier_rejects_every_probe(index: int, size: int, proof: list[bytes]) -> None:
    leaf = m.leaf_hash(LEAVES[index])
    root = ROOTS[size - 1]
    accepted = []
    for desc, i, n, r, lf, p in inclusion_probes(index, size, proof, root, leaf):
        try:
            m.verify_inclusion(lf, i, n, p, r)
        except ProofError:
            continue
        accepted.append(desc)
    assert accepted == []


@pytest.mark.parametrize(("size1", "size2", "proof"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_consistency_verifier_rejects_every_probe(
    size1: int, size2: int, proof: list[bytes]
) -> None:
    accepted = []
    r1, r2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    for desc, s1, s2, a, b, p in consistency_probes(size1, size2, r1, r2, proof):
        try:
            m.verify_consistency(s1, s2, p, a, b)
        except ProofError:
            continue
        accepted.append(desc)
    assert accepted == []


def test_verify_inclusion_single_entry() -> None:
    leaf = m.leaf_hash(b"data")
    m.verify_inclusion(leaf, 0, 1, [], leaf)  # root of a 1-leaf tree is its leaf hash
    for lf, root in [(leaf, b""), (b"", leaf), (b"", b"")]:
        with pytest.raises(MalformedProof):
            m.verify_inclusion(lf, 0, 1, [], root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_verify_inclusion_trivial_probes(index: int, size: int) -> None:
    for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_TREE_HASH), (SOME_HASH, EMPTY_TREE_HASH)]:
        with pytest.raises(ProofError):
            m.verify_inclusion(leaf, index, size, [], root)


def test_verify_consistency_edge_cases() -> None:
    r1, r2 = ROOTS[0], ROOTS[1]
    # Sizes that are always consistent.
    m.verify_consistency(0, 0, [], EMPTY_TREE_HASH, EMPTY_TREE_HASH)
    m.verify_consistency(0, 1, [], EMPTY_TREE_HASH, r2)
    m.verify_consistency(1, 1, [], r2, r2)
    # Roots that don't match.
    with pytest.raises(RootMismatch):
        m.verify_consistency(1, 1, [], r1, r2)
    with pytest.raises(RootMismatch):
        m.verify_consistency(0, 0, [], EMPTY_TREE_HASH, r2)
    with pytest.raises(RootMismatch):
        m.verify_consistency(0, 5, [], r1, r2)  # size 0 only has the empty root
    # Time travel to the past.
    with pytest.raises(MalformedProof):
        m.verify_consistency(1, 0, [], r1, r2)
    with pytest.raises(MalformedProof):
        m.verify_consistency(2, 1, [], r1, r2)
    with pytest.raises(MalformedProof):
        m.verify_consistency(-1, 1, [], r1, r2)
    # Empty proof between different sizes.
    with pytest.raises(MalformedProof):
        m.verify_consistency(1, 2, [], r1, r2)
    # Roots match but the proof is not empty.
    for s1, s2 in [(0, 0), (0, 1), (1, 1)]:
        with pytest.raises(MalformedProof):
            m.verify_consistency(s1, s2, [EMPTY_TREE_HASH], EMPTY_TREE_HASH, EMPTY_TREE_HASH)
    # Hashes of the wrong length.
    with pytest.raises(MalformedProof):
        m.verify_consistency(1, 1, [], b"don't care 1", b"don't care 1")


def test_proof_errors_are_invalid_argument() -> None:
    assert issubclass(ProofError, InvalidArgument)
    assert issubclass(MalformedProof, ProofError)
    assert issubclass(RootMismatch, ProofError)


# --- property tests ------------------------------------------------------------

entries_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None)
@given(entries=entries_st, data=st.data())
def test_random_tree_inclusion_round_trip(entries: list[bytes], data: st.DataObject) -> None:
    nodes = build_nodes(entries)
    size = data.draw(st.integers(1, len(entries)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = m.root_hash(size, getter(nodes))
    assert root == mth(entries[:size])
    proof = m.inclusion_proof(index, size, getter(nodes))
    assert proof == rfc_path(index, entries[:size])
    leaf = m.leaf_hash(entries[index])
    m.verify_inclusion(leaf, index, size, proof, root)

    # Any single-bit change to the proof, the leaf hash or the root fails.
    bit = data.draw(st.integers(0, 8 * m.HASH_SIZE - 1), label="bit")
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], bit)
        with pytest.raises(RootMismatch):
            m.verify_inclusion(leaf, index, size, bad, root)
    with pytest.raises(RootMismatch):
        m.verify_inclusion(flip(leaf, bit), index, size, proof, root)
    with pytest.raises(RootMismatch):
        m.verify_inclusion(leaf, index, size, proof, flip(root, bit))


@settings(max_examples=60, deadline=None)
@given(entries=entries_st, data=st.data())
def test_random_tree_consistency_round_trip(entries: list[bytes], data: st.DataObject) -> None:
    nodes = build_nodes(entries)
    size2 = data.draw(st.integers(1, len(entries)), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    root1 = m.root_hash(size1, getter(nodes))
    root2 = m.root_hash(size2, getter(nodes))
    proof = m.consistency_proof(size1, size2, getter(nodes))
    assert proof == rfc_subproof(size1, entries[:size2], True)
    m.verify_consistency(size1, size2, proof, root1, root2)

    bit = data.draw(st.integers(0, 8 * m.HASH_SIZE - 1), label="bit")
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], bit)
        with pytest.raises(RootMismatch):
            m.verify_consistency(size1, size2, bad, root1, root2)
    with pytest.raises(RootMismatch):
        m.verify_consistency(size1, size2, proof, flip(root1, bit), root2)
    with pytest.raises(RootMismatch):
        m.verify_consistency(size1, size2, proof, root1, flip(root2, bit))


@settings(max_examples=40, deadline=None)
@given(entries=st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=40, unique=True))
def test_every_proof_of_a_tree_verifies(entries: list[bytes]) -> None:
    nodes = build_nodes(entries)
    get = getter(nodes)
    roots = [m.root_hash(n, get) for n in range(len(entries) + 1)]
    for size in range(1, len(entries) + 1):
        for index in range(size):
            proof = m.inclusion_proof(index, size, get)
            m.verify_inclusion(m.leaf_hash(entries[index]), index, size, proof, roots[size])
            # The same path claimed for a neighbouring index never verifies.
            for other in (index - 1, index + 1):
                if 0 <= other < size:
                    with pytest.raises(ProofError):
                        m.verify_inclusion(
                            m.leaf_hash(entries[index]), other, size, proof, roots[size]
                        )
        for size1 in range(1, size + 1):
            proof = m.consistency_proof(size1, size, get)
            m.verify_consistency(size1, size, proof, roots[size1], roots[size])
            if size1 < size:
                with pytest.raises(ProofError):  # a different old tree is not a prefix
                    m.verify_consistency(size1, size, proof, roots[size1 - 1], roots[size])
