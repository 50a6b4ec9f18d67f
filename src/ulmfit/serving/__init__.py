"""Serving a model folder over HTTP: the app (`app`), dynamic batching (`batcher`), Prometheus text
(`metrics`). The top layer, beside cli: it imports recipes and below; nothing imports it."""
