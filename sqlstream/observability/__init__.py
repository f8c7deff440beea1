"""Observability of a running pipeline: the Prometheus collector (:mod:`.metrics`), the
HTTP endpoint with ``/metrics``, ``/live``, ``/ready`` and the web console
(:mod:`.server`, :mod:`.pipeline_view`, ``console/``), and EXPLAIN ANALYZE
(:mod:`.analyze`). See ``docs/observability.md``."""
