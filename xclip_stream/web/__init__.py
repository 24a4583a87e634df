"""The pipeline's own HTTP server, in the driver: health endpoints, the driver's metrics, the live page."""
