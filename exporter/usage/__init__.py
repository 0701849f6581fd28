"""Organisation usage and real spend, from OpenAI's admin Usage, Costs and Projects APIs.

One job per module: ``kinds`` (the Usage API's vocabulary: plain data the settings read),
``client`` (GET /organization/* with the admin key, bounded paging), ``marks`` (the
counting model: high-water marks per bucket), ``store`` (marks in memory or SQLite),
``metrics`` (the Prometheus families), ``poller`` (the timer and one poll round) and
``setup`` (building it from the settings). docs/usage.md explains the counting model.

This package imports nothing here, so ``exporter.settings`` can read ``kinds`` without
pulling in the poller.
"""
