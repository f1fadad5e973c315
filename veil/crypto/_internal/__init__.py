"""Internals of :mod:`veil.crypto`: key files and fast modular arithmetic (gmpy2).

Nothing here is a cryptographic primitive of its own: :mod:`.multiexp` computes exactly
the products of powers that ``gmpy2.powmod`` would (tests compare them), only with
fewer multiplications, and :mod:`.keyfile` writes and reads secret files safely.
"""
