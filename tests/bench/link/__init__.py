"""A latency link: a userspace TCP relay that holds each chunk for a fixed delay each way."""
