"""Readable terminal output (rich) for reports and statuses, shared by commands and the demo."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from veil.catalog import Catalog
from veil.v1 import common_pb2, platform_pb2
from veil.values import display, from_record

MAX_ROWS_SHOWN = 3


def report_table(
    uscc: str,
    name: str,
    datasets: list[common_pb2.DatasetRecords],
    catalog: Catalog,
    kind: str = "Public credit report",
) -> Table:
    table = Table(title=f"{kind}: {name} ({uscc})", show_lines=False)
    table.add_column("dataset")
    table.add_column("source")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for ds in datasets:
        meta = catalog.dataset(ds.dataset_id)
        label = f"{meta.name_zh} ({ds.dataset_id})"
        if not ds.records:
            table.add_row(label, ds.source, "—", "no record")
            continue
        for i, record in enumerate(ds.records[:MAX_ROWS_SHOWN]):
            values = from_record(record)
            for field in meta.fields:
                if field.id in values:
                    table.add_row(label, ds.source, field.name_zh, display(values[field.id]))
                    label = ""
            if i == MAX_ROWS_SHOWN - 1 and len(ds.records) > MAX_ROWS_SHOWN:
                table.add_row("", "", "…", f"{len(ds.records) - MAX_ROWS_SHOWN} more rows")
    return table


def providers_table(statuses: list[platform_pb2.ProviderStatus]) -> Table:
    table = Table(title="Providers registered at the platform")
    for col in ("provider", "address", "reachable", "aggregated rows", "last aggregated"):
        table.add_column(col)
    for s in statuses:
        table.add_row(
            s.name,
            s.address,
            "yes" if s.reachable else f"NO: {s.error}",
            str(s.aggregated_records),
            s.last_aggregated_at or "never",
        )
    return table


def kv_table(title: str, rows: Mapping[str, str]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows.items():
        table.add_row(k, v)
    return table


console = Console()
