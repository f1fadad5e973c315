"""RFC 9162 (RFC 6962) Merkle tree hashing, proofs and proof verification.

Pure functions over bytes, no I/O.  The tree over entries ``D[0:n]`` is defined by
RFC 9162 §2.1.1::

    MTH({})      = SHA-256()
    MTH({d0})    = SHA-256(0x00 || d0)                      (leaf hash)
    MTH(D[0:n])  = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   (node hash)

where ``k`` is the largest power of two strictly smaller than ``n``.  The distinct
0x00/0x01 prefixes are the domain separation that stops a second-preimage attack: an
interior node can never be passed off as a leaf (or the reverse), so a proof for one
tree shape cannot be replayed as a proof for another.

Node addressing.  Every *perfect* subtree (``2**level`` leaves, left-aligned on a
multiple of its width) is named ``(level, index)`` and covers leaves
``[index * 2**level, (index + 1) * 2**level)`` -- the addressing used by
transparency-dev/merkle's compact ranges.  Once the log holds ``(index + 1) *
2**level`` leaves the hash of that node never changes, so a store can persist it and
serve any proof by reading O(log n) nodes instead of the whole log.  Subtrees on the
right edge of a tree whose size is not a power of two are not perfect; their hashes
are recomputed on demand from the perfect subtrees that tile them (at most
``log2(n)`` extra reads, and at most one such "ephemeral" node per proof level).

Proofs are *generated* from a node accessor ``get_node(level, index) -> bytes``,
following RFC 9162 §2.1.3.1 (``PATH``) and §2.1.4.1 (``SUBPROOF``), and *verified*
with the exact algorithms of §2.1.3.2 and §2.1.4.2.  ``verify_*`` return ``None`` or
raise a :class:`veil.errors.ProofError` subclass; there is no boolean to forget to
check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from veil.errors import MalformedProof, RootMismatch

LEAF_PREFIX = b"\x00"
"""RFC 9162 domain-separation byte prepended to an entry before hashing it."""

NODE_PREFIX = b"\x01"
"""RFC 9162 domain-separation byte prepended to two child hashes."""

HASH_SIZE = 32
"""Size of a SHA-256 digest, the only hash RFC 9162 logs use here."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}): the root hash of the empty tree."""

NodeGetter = Callable[[int, int], bytes]
"""``get_node(level, index)``: the hash of the perfect subtree ``(level, index)``."""

