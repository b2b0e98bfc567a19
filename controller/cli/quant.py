"""`fleetbench quant-report`: a stored int8 variant's layers ranked by how much quantization costs each (issue 18).

The converter computes it (a sandboxed child, like ``convert``) on the calibration split of the data set the
variant was made with, and stores it on the variant, where the dashboard's Explorer shows it.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape as e
from rich.table import Table

from controller.cli.app import DataDirOpt, DbOpt, _fail, app, console


@app.command("quant-report")
def quant_report(
    model: str = typer.Argument(..., help="Model id, id prefix or name (`fleetbench models`)."),
    variant: str = typer.Option("tflite-int8", help="The int8 variant to explain: tflite-int8 or openvino-int8."),
    top: int = typer.Option(15, help="Layers to list, worst first."),
    output_format: str = typer.Option("table", "--format", help="table or json."),
    broker: Optional[str] = typer.Option(None, help="Use converter workers on this broker instead of a local one."),
    memory_limit_gb: float = typer.Option(12.0, help="Address-space limit of the conversion process."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Rank an int8 variant's layers by their quantization error against fp32 (calibration split)."""
    from controller.artifacts import ArtifactStore
    from controller.config import Paths
    from controller.convert import reports
    from controller.convert.service import ConvertError, local_runner
    from controller.errors import DispatchError, ServiceError
    from controller.store import Store, StoreError

    if output_format not in ("table", "json"):
        _fail(f"--format must be table or json; got '{output_format}'", code=2)
    if top < 1:
        _fail(f"--top must be 1 or more; got {top}", code=2)
    paths = Paths.resolve(data_dir)
    store = Store(paths.db_url(db))
    limits = {"memory_bytes": int(memory_limit_gb * 2**30)}
    try:
        store.migrate()
        artifacts = ArtifactStore(paths.artifacts)
        found = reports.find_variant(store, model, variant)  # a clear line before any process starts
        with console.status(f"computing the per-layer report of {variant} (quantizing again, every layer compared)…"):
            if broker:
                from controller.dispatch import Dispatcher

                dispatcher = Dispatcher(broker)
                try:
                    rep = reports.run(store, artifacts, found, dispatcher.convert, limits=limits)
                finally:
                    dispatcher.close()
            else:
                rep = reports.run(store, artifacts, found, local_runner(artifacts), limits=limits)
    except (ConvertError, DispatchError, ServiceError, StoreError) as exc:
        _fail(str(exc))
    finally:
        store.close()
    if output_format == "json":
        print(json.dumps({"model": rep.model, "variant": rep.variant, "metric": rep.metric, "samples": rep.samples,
                          "layers_total": rep.total, "layers": rep.layers[:top]}, indent=2))  # fmt: skip
        return
    console.print(layer_table(rep.model, rep.variant, rep.layers[:top], rep.metric))
    console.print(f"{min(top, len(rep.layers))} of {rep.total} layers, worst first, on {rep.samples} calibration samples. "
                  f"{METRIC_HELP.get(rep.metric, '')}")  # fmt: skip


METRIC_HELP = {
    "rmse/scale": "rmse/scale: the int8 op's output error in quantization steps, from its float inputs (~0.3 is rounding).",
    "added relative rms": "added: the layer's relative RMS error against fp32 minus the largest it received.",
}


def layer_table(model: str, variant: str, layers: list[dict], metric: str) -> Table:
    table = Table(title=f"Per-layer quantization error of {e(model)} {variant}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("layer", overflow="fold", ratio=1)
    table.add_column("op", no_wrap=True)
    table.add_column(metric or "error", justify="right", no_wrap=True)
    if metric == "added relative rms":
        table.add_column("relative rms", justify="right", no_wrap=True)
    for i, row in enumerate(layers, 1):
        cells = [str(i), e(row["layer"]), e(row["op"]), f"{row['error']:,.4g}"]
        if metric == "added relative rms":
            cells.append(f"{row.get('relative_rms', 0):,.4g}")
        table.add_row(*cells)
    return table
