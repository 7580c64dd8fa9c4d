"""Reports people can look at: one self-contained HTML page about one or more runs."""

from dgmkit.reporting.page import (
    NOT_DRAWN,
    RunPage,
    curves_left_out,
    curves_png,
    logged_epoch,
    metric_keys,
    metric_series,
    render_page,
)

__all__ = [
    "RunPage",
    "NOT_DRAWN",
    "render_page",
    "curves_png",
    "curves_left_out",
    "metric_series",
    "metric_keys",
    "logged_epoch",
]