NodeID = tuple[int, int]


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry): the hash of one log entry (RFC 9162 §2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The split point ``k`` of RFC 9162: the largest power of two with ``k < n``."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine the perfect subtrees tiling an RFC subtree, largest (leftmost) first.

    An RFC subtree of size ``2**a + 2**b + ...`` (a > b > ...) is a perfect tree of
    ``2**a`` leaves on the left and the subtree of the remaining leaves on the right,
    recursively, hence a right fold.
    """
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes; the empty list gives :data:`EMPTY_ROOT`.

    Runs in O(n) time and O(log n) memory by keeping only the compact range.
    """
    frontier: list[bytes] = []
    for size, h in enumerate(leaf_hashes):
        append_leaf_hashes(frontier, size, (h,))
    return _fold_right(frontier) if frontier else EMPTY_ROOT


def append_leaf_hashes(
    frontier: list[bytes], size: int, leaf_hashes: Iterable[bytes]
) -> list[tuple[int, int, bytes]]:
    """Append leaves to a compact range, returning every perfect node they complete.

    ``frontier`` holds the hashes of the perfect subtrees tiling ``[0, size)``,
    largest first (one per set bit of ``size``); it is updated in place.  Appending
    leaf ``i`` completes node ``(0, i)`` and then, while the new node is a right
    child (odd index), its parent -- hashed with the left sibling popped from the
    frontier.  The returned ``(level, index, hash)`` triples are exactly the new
    nodes a store must persist; amortised that is two nodes per leaf.
    """
    out: list[tuple[int, int, bytes]] = []
    for lh in leaf_hashes:
        h, level, index = lh, 0, size
        out.append((0, index, h))
        while index & 1:
            h = node_hash(frontier.pop(), h)
            level += 1
            index >>= 1
            out.append((level, index, h))
        frontier.append(h)
        size += 1
    return out


def perfect_subtrees(start: int, end: int) -> list[NodeID]:
    """The perfect subtrees tiling leaves ``[start, end)``, left to right.

    Each step takes the largest node aligned at ``start`` that still fits.  For the
    ranges RFC 9162's recursion produces (``start`` a multiple of a power of two at
    least ``end - start``) the sizes strictly decrease, one node per set bit.
    """
    if not 0 <= start <= end:
        raise MalformedProof(f"invalid leaf range [{start}, {end})")
    out: list[NodeID] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length()
        while start + (1 << level) > end:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def subtree_hash(start: int, end: int, get_node: NodeGetter) -> bytes:
    """MTH(D[start:end]) for an RFC subtree, read as perfect nodes from ``get_node``."""
    if start == end:
        return EMPTY_ROOT
    return _fold_right([get_node(level, index) for level, index in perfect_subtrees(start, end)])


def root_hash(size: int, get_node: NodeGetter) -> bytes:
    """MTH(D[0:size]) from at most ``log2(size) + 1`` stored nodes."""
    if size < 0:
        raise MalformedProof(f"tree size {size} is negative")
    return subtree_hash(0, size, get_node)


def inclusion_proof(leaf_index: int, tree_size: int, get_node: NodeGetter) -> list[bytes]:
    """The audit path PATH(m, D[n]) of RFC 9162 §2.1.3.1, bottom-most sibling first.

    ``PATH(m, D[0:n])`` is empty for ``n == 1``; otherwise, splitting at ``k``, it is
    ``PATH(m, D[0:k]) : MTH(D[k:n])`` if ``m < k`` and ``PATH(m - k, D[k:n]) :
    MTH(D[0:k])`` if not.  Only the right sibling of a left turn can be non-perfect,
    and only once along the path, so O(log n) nodes are read.
    """
    if tree_size <= 0 or not 0 <= leaf_index < tree_size:
        raise MalformedProof(f"leaf index {leaf_index} is not in a tree of size {tree_size}")
    path: list[bytes] = []
    start, end, m = 0, tree_size, leaf_index
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if m < k:
            path.append(subtree_hash(start + k, end, get_node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, get_node))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, get_node: NodeGetter) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1.

    ``SUBPROOF(m, D[n], b)`` is empty if ``m == n`` and ``b``; ``[MTH(D[n])]`` if
    ``m == n`` and not ``b``; otherwise, splitting at ``k``, it is
    ``SUBPROOF(m, D[0:k], b) : MTH(D[k:n])`` if ``m <= k`` and
    ``SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])`` if not.  The proof for
    ``m == n`` is empty; ``m == 0`` is outside the RFC's definition (the empty tree
    is trivially a prefix of every tree) and is rejected.
    """
    if not 0 < size1 <= size2:
        raise MalformedProof(f"no consistency proof from size {size1} to size {size2}")
    path: list[bytes] = []
    start, end, m, b = 0, size2, size1, True
    while m != end - start:
        n = end - start
        k = _largest_power_of_two_below(n)
        if m <= k:
            path.append(subtree_hash(start + k, end, get_node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, get_node))
            start, m, b = start + k, m - k, False
    if not b:
        path.append(subtree_hash(start, end, get_node))
    path.reverse()
    return path


def _node_ids_read_by(proof: Callable[[NodeGetter], object]) -> list[NodeID]:
    """The nodes a proof computation reads; they depend only on the sizes, never on
    hash values, so a store can fetch them all in one query before computing."""
    seen: list[NodeID] = []

    def record(level: int, index: int) -> bytes:
        seen.append((level, index))
        return bytes(HASH_SIZE)

    proof(record)
    return sorted(set(seen))


def inclusion_proof_node_ids(leaf_index: int, tree_size: int) -> list[NodeID]:
    """The ``(level, index)`` nodes :func:`inclusion_proof` reads."""
    return _node_ids_read_by(lambda g: inclusion_proof(leaf_index, tree_size, g))


def consistency_proof_node_ids(size1: int, size2: int) -> list[NodeID]:
    """The ``(level, index)`` nodes :func:`consistency_proof` reads."""
    return _node_ids_read_by(lambda g: consistency_proof(size1, size2, g))


def root_node_ids(size: int) -> list[NodeID]:
    """The perfect nodes tiling ``[0, size)`` (the compact range) -- what
    :func:`root_hash` reads, and what a store reloads as its append frontier."""
    return perfect_subtrees(0, size)


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise MalformedProof(f"{what} is {len(h)} bytes, want {HASH_SIZE}")


def _inclusion_proof_size(index: int, size: int) -> int:
    """Hashes in an audit path: ``inner`` levels where the paths to ``index`` and to
    the last leaf differ, plus one ``border`` hash per left turn above them."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2: walk up from the leaf with ``fn = index`` and ``sn = size -
    1``; a proof hash goes on the left when ``fn`` is odd (we are a right child) or
    ``fn == sn`` (we are the last node of a non-perfect level, which has no right
    sibling, so we skip up levels until ``fn`` is odd).  Accepting a wrong path
    would let the log claim an entry it never logged (or hide one it did), so the
    proof length is checked exactly before hashing, and ``sn`` must reach 0.

    Raises :class:`MalformedProof` for bad sizes, hash lengths or proof length, and
    :class:`RootMismatch` if the path does not hash to ``root``.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if size <= 0 or not 0 <= index < size:
        raise MalformedProof(f"leaf index {index} is not in a tree of size {size}")
    want = _inclusion_proof_size(index, size)
    if len(proof) != want:
        raise MalformedProof(
            f"inclusion proof for leaf {index} of {size} has {len(proof)} hashes, want {want}"
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise MalformedProof("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("inclusion proof is shorter than the path to the root")
    if r != root:
        raise RootMismatch(f"inclusion proof for leaf {index} does not lead to the root of {size}")


def _consistency_proof_size(size1: int, size2: int) -> tuple[int, bool]:
    """(number of hashes, whether ``root1`` is implicit) for ``0 < size1 < size2``.

    Shifting out the ``level`` trailing zero bits of ``size1`` reduces the proof to
    an inclusion proof of the last node of the old tree at that level; when ``size1``
    is a power of two that node is the old root itself and is not sent.
    """
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    n = _inclusion_proof_size(index, ((size2 - 1) >> level) + 1)
    implicit = size1 == 1 << level
    return n + (0 if implicit else 1), implicit


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of
    ``size2`` with ``root2`` (RFC 9162 §2.1.4.2).

    This is what makes the log append-only: an auditor who verified ``root1`` earlier
    and now sees ``root2`` learns that nothing it saw was changed or removed.  A
    :class:`RootMismatch` between two validly signed checkpoints is proof of a fork.

    The algorithm reconstructs both roots at once from the same path: ``fr`` only
    absorbs hashes to its left (what the old tree contained), ``sr`` absorbs all.
    ``size1 == size2`` needs an empty proof and equal roots; ``size1 == 0`` needs an
    empty proof and ``root1`` equal to the empty-tree hash, since the empty tree is
    a prefix of every tree.

    Raises :class:`MalformedProof` for bad sizes, hash lengths or proof length, and
    :class:`RootMismatch` when the proof does not reproduce both roots.
    """
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    for i, p in enumerate(proof):
        _check_hash(f"proof[{i}]", p)
    if size1 < 0 or size2 < size1:
        raise MalformedProof(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2 or size1 == 0:
        if proof:
            raise MalformedProof(f"consistency proof from {size1} to {size2} must be empty")
        expected = root2 if size1 == size2 else EMPTY_ROOT
        if root1 != expected:
            raise RootMismatch(f"first root is not the root of the tree of size {size1}")
        return
    want, implicit = _consistency_proof_size(size1, size2)
    if len(proof) != want:
        raise MalformedProof(
            f"consistency proof from {size1} to {size2} has {len(proof)} hashes, want {want}"
        )
    path = [root1, *proof] if implicit else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MalformedProof("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("consistency proof is shorter than the path to the root")
    if fr != root1:
        raise RootMismatch(f"consistency proof does not reproduce the root of size {size1}")
    if sr != root2:
        raise RootMismatch(f"consistency proof does not reproduce the root of size {size2}")
