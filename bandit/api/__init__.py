"""The HTTP layer: the application, its routes, the OpenAPI document, API keys, origins,
metrics and the dashboard."""
