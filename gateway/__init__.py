"""The gateway: the edge that institutions, enterprises and auditors talk to.

It authenticates callers, forwards to the platform with a deadline, and publishes
the catalog.  It holds no data of its own.
"""
