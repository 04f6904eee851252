#!/usr/bin/env python3
"""Structural check of config.yaml, for want of an otelcol-contrib binary
in the test environment (it is published only as a GitHub release).

`otelcol-contrib validate --config config.yaml` is the real check; this one
catches what a review misses: a pipeline naming an undefined component, a
defined component no pipeline uses, and the settings benchtel depends on
(OTLP on 4317 and 4318, bench labels on the Prometheus exporter's series,
memory_limiter first). Exits 1 with every problem listed.
"""

import sys

import yaml

KINDS = ("receivers", "processors", "exporters", "connectors")


def problems(cfg):
    found = []
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        found.append("service.pipelines is empty")
    used = {kind: set() for kind in KINDS}
    for name, pipe in pipelines.items():
        signal = name.split("/")[0]
        if signal not in ("metrics", "logs", "traces"):
            found.append(f"pipeline {name}: unknown signal {signal}")
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind) or []:
                used[kind].add(comp)
                if comp not in (cfg.get(kind) or {}):
                    found.append(f"pipeline {name}: {kind[:-1]} {comp} is not defined")
        if not pipe.get("receivers") or not pipe.get("exporters"):
            found.append(f"pipeline {name}: needs receivers and exporters")
        procs = pipe.get("processors") or []
        if "memory_limiter" in (cfg.get("processors") or {}) and procs[:1] != ["memory_limiter"]:
            found.append(f"pipeline {name}: memory_limiter must come first")
    for kind in ("receivers", "processors", "exporters"):
        for comp in cfg.get(kind) or {}:
            if comp not in used[kind]:
                found.append(f"{kind[:-1]} {comp} is defined but no pipeline uses it")
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            found.append(f"service.extensions: {ext} is not defined")

    otlp = ((cfg.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    for proto, port in (("grpc", "4317"), ("http", "4318")):
        endpoint = str((otlp.get(proto) or {}).get("endpoint", ""))
        if not endpoint.endswith(":" + port):
            found.append(f"receivers.otlp.protocols.{proto}.endpoint should end with :{port}, is {endpoint!r}")

    metric_exporters = set()
    for name, pipe in pipelines.items():
        if name.split("/")[0] == "metrics":
            metric_exporters.update(pipe.get("exporters") or [])
    for exp in metric_exporters:
        if exp.split("/")[0] in ("prometheus", "prometheusremotewrite"):
            conv = ((cfg["exporters"][exp] or {}).get("resource_to_telemetry_conversion") or {})
            if conv.get("enabled") is not True:
                found.append(
                    f"exporters.{exp}.resource_to_telemetry_conversion.enabled must be true "
                    "(bench.id and bench.site become the bench_id and bench_site labels)"
                )
    if not any(e.split("/")[0] in ("prometheus", "prometheusremotewrite") for e in metric_exporters):
        found.append("no metrics pipeline exports to Prometheus")
    return found


def main(path):
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    found = problems(cfg)
    for p in found:
        print(f"{path}: {p}", file=sys.stderr)
    if found:
        return 1
    print(f"{path}: {len(cfg['service']['pipelines'])} pipelines, components consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "config.yaml"))
