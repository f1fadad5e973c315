"""Transparency-log usage records: the entry format (:mod:`veil.audit.entry`), the
AuditService client (:mod:`veil.audit.client`) and outside verification of the log
(:mod:`veil.audit.verify`).  The log itself is :mod:`veil.tlog`; the platform writes
it (``platform_node.audit``) and the gateway serves it (``gateway.audit_service``).
"""
