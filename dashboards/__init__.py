"""Dashboards as code: Grafana boards generated from Python, provisioning, Prometheus example."""
