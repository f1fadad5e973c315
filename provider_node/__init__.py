"""The daemon a data-providing unit (数据提供单位) runs beside its own database.

It answers only the platform (mTLS role ``platform``), checks every request itself,
and reads its unit's own tables through a field mapping (``veil.store``).
"""
