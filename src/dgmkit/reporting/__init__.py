"""Reports people can look at: one self-contained HTML page about one or more runs."""

from dgmkit.reporting.page import RunPage, curves_png, logged_epoch, metric_keys, metric_series, render_page

__all__ = ["RunPage", "render_page", "curves_png", "metric_series", "metric_keys", "logged_epoch"]
