"""The published catalog as a ``GetCatalogResponse``."""

from __future__ import annotations

import hashlib
from importlib import resources

from veil.catalog import Catalog, Classification, SharingMode
from veil.v1 import common_pb2, gateway_pb2

_MODES = {
    SharingMode.PHYSICAL_AGGREGATION: common_pb2.SHARING_MODE_PHYSICAL_AGGREGATION,
    SharingMode.INTERFACE_CALL: common_pb2.SHARING_MODE_INTERFACE_CALL,
    SharingMode.DATA_VERIFICATION: common_pb2.SHARING_MODE_DATA_VERIFICATION,
}
_CLASSES = {
    Classification.PUBLIC: common_pb2.CLASSIFICATION_PUBLIC,
    Classification.AUTHORIZED_DETAIL: common_pb2.CLASSIFICATION_AUTHORIZED_DETAIL,
    Classification.VERIFICATION_ONLY: common_pb2.CLASSIFICATION_VERIFICATION_ONLY,
}


def catalog_response(catalog: Catalog) -> gateway_pb2.GetCatalogResponse:
    digest = hashlib.sha256(
        resources.files("veil.catalog").joinpath("annex.toml").read_bytes()
    ).hexdigest()
    out = gateway_pb2.GetCatalogResponse(digest=digest)
    for ds in catalog.datasets:
        msg = out.datasets.add(
            id=ds.id,
            category_id=ds.category_id,
            name_zh=ds.name_zh,
            name_en=ds.name_en,
            provider=ds.provider,
            mode=_MODES[ds.mode],
            authorization_required=ds.authorization,
        )
        for f in ds.fields:
            msg.fields.add(
                id=f.id,
                name_zh=f.name_zh,
                name_en=f.name_en,
                type=f.type,
                unit=f.unit,
                classification=_CLASSES[f.classification],
                mode=_MODES[f.mode],
                authorization_required=f.authorization,
            )
    return out
