"""humanlm analysis: compare human next-token predictions with a base model's, from an export.

Reads the export format defined in `analysis.schema` and imports nothing from `webapp`, so a
researcher can use it on exported files alone:

    import analysis
    data = analysis.load("export.zip")            # checked, tidy pandas DataFrames
    analysis.accuracy(data)                       # humans vs crowd vs model, with CIs
    analysis.simulator_fit(data)                  # how well the model predicts people
    analysis.fit_temperature(data)                # T* with a confidence interval
    analysis.report.write_report(data, "report.html")

or from a shell: `python -m analysis EXPORT -o report.html` (`humanlm analyze` in the app).

The names below are imported lazily, so `from analysis.schema import ...` (which the exporter
does) needs neither pandas nor matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load": "reader", "ExportData": "reader", "ExportFormatError": "reader",
    "AnalysisError": "reader", "prepare": "answers", "Prepared": "answers",
    "token_class": "tokens",
    "accuracy": "metrics", "simulator_fit": "metrics", "item_distances": "metrics",
    "distance_summary": "metrics", "learning_curve": "metrics", "learning_trend": "metrics",
    "calibration": "metrics", "calibration_summary": "metrics",
    "fit_temperature": "temperature", "temperature_curve": "temperature",
    "interpolate_logz": "temperature",
    "twoway_bootstrap": "bootstrap",
    "pairwise_loss": "judgements", "stated_scores": "judgements",
    "compare_models": "models_compare",
}

__all__ = [  # noqa: RUF022 (grouped: functions, then modules)
    "AnalysisError", "ExportData", "ExportFormatError", "Prepared", "accuracy", "calibration",
    "calibration_summary", "distance_summary", "fit_temperature", "interpolate_logz",
    "item_distances", "learning_curve", "learning_trend", "load", "prepare", "simulator_fit",
    "temperature_curve", "token_class", "twoway_bootstrap",
    "pairwise_loss", "stated_scores", "compare_models",
    "cli", "report", "schema", "synthetic",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    if name in ("report", "schema", "synthetic", "cli", "metrics", "temperature", "bootstrap",
                "tokens", "answers", "reader", "plots", "pairwise", "stated", "judgements",
                "models_compare"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
